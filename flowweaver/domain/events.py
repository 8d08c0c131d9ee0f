"""The run's domain events: past-tense facts, frozen, each with its timestamp.

The JSON of an event (camelCase, ``type`` first) is both what the store keeps and the
body of the REST and SSE answers, so the shape here is part of the contract.

Stored events outlive the code: each type has a ``schema_version``, recorded with every stored
event. Change a type's JSON in a way old JSON no longer decodes to (a field renamed, removed or
made required, a value's meaning changed) and its version goes up by one, with an upcaster from
the old version in :mod:`flowweaver.store.codec`; docs/concepts.md ("Event schema versions")
has the rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

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

    schema_version: ClassVar[int] = 1
    """The version of this type's stored JSON; 1 is the shape first stored."""

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
EVENT_SCHEMA_VERSIONS: dict[str, int] = {t.__name__: t.schema_version for t in RUN_EVENT_TYPES}
"""The current schema version of each run event type, by name."""
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
