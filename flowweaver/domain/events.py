"""The run's domain events: past-tense facts, frozen, each with its timestamp.

The JSON of an event (camelCase, ``type`` first) is both what the store keeps and the
body of the REST and SSE answers, so the shape here is part of the contract.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from flowweaver.domain.spec import WorkflowSpec


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What went wrong in an attempt, and whether another attempt can help."""

    type: str
    message: str
    retryable: bool = True


class RunSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Counts by task status at the end of a run, and the tasks that failed."""

    counts: dict[str, int]
    failed_tasks: tuple[str, ...] = ()


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type", tag=True):
    """Base of every run event."""

    timestamp: datetime


class RunStarted(Event, frozen=True, kw_only=True):
    """A run was accepted, with its definition pinned and its parameters."""

    workflow_id: str
    workflow_version: int
    definition: WorkflowSpec
    parameters: dict[str, Any] = {}
    idempotency_key: str | None = None
    request_hash: str = ""
    submitted_by: str | None = None


class TaskScheduled(Event, frozen=True, kw_only=True):
    """A task's dependencies were satisfied and it was handed to the pool."""

    task_id: str
    attempt: int
    inputs: dict[str, Any] = {}


class TaskStarted(Event, frozen=True, kw_only=True):
    """A worker began the task's handler."""

    task_id: str
    attempt: int
    worker: str


class TaskCompleted(Event, frozen=True, kw_only=True):
    """The handler returned; ``output`` is what the task publishes downstream."""

    task_id: str
    attempt: int
    output: Any = None
    duration_ms: float = 0.0


class TaskFailed(Event, frozen=True, kw_only=True):
    """The handler raised or timed out; ``retry_at`` is None when no retry is left."""

    task_id: str
    attempt: int
    error: ErrorInfo
    retry_at: datetime | None = None


class TaskRetried(Event, frozen=True, kw_only=True):
    """The retry delay elapsed and a new attempt began."""

    task_id: str
    attempt: int


class TaskSkipped(Event, frozen=True, kw_only=True):
    """An upstream task failed for good, so this one will never run."""

    task_id: str
    reason: str


class RunCancelRequested(Event, frozen=True, kw_only=True):
    """Someone asked the run to stop."""

    reason: str = ""


class RunCancelled(Event, frozen=True, kw_only=True):
    """The run stopped after a cancel request; nothing of it runs any more."""

    reason: str = ""


class RunCompleted(Event, frozen=True, kw_only=True):
    """Every task completed."""

    summary: RunSummary


class RunFailed(Event, frozen=True, kw_only=True):
    """At least one task failed for good and everything else finished or was skipped."""

    summary: RunSummary


RunEvent = (
    RunStarted
    | TaskScheduled
    | TaskStarted
    | TaskCompleted
    | TaskFailed
    | TaskRetried
    | TaskSkipped
    | RunCancelRequested
    | RunCancelled
    | RunCompleted
    | RunFailed
)

RUN_EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    TaskScheduled,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskSkipped,
    RunCancelRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
)
RUN_EVENT_NAMES: tuple[str, ...] = tuple(t.__name__ for t in RUN_EVENT_TYPES)
TERMINAL_EVENT_NAMES = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})

RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
TaskStatus = Literal[
    "pending",
    "scheduled",
    "running",
    "waiting_retry",
    "completed",
    "failed",
    "skipped",
    "cancelled",
]
RUN_STATUSES: tuple[RunStatus, ...] = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
TERMINAL_TASK_STATUSES: frozenset[str] = frozenset({"completed", "failed", "skipped", "cancelled"})
INTERRUPTED = "Interrupted"
TIMEOUT = "Timeout"


def event_name(event: Event) -> str:
    """Return the event's type name, which is also its tag in JSON."""
    return type(event).__name__
