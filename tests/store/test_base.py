"""Behaviour of the shared recorder-based store that the suite cannot pin down by itself."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from flowweaver.ports import Append
from flowweaver.store import MemoryEventStore
from flowweaver.testing.store_suite import WAIT, marker_event, new_run_id


class AppendWhileLooking(MemoryEventStore):
    """A store where another thread appends right after wait_for_log reads the position."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def max_position(self) -> int:
        top = super().max_position()
        if self.armed:
            self.armed = False
            with ThreadPoolExecutor(1) as pool:
                pool.submit(self.append_one).result(timeout=WAIT)
        return top

    def append_one(self) -> None:
        self.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])


def test_an_append_between_looking_and_waiting_still_wakes_the_waiter() -> None:
    """wait_for_log does not miss an append that lands after it looked and before it waits."""
    store = AppendWhileLooking()
    # Polling would hide a lost wake-up; make it slower than the test may take.
    store.poll_interval = 10 * WAIT
    store.armed = True
    finished = threading.Event()

    def wait() -> bool:
        try:
            return store.wait_for_log(0, timeout=10 * WAIT)
        finally:
            finished.set()

    with ThreadPoolExecutor(1) as pool:
        woken = pool.submit(wait)
        try:
            assert finished.wait(WAIT), "the waiter slept through the append"
        finally:
            store.close()  # frees a waiter that missed it, so a failure does not hang
        assert woken.result() is True


def test_close_wakes_waiters_with_false() -> None:
    """Closing the store ends a wait_for_log in progress with False."""
    store = MemoryEventStore()
    store.poll_interval = 10 * WAIT
    waiting = threading.Event()

    def wait() -> bool:
        waiting.set()
        return store.wait_for_log(0, timeout=10 * WAIT)

    with ThreadPoolExecutor(1) as pool:
        woken = pool.submit(wait)
        assert waiting.wait(WAIT)
        store.close()
        assert woken.result(timeout=WAIT) is False


def test_a_closed_store_answers_false_even_with_events_past_after() -> None:
    """wait_for_log on a closed store is False at once, whatever the log holds."""
    store = MemoryEventStore()
    store.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
    store.close()
    assert store.wait_for_log(0, timeout=WAIT) is False
