"""A run's events are stamped in order even when the engine's clock goes backwards."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from flowweaver.domain.run import new_state
from flowweaver.engine.stamps import stamp_time
from flowweaver.handlers import HandlerRegistry
from flowweaver.travel import event_time

from .conftest import EngineFactory

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class BackwardsClock:
    """A clock that steps back a quarter of a second on every other read (NTP stepping it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0
        self.went_back = 0
        self._last: datetime | None = None

    def now(self) -> datetime:
        with self._lock:
            self.reads += 1
            now = datetime.now(UTC) - timedelta(seconds=0.25 * (self.reads % 2))
            if self._last is not None and now < self._last:
                self.went_back += 1
            self._last = now
            return now


def test_stamp_time_never_goes_before_the_last_event() -> None:
    """The stamp is the clock's time unless the run's last event is later."""

    class Fixed:
        def now(self) -> datetime:
            return T0

    assert stamp_time(Fixed(), None) == T0
    state = new_state("r")
    state.updated_at = T0 + timedelta(seconds=1)
    assert stamp_time(Fixed(), state) == T0 + timedelta(seconds=1)
    state.updated_at = T0 - timedelta(hours=1)
    assert stamp_time(Fixed(), state) == T0


def test_engine_run_timestamps_never_decrease_with_a_clock_going_backwards(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """Every event of a run with retries is stamped at or after the one before it."""
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(inputs: dict[str, object], context: object) -> dict[str, object]:
        with lock:
            seen = attempts[str(inputs["n"])] = attempts.get(str(inputs["n"]), 0) + 1
        if seen < 3:
            raise RuntimeError("not yet")
        return {"n": inputs["n"]}

    registry.register("flaky", flaky)
    clock = BackwardsClock()
    engine = make_engine(clock=clock)
    engine.register_workflow(
        {
            "id": "backwards",
            "tasks": [
                {
                    "id": f"t{i}",
                    "handler": "flaky",
                    "inputs": {"n": i},
                    "dependencies": [f"t{i - 1}"] if i % 2 else [],
                    "retry": {"maxAttempts": 3, "initialDelay": 0},
                }
                for i in range(4)
            ],
        }
    )
    handle = engine.start_run("backwards")
    final = engine.wait_run_finished(handle.run_id, timeout=30)
    assert final.status == "completed"
    stamps = [event_time(rec) for rec in engine.store.read_run(handle.run_id)]
    assert len(stamps) == final.version > 20
    assert clock.went_back > 3  # the clock did go backwards while the run was decided
    assert stamps == sorted(stamps)
