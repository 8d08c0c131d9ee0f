"""Concurrency limits and run priorities: the decisions, pure.

A workflow with ``concurrency: {limit, key?}`` lets at most ``limit`` runs be under way at once
(per value of ``key`` in the run's parameters). Whether a new run takes a slot, and which queued
run takes a slot that came free, is decided by the engine (:mod:`flowweaver.engine.admission`)
under a lock every node shares; the events those decisions make are decided here.

A queued run has its RunStarted (definition, parameters, priority) and then RunQueued; none of
its tasks is scheduled. RunDequeued begins it: what is ready is scheduled as RunStarted would
have. A queued run can be cancelled; it never held a slot, so its end frees none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from flowweaver.domain.events import RunDequeued, RunEvent, RunQueued, RunStarted
from flowweaver.domain.run import (
    DEFAULT_MAX_TASK_IO_BYTES,
    Decision,
    RunState,
    new_state,
    settle,
)

MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000
UNDER_WAY = ("running", "paused")
"""Statuses of runs that hold a slot of their workflow's limit."""


def queue_run(run_id: str, first: RunStarted) -> tuple[RunState, list[RunEvent]]:
    """Decide a run that waits for a slot: its RunStarted, then RunQueued; nothing is scheduled."""
    state = new_state(run_id)
    d = Decision(state)
    d.emit(first)
    d.emit(
        RunQueued(
            timestamp=first.timestamp,
            priority=first.priority,
            concurrency_key=state.concurrency_key,
        )
    )
    return state, d.events


def dequeue_run(
    state: RunState, now: datetime, *, max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES
) -> list[RunEvent]:
    """Decide RunDequeued and what the run's start owes (TaskScheduled for what is ready),
    or nothing when the run is not queued (it began or was cancelled meanwhile)."""
    if not state.is_queued or state.cancel_requested:
        return []
    d = Decision(state)
    d.emit(RunDequeued(timestamp=now))
    d.events += settle(state, now, max_io_bytes=max_io_bytes)
    return d.events


class Waiting(msgspec.Struct, frozen=True):
    """A queued run as the admission order sees it."""

    run_id: str
    priority: int
    sequence: int
    """Submission order: the run list's sequence (lower is older)."""


def admission_order(waiting: Iterable[Waiting]) -> list[Waiting]:
    """Return queued runs in the order they begin: higher priority first, then older first."""
    return sorted(waiting, key=lambda w: (-w.priority, w.sequence))


def free_slots(limit: int, under_way: int) -> int:
    """Return how many more runs may begin now."""
    return max(0, limit - under_way)
