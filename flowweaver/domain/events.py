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

from flowweaver.domain.spec import OnTaskFailure, WorkflowSpec


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What went wrong in an attempt, and whether another attempt can help."""

    type: str
    message: str
    retryable: bool = True
    traceback: str | None = None
    """The handler's frames as Python prints them (at most MAX_TRACEBACK_BYTES), when it raised."""


class LogLine(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One line a handler logged through ``context.log`` during an attempt."""

    timestamp: datetime
    level: str
    message: str
    fields: dict[str, Any] = {}


class RunSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Counts by task status at the end of a run, and the tasks that failed."""

    counts: dict[str, int]
    failed_tasks: tuple[str, ...] = ()


class Event(msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type", tag=True):
    """Base of every run event."""

    schema_version: ClassVar[int] = 1
    """The version of this type's stored JSON; 1 is the shape first stored."""

    timestamp: datetime


class ParentTask(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The task of another run that started this run as a sub-workflow (see ChildRunStarted).

    ``depth`` is 1 for a child of a top-level run, 2 for a grandchild, and so on.
    """

    run_id: str
    task_id: str
    attempt: int
    depth: int = 1


class RunStarted(Event, frozen=True, kw_only=True):
    """A run was accepted, with its definition pinned and its parameters."""

    workflow_id: str
    workflow_version: int
    definition: WorkflowSpec
    parameters: dict[str, Any] = {}
    idempotency_key: str | None = None
    request_hash: str = ""
    submitted_by: str | None = None
    on_task_failure: OnTaskFailure | None = None
    """Set by the run request: overrides the workflow's ``onTaskFailure``."""
    priority: int = 0
    """Higher first: among queued runs of a workflow, and for free workers among ready tasks."""
    parent: ParentTask | None = None
    """Set for a sub-workflow run: the run and task that started it."""
    traceparent: str | None = None
    """The W3C ``traceparent`` the run was started under: its trace spans' parent."""


class RunForked(Event, frozen=True, kw_only=True):
    """A run was started from a version of another run, its first event instead of RunStarted.

    ``carried`` holds the output of every task that does not run again; every other task of
    ``definition`` starts pending. The event holds all the fork needs, so it replays alone.
    """

    parent_run_id: str
    parent_version: int
    workflow_id: str
    workflow_version: int
    definition: WorkflowSpec
    parameters: dict[str, Any] = {}
    carried: dict[str, Any] = {}
    reset: tuple[str, ...] = ()
    by: str = "anonymous"
    reason: str = ""
    idempotency_key: str | None = None
    request_hash: str = ""
    on_task_failure: OnTaskFailure | None = None


class RunQueued(Event, frozen=True, kw_only=True):
    """The workflow's concurrency limit was reached: the run waits for a slot, no task runs.

    ``concurrency_key`` is the canonical JSON of the key's value in the run's parameters (None
    when the workflow's limit has no key); queued runs begin by ``priority``, then in order.
    """

    priority: int = 0
    concurrency_key: str | None = None


class RunDequeued(Event, frozen=True, kw_only=True):
    """A slot of the concurrency limit came free: the queued run begins."""


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


class ChildRunStarted(Event, frozen=True, kw_only=True):
    """A sub-workflow task's child run was started (its RunStarted is stored): the task runs
    until the child ends, and the child's published outputs are its result."""

    task_id: str
    attempt: int
    child_run_id: str
    workflow_id: str
    workflow_version: int


class TaskCompleted(Event, frozen=True, kw_only=True):
    """The handler returned; ``output`` is what the task publishes downstream."""

    task_id: str
    attempt: int
    output: Any = None
    duration_ms: float = 0.0
    logs: tuple[LogLine, ...] = ()
    by: str | None = None
    """Set when an operator completed the task by hand (attempt 0), with ``reason``."""
    reason: str | None = None


class TaskFailed(Event, frozen=True, kw_only=True):
    """The handler raised or timed out; ``retry_at`` is None when no retry is left."""

    task_id: str
    attempt: int
    error: ErrorInfo
    retry_at: datetime | None = None
    logs: tuple[LogLine, ...] = ()


class TaskRetried(Event, frozen=True, kw_only=True):
    """The retry delay elapsed, or an operator (``by``) asked, and a new attempt began."""

    task_id: str
    attempt: int
    by: str | None = None
    reason: str | None = None


class TaskSkipped(Event, frozen=True, kw_only=True):
    """An upstream task failed for good or was skipped, or an operator (``by``) skipped it."""

    task_id: str
    reason: str
    by: str | None = None


class SignalReceived(Event, frozen=True, kw_only=True):
    """Someone (``by``) sent the run the signal ``name``; a task waiting for it completes
    with ``payload`` (at once, or when it is reached: see domain/signals.py)."""

    name: str
    payload: Any = None
    by: str = "anonymous"


class MapElementStarted(Event, frozen=True, kw_only=True):
    """A worker began one element of a map task (attempt 1 of every element is scheduled by
    the task's TaskScheduled; later ones by MapElementRetried)."""

    task_id: str
    index: int
    attempt: int
    worker: str


class MapElementCompleted(Event, frozen=True, kw_only=True):
    """The handler returned for one element; ``result`` is its place in the task's list."""

    task_id: str
    index: int
    attempt: int
    result: Any = None
    duration_ms: float = 0.0
    logs: tuple[LogLine, ...] = ()


class MapElementFailed(Event, frozen=True, kw_only=True):
    """One element's attempt failed; ``retry_at`` is None when that element has no retry left."""

    task_id: str
    index: int
    attempt: int
    error: ErrorInfo
    retry_at: datetime | None = None
    logs: tuple[LogLine, ...] = ()


class MapElementRetried(Event, frozen=True, kw_only=True):
    """The retry delay of one element elapsed and its next attempt began."""

    task_id: str
    index: int
    attempt: int


class RunCancelRequested(Event, frozen=True, kw_only=True):
    """Someone (``by``) asked the run to stop."""

    reason: str = ""
    by: str | None = None


class RunPaused(Event, frozen=True, kw_only=True):
    """Nothing new starts until RunResumed; ``by`` is ``engine`` when a task failure paused it."""

    by: str = "anonymous"
    reason: str = ""


class RunResumed(Event, frozen=True, kw_only=True):
    """A paused run goes on."""

    by: str = "anonymous"
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
    | RunForked
    | RunQueued
    | RunDequeued
    | TaskScheduled
    | TaskStarted
    | ChildRunStarted
    | TaskCompleted
    | TaskFailed
    | TaskRetried
    | TaskSkipped
    | SignalReceived
    | MapElementStarted
    | MapElementCompleted
    | MapElementFailed
    | MapElementRetried
    | RunCancelRequested
    | RunPaused
    | RunResumed
    | RunCancelled
    | RunCompleted
    | RunFailed
)

RUN_EVENT_TYPES: tuple[type[Event], ...] = (
    RunStarted,
    RunForked,
    RunQueued,
    RunDequeued,
    TaskScheduled,
    TaskStarted,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskSkipped,
    SignalReceived,
    MapElementStarted,
    MapElementCompleted,
    MapElementFailed,
    MapElementRetried,
    RunCancelRequested,
    RunPaused,
    RunResumed,
    RunCancelled,
    RunCompleted,
    RunFailed,
    ChildRunStarted,
)
RUN_EVENT_NAMES: tuple[str, ...] = tuple(t.__name__ for t in RUN_EVENT_TYPES)
EVENT_SCHEMA_VERSIONS: dict[str, int] = {t.__name__: t.schema_version for t in RUN_EVENT_TYPES}
"""The current schema version of each run event type, by name."""
TERMINAL_EVENT_NAMES = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})

