"""Wire types of the HTTP API: what requests carry and answers return, camelCase JSON.

These are not the domain's types: the domain may grow fields without changing the wire, and
the wire may rename without touching the log. The workflow document is the one exception: its
shape is the contract itself (DESIGN.md), so :class:`WorkflowSpec` is decoded as it is.
Decoders are built once, here, at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec

from flowweaver.domain.concurrency import MAX_PRIORITY, MIN_PRIORITY
from flowweaver.domain.events import RunStatus, TaskStatus
from flowweaver.domain.mapping import progress_counts
from flowweaver.domain.run import RunState
from flowweaver.domain.spec import (
    MAX_TASKS,
    Ident,
    OnTaskFailure,
    WorkflowSpec,
    field_error_from_msgspec,
)
from flowweaver.domain.workflow import WorkflowRegistered
from flowweaver.engine.lineage import Lineage
from flowweaver.engine.operator import MAX_REASON_CHARS
from flowweaver.errors import FieldError, ValidationError
from flowweaver.ports import RunPage

if TYPE_CHECKING:
    pass

MAX_KEY_LENGTH = 256
MAX_VERSION = 2**31
"""The highest workflow version a request may name (as ``?version=`` on GET /workflows/{id})."""

MAX_PAGE = 1000
"""The most items one page of a list or history holds (``?limit=``)."""
MAX_OFFSET = 2**63 - 1
"""The highest run version or log position a query may name: a signed 64-bit column."""

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LENGTH)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
PageLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]


class _Wire(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of every wire type: camelCase, keyword-only."""


# --- requests ---------------------------------------------------------------------------------


class RunRequest(_Wire, forbid_unknown_fields=True):
    """POST /runs: start a run of a workflow (its latest version unless ``version`` is set)."""

    workflow_id: Ident
    idempotency_key: IdempotencyKey | None = None
    parameters: dict[str, Any] | None = None
    version: Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)] | None = None
    on_task_failure: OnTaskFailure | None = None
    """``pause``: a task that fails for good pauses the run for an operator instead of failing
    it; overrides the workflow's ``onTaskFailure`` (default ``fail``)."""
    priority: Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    """Higher first: among the queued runs of a workflow with a concurrency limit, and for
    free workers among ready tasks of all runs."""


Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]


class ForkRequest(_Wire, forbid_unknown_fields=True):
    """POST /runs/{id}/fork: every field optional; no body reruns from the point of failure.

    ``atVersion`` defaults to the run's last event, ``reset`` to every task not completed as
    of it; ``parameters`` replace the parent's; ``outputs`` override carried tasks' outputs.
    """

    at_version: Annotated[int, msgspec.Meta(ge=1, le=MAX_OFFSET)] | None = None
    reset: Annotated[list[Ident], msgspec.Meta(max_length=MAX_TASKS)] | None = None
    parameters: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    idempotency_key: IdempotencyKey | None = None
    on_task_failure: OnTaskFailure | None = None


class ActionRequest(_Wire, forbid_unknown_fields=True):
    """POST /runs/{id}/pause, resume, cancel, and tasks/{taskId}/retry, skip: why (optional)."""

    reason: Reason = ""


class CompleteTaskRequest(_Wire, forbid_unknown_fields=True):
    """POST /runs/{id}/tasks/{taskId}/complete: the task's published output, and why."""

    output: Any
    reason: Reason = ""


class SignalRequest(_Wire, forbid_unknown_fields=True):
    """POST /runs/{id}/signals/{name}: the payload, the waiting task's result (optional)."""

    payload: Any = None


# --- query strings (each decoded by decode_query; unknown parameters are ignored) ----------


class WorkflowQuery(_Wire):
    """GET /workflows/{id}: one version instead of the latest."""

    version: Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION)] | None = None


class RunListQuery(_Wire):
    """GET /runs: filters, page size and the cursor of the page before."""

    workflow_id: str | None = None
    status: RunStatus | None = None
    limit: PageLimit = 50
    cursor: str | None = None
    submitted_by: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    """Only runs this principal started or forked (a token's name, or ``anonymous``)."""


class RunStateQuery(_Wire):
    """GET /runs/{id}: the state as of event ``at``, or as of instant ``asOf``, not the latest."""

    at: Annotated[int, msgspec.Meta(ge=1, le=MAX_OFFSET)] | None = None
    as_of: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    """An RFC 3339 instant: the state after the run's last event stamped at or before it."""


class LineageQuery(_Wire):
    """GET /runs/{id}/lineage: the page of children (newest first)."""

    limit: PageLimit = 100
    cursor: str | None = None


class HistoryQuery(_Wire):
    """GET /runs/{id}/events as JSON: a page of events after version ``after``."""

    after: Offset = 0
    limit: PageLimit = 100


class DiffQuery(_Wire):
    """GET /runs/{id}/diff: the two versions to compare (``from`` 0 is before the first event)."""

    from_: Offset | None = msgspec.field(default=None, name="from")
    to: Offset | None = None


# --- answers ----------------------------------------------------------------------------------


class WorkflowCreated(_Wire):
    """The answer to POST /workflows."""

    id: str
    version: int


