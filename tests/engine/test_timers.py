"""The engine's timer thread on its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from flowweaver.engine.timers import Timers


@pytest.fixture
def timers() -> Iterator[Timers]:
    """A timer thread, closed after the test."""
    t = Timers(name="test-timers")
    yield t
    t.close()


def test_callbacks_run_in_deadline_order(timers: Timers) -> None:
    """Callbacks fire by deadline, not by the order they were scheduled in."""
    fired: list[str] = []
    done = threading.Event()
    timers.call_later(0.06, lambda: (fired.append("late"), done.set()))
    timers.call_later(0.02, lambda: fired.append("early"))
    timers.call_later(-1, lambda: fired.append("now"))
    assert done.wait(5)
    assert fired == ["now", "early", "late"]


def test_a_cancelled_callback_never_runs(timers: Timers) -> None:
    """cancel() before the deadline keeps the callback from running."""
    fired: list[str] = []
    done = threading.Event()
    timers.call_later(0.02, lambda: fired.append("cancelled")).cancel()
    timers.call_later(0.04, done.set)
    assert done.wait(5)
    assert fired == []


def test_a_callback_that_raises_is_logged_and_the_next_still_runs(timers: Timers) -> None:
    """One bad callback is logged; the thread keeps serving the others."""
    done = threading.Event()

    def bad() -> None:
        raise RuntimeError("bad callback")

    with capture_logs() as logs:
        timers.call_later(0, bad)
        timers.call_later(0.01, done.set)
        assert done.wait(5)
    assert [e["event"] for e in logs] == ["timer_callback_failed"]


def test_close_stops_the_thread_and_drops_what_is_not_due() -> None:
    """After close() nothing more fires and the thread is gone."""
    timers = Timers(name="closing-timers")
    fired: list[str] = []
    timers.call_later(30, lambda: fired.append("never"))
    timers.close()
    assert not any(t.name == "closing-timers" for t in threading.enumerate())
    assert fired == []