RunStatus = Literal["pending", "queued", "running", "paused", "completed", "failed", "cancelled"]
TaskStatus = Literal[
    "pending",
    "scheduled",
    "running",
    "waiting",
    "waiting_retry",
    "completed",
    "failed",
    "skipped",
    "cancelled",
]
RUN_STATUSES: tuple[RunStatus, ...] = (
    "pending",
    "queued",
    "running",
    "paused",
    "completed",
    "failed",
    "cancelled",
)
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
TERMINAL_TASK_STATUSES: frozenset[str] = frozenset({"completed", "failed", "skipped", "cancelled"})
FIRST_EVENT_NAMES = frozenset({"RunStarted", "RunForked"})
"""The events a run can begin with."""
ENGINE_PRINCIPAL = "engine"
"""``by`` of the events the engine decides on its own (a pause on a task failure)."""
MAX_TRACEBACK_BYTES = 16 * 1024
MAX_LOG_LINES = 100
MAX_LOG_BYTES = 64 * 1024
INTERRUPTED = "Interrupted"
TIMEOUT = "Timeout"
SIGNAL_TIMEOUT = "SignalTimeout"
"""The error type of a ``wait`` task whose signal did not come in time."""


def event_name(event: Event) -> str:
    """Return the event's type name, which is also its tag in JSON."""
    return type(event).__name__