class WorkflowOut(_Wire):
    """One version of a workflow definition."""

    id: str
    version: int
    registered_at: datetime
    definition: WorkflowSpec


class WorkflowList(_Wire):
    """The latest version of every workflow."""

    workflows: list[WorkflowOut]


class ErrorOut(_Wire):
    """What went wrong in a task's latest failed attempt."""

    type: str
    message: str
    retryable: bool
    traceback: str | None
    """The handler's frames as Python prints them (at most 16 KiB), when it raised."""


class LogLineOut(_Wire):
    """One line a handler logged through ``context.log`` during an attempt."""

    timestamp: datetime
    level: str
    message: str
    fields: dict[str, Any]


class ElementsOut(_Wire):
    """A map task's elements by status: counts, so 10,000 elements stay a small answer."""

    total: int
    completed: int
    failed: int
    running: int
    waiting_retry: int
    cancelled: int


class TaskOut(_Wire, omit_defaults=True):
    """Where one task of a run stands."""

    id: str
    status: TaskStatus
    attempts: int
    last_error: ErrorOut | None
    output: Any
    scheduled_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    retry_at: datetime | None
    logs: list[LogLineOut]
    """What the handler logged in the task's latest attempt that has an outcome."""
    child_run_id: str | None = None
    """A sub-workflow task: the child run of its latest attempt (null before it starts)."""
    elements: ElementsOut | None = None
    """A map task's progress (docs/concepts.md, "Map"); absent for other tasks and before the
    task is scheduled."""


class SummaryOut(_Wire):
    """Counts by task status at the end of a run, and the tasks that failed."""

    counts: dict[str, int]
    failed_tasks: list[str]


class RunOut(_Wire):
    """A run's state as folded from its events, as of ``version``."""

    id: str
    workflow_id: str
    workflow_version: int
    status: RunStatus
    tasks: list[TaskOut]
    created_at: datetime | None
    updated_at: datetime | None
    version: int
    parameters: dict[str, Any]
    idempotency_key: str | None
    cancel_requested: bool
    summary: SummaryOut | None
    parent_run_id: str | None = None
    """The run this one was forked from, or whose sub-workflow task started it; null for a
    run that was started by a request."""
    parent_version: int | None = None
    """The parent's version the fork was taken at (null for a sub-workflow's child run)."""
    parent_task_id: str | None = None
    """A sub-workflow's child run: the parent's task that started it."""
    submitted_by: str | None = None
    """Who started (or forked) the run; ``anonymous`` without auth, null for older runs."""
    on_task_failure: OnTaskFailure = "fail"
    """What a task failing for good does: fail the run, or pause it for an operator."""
    paused_by: str | None = None
    """Who paused the run (``engine`` for a task failure), while it is paused."""
    pause_reason: str | None = None
    cancel_by: str | None = None
    """Who asked the run to stop."""
    cancel_reason: str | None = None
    priority: int = 0
    """The run's priority (POST /runs): higher first, for queued runs and for workers."""
    concurrency_key: str | None = None
    """The value (as JSON) the workflow's keyed concurrency limit counts this run under."""
    signals: dict[str, Any] = {}
    """The payload of each signal the run received, by name (kept for wait tasks)."""


class RunListItem(_Wire):
    """One run in the run list."""

    id: str
    workflow_id: str
    workflow_version: int
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    parent_run_id: str | None = None
    parent_version: int | None = None
    submitted_by: str | None = None
    """Who started (or forked) the run: a token's name, ``anonymous`` without auth."""


class RunList(_Wire):
    """A page of runs, newest first; pass ``nextCursor`` as ``cursor`` for the next page."""

    runs: list[RunListItem]
    next_cursor: str | None


class ParentOut(_Wire, omit_defaults=True):
    """The run a fork was taken from and the parent's version it was taken at; for a
    sub-workflow's child run, the parent's task that started it (and no version)."""

    run_id: str
    at_version: int | None
    task_id: str | None = None
    """Only for a sub-workflow's child run: the parent's task that started it."""


class ChildOut(_Wire):
    """A run forked from this one, or started by one of its sub-workflow tasks."""

    run_id: str
    at_version: int | None
    """The version the fork was taken at; null for a sub-workflow's child run."""
    created_at: datetime
    status: RunStatus


class LineageOut(_Wire):
    """A run's parent (null unless it is a fork) and its forks, newest first, paged."""

    run_id: str
    parent: ParentOut | None
    children: list[ChildOut]
    next_cursor: str | None


class Health(_Wire):
    """Liveness and readiness answers."""

    status: Literal["ok", "ready"]


# --- decoding and encoding --------------------------------------------------------------------

T = TypeVar("T")

workflow_decoder = msgspec.json.Decoder(WorkflowSpec)
run_request_decoder = msgspec.json.Decoder(RunRequest)
fork_request_decoder = msgspec.json.Decoder(ForkRequest)
action_request_decoder = msgspec.json.Decoder(ActionRequest)
complete_task_request_decoder = msgspec.json.Decoder(CompleteTaskRequest)
signal_request_decoder = msgspec.json.Decoder(SignalRequest)
encoder = msgspec.json.Encoder()


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a request body: malformed JSON is a 400, JSON of the wrong shape a 422.

    Raises:
        ApiError: the body is not JSON (400).
        ValidationError: the JSON breaks the type's rules; the error names the path.
    """
    from .errors import ApiError  # noqa: PLC0415 - aiohttp's server stays out of the client

    try:
        return decoder.decode(body)
    except msgspec.ValidationError as e:
        raise ValidationError([field_error_from_msgspec(e)]) from e
    except msgspec.DecodeError as e:
        raise ApiError(400, "malformed-json", f"the body is not valid JSON: {e}") from e
    except RecursionError as e:  # msgspec decodes on the C stack, bounded by Python's limit
        raise ApiError(400, "malformed-json", "the body's JSON is nested too deeply") from e


Q = TypeVar("Q", bound=_Wire)


def decode_query(query: Mapping[str, str], into: type[Q]) -> Q:
    """Decode a query string (the first value of each parameter) into ``into``.

    Raises:
        ApiError: a parameter is malformed or out of range (400, the error at ``$.query.NAME``).
    """
    from .errors import ApiError  # noqa: PLC0415 - aiohttp's server stays out of the client

    try:
        return msgspec.convert(dict(query), into, strict=False)
    except msgspec.ValidationError as e:
        error = field_error_from_msgspec(e)
        name = error.path.removeprefix("$.")
        message = error.message.replace(" | null", "")  # a query string cannot say null
        raise ApiError(
            400,
            "bad-request",
            f"query parameter {name}: {message}",
            errors=[FieldError(f"$.query.{name}", message)],
        ) from e


def workflow_out(registered: WorkflowRegistered) -> WorkflowOut:
    """Return the wire form of one registered workflow version."""
    return WorkflowOut(
        id=registered.workflow_id,
        version=registered.version,
        registered_at=registered.timestamp,
        definition=registered.definition,
    )


def run_out(state: RunState) -> RunOut:
    """Return the wire form of a run's state."""
    tasks = [
        TaskOut(
            id=t.id,
            status=t.status,
            attempts=t.attempts,
            last_error=(
                ErrorOut(
                    type=t.last_error.type,
                    message=t.last_error.message,
                    retryable=t.last_error.retryable,
                    traceback=t.last_error.traceback,
                )
                if t.last_error is not None
                else None
            ),
            output=t.output,
            scheduled_at=t.scheduled_at,
            started_at=t.started_at,
            completed_at=t.completed_at,
            retry_at=t.retry_at,
            logs=[
                LogLineOut(timestamp=x.timestamp, level=x.level, message=x.message, fields=x.fields)
                for x in t.logs
            ],
            child_run_id=t.child_run_id,
            elements=(None if t.elements is None else ElementsOut(**progress_counts(t.elements))),
        )
        for t in state.tasks.values()
    ]
    summary = (
        SummaryOut(counts=state.summary.counts, failed_tasks=list(state.summary.failed_tasks))
        if state.summary is not None
        else None
    )
    return RunOut(
        id=state.id,
        workflow_id=state.workflow_id,
        workflow_version=state.workflow_version,
        status=state.status,
        tasks=tasks,
        created_at=state.created_at,
        updated_at=state.updated_at,
        version=state.version,
        parameters=state.parameters,
        idempotency_key=state.idempotency_key,
        cancel_requested=state.cancel_requested,
        summary=summary,
        parent_run_id=state.parent_run_id,
        parent_version=state.parent_version,
        parent_task_id=state.parent_task_id,
        submitted_by=state.submitted_by,
        on_task_failure=state.on_task_failure,
        paused_by=state.paused_by,
        pause_reason=state.pause_reason,
        cancel_by=state.cancel_by,
        cancel_reason=state.cancel_reason,
        priority=state.priority,
        concurrency_key=state.concurrency_key,
        signals=state.signals,
    )


def run_list(page: RunPage) -> RunList:
    """Return the wire form of a page of runs."""
    return RunList(
        runs=[
            RunListItem(
                id=r.id,
                workflow_id=r.workflow_id,
                workflow_version=r.workflow_version,
                status=r.status,  # type: ignore[arg-type]  # the read model stores RunStatus values
                created_at=r.created_at,
                updated_at=r.updated_at,
                parent_run_id=r.parent_run_id,
                parent_version=r.parent_version,
                submitted_by=r.submitted_by,
            )
            for r in page.runs
        ],
        next_cursor=page.next_cursor,
    )


def lineage_out(lineage: Lineage) -> LineageOut:
    """Return the wire form of a run's lineage."""
    parent = lineage.parent
    return LineageOut(
        run_id=lineage.run_id,
        parent=(
            ParentOut(run_id=parent.run_id, at_version=parent.at_version, task_id=parent.task_id)
            if parent
            else None
        ),
        children=[
            ChildOut(
                run_id=c.id,
                at_version=c.parent_version,
                created_at=c.created_at,
                status=c.status,  # type: ignore[arg-type]  # the read model stores RunStatus values
            )
            for c in lineage.children
        ],
        next_cursor=lineage.next_cursor,
    )
