"""Map tasks: one attempt sequence per element of a list known only at run time.

A task with ``map: "$.items"`` selects a list with that JSONPath from its *resolved inputs*
(the ``inputs`` object its TaskScheduled records, so ``$.items`` is the task's input named
``items``). Its handler runs once per element, with the task's inputs plus ``item`` (the
element) and ``index`` (its position). Each element retries on its own, under the task's
retry policy; the task publishes the list of the element results in order.

Events. The task's TaskScheduled schedules attempt 1 of every element (no event per element:
scheduling 10,000 elements costs one event); then each element has MapElementStarted,
MapElementCompleted or MapElementFailed, and MapElementRetried before a later attempt. The
task's own TaskCompleted (its output, the list) or TaskFailed is decided with the outcome of
the last element, in the same append. Old logs hold none of these events: nothing of theirs
changes shape.

Failure. The first element that fails for good (its retries used up, or a non-retryable
error) ends the map: elements that have not started are cancelled, running ones finish and
are recorded, then the task fails with that element's error (Argo's ``failFast``; Airflow's
mapped instances would run on, but their results could never publish). A path that selects
something other than a list, or more than :data:`MAX_ELEMENTS` elements, fails the task with
a ``MapInputError`` that is not retried. An empty list completes the task with ``[]``.

Inside the engine an element travels under the key ``task_id[index]`` (a task id cannot
contain ``[``), so the worker pool, its messages and timers carry elements as they carry
tasks; the commands of :mod:`flowweaver.domain.run` hand such keys to this module. A
handler sees that key as ``context.task_id``, which makes its idempotency key per element.

The fold keeps counts per map task (completed, failed, running), so each element event is
O(1) and the task's end is found without a scan.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from flowweaver.domain.data import json_size, publish, select
from flowweaver.domain.events import (
    INTERRUPTED,
    ErrorInfo,
    LogLine,
    MapElementCompleted,
    MapElementFailed,
    MapElementRetried,
    MapElementStarted,
    RunEvent,
    TaskCompleted,
    TaskFailed,
    TaskStatus,
)
from flowweaver.errors import FieldError, TaskInputError

if TYPE_CHECKING:
    from flowweaver.domain.run import Decision, RunState, TaskState
    from flowweaver.domain.spec import TaskSpec

MAX_ELEMENTS = 10_000
"""Most elements one map task may run; a longer list fails the task (MapInputError)."""
MAP_INPUT_ERROR = "MapInputError"
RESERVED_INPUTS = ("item", "index")
"""Names the engine adds to an element's inputs; a map task's own inputs may not use them."""

MapElementEvent = MapElementStarted | MapElementCompleted | MapElementFailed | MapElementRetried
MAP_ELEMENT_EVENTS = (MapElementStarted, MapElementCompleted, MapElementFailed, MapElementRetried)


class ElementState(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Where one element stands; attempt 1 is scheduled with the task."""

    status: TaskStatus = "scheduled"
    attempts: int = 1
    interruptions: int = 0
    retry_at: datetime | None = None
    result: Any = None
    last_error: ErrorInfo | None = None


class MapProgress(msgspec.Struct, kw_only=True, rename="camel"):
    """The elements of one map task, and the counts that make each decision O(1)."""

    total: int
    completed: int = 0
    failed: int = 0
    running: int = 0
    first_failed: int | None = None
    """The element that failed for good first: the task fails with its error."""
    elements: list[ElementState] = []


# --- keys -------------------------------------------------------------------------------------


def element_key(task_id: str, index: int) -> str:
    """Return the key an element travels under in the engine: ``task_id[index]``."""
    return f"{task_id}[{index}]"


def split_key(key: str) -> tuple[str, int] | None:
    """Return (task id, index) for an element key, None for a plain task id."""
    if not key.endswith("]"):
        return None
    head, bracket, tail = key[:-1].rpartition("[")
    if not bracket or not tail.isdigit():
        return None
    return head, int(tail)


# --- registration -------------------------------------------------------------------------


def map_errors(task: TaskSpec, where: str) -> list[FieldError]:
    """Return what is wrong with a task's ``map`` at registration (``where`` is its path)."""
    from flowweaver.domain.data import path_error  # noqa: PLC0415 - spec imports this lazily

    path = task.map or ""
    errors: list[FieldError] = []
    if not path.startswith("$"):
        errors.append(
            FieldError(f"{where}.map", "must be a JSONPath into the task's inputs, like $.items")
        )
    elif (problem := path_error(path)) is not None:
        errors.append(FieldError(f"{where}.map", f"invalid JSONPath: {problem}"))
    errors.extend(
        FieldError(
            f"{where}.inputs.{name}",
            f"a map task's elements get {name!r} from the engine: rename this input",
        )
        for name in RESERVED_INPUTS
        if name in task.inputs
    )
    return errors


# --- run time: the list -------------------------------------------------------------------


def items_of(path: str, inputs: dict[str, Any]) -> tuple[list[Any] | None, str]:
    """Return the list ``path`` selects in ``inputs`` and "", or None and why it cannot map."""
    try:
        items = select(path, inputs)
    except TaskInputError as e:
        return None, f"map {path}: {e}"
    if not isinstance(items, list):
        kind = "an object" if isinstance(items, dict) else type(items).__name__
        if items is None:
            kind = "null"
        return None, f"map {path} selects {kind}, not a list"
    if len(items) > MAX_ELEMENTS:
        return None, (f"map {path} selects {len(items)} elements, over the limit of {MAX_ELEMENTS}")
    return items, ""


def element_inputs(inputs: dict[str, Any], items: Sequence[Any], index: int) -> dict[str, Any]:
    """Return what the handler gets for one element: the task's inputs, ``item``, ``index``."""
    return {**inputs, "item": items[index], "index": index}


def scheduled_elements(task: TaskState) -> list[int]:
    """Return the indexes of a map task's elements waiting for a worker."""
    progress = task.elements
    if progress is None or task.status not in ("scheduled", "running"):
        return []
    return [i for i, e in enumerate(progress.elements) if e.status == "scheduled"]


def waiting_elements(task: TaskState) -> list[tuple[int, ElementState]]:
    """Return the elements waiting for their retry delay."""
    progress = task.elements
    if progress is None or task.status != "running":
        return []
    return [(i, e) for i, e in enumerate(progress.elements) if e.status == "waiting_retry"]


# --- the fold -----------------------------------------------------------------------------


def on_scheduled(state: RunState, task: TaskState) -> None:
    """Fold TaskScheduled of a task: a map task expands into its elements (attempt 1 each)."""
    path = state.spec.task(task.id).map
    if path is None:
        return
    items, _ = items_of(path, task.inputs or {})
    task.elements = None if items is None else _progress(len(items))


def on_retried(state: RunState, task: TaskState) -> None:
    """Fold an operator's TaskRetried of a map task: every element not completed runs again."""
    path = state.spec.task(task.id).map
    if path is None:
        return
    progress = task.elements
    if progress is None:
        items, _ = items_of(path, task.inputs or {})
        task.elements = None if items is None else _progress(len(items))
        return
    for element in progress.elements:
        if element.status != "completed":
            element.status = "scheduled"
            element.attempts += 1
            element.retry_at = None
    progress.failed = 0
    progress.running = 0
    progress.first_failed = None


def _progress(total: int) -> MapProgress:
    return MapProgress(total=total, elements=[ElementState() for _ in range(total)])


def apply_element(state: RunState, event: MapElementEvent) -> None:
    """Fold one element event into its map task."""
    from flowweaver.domain.run import _move  # noqa: PLC0415 - run imports this module

    task = state.tasks[event.task_id]
    progress = task.elements
    assert progress is not None, f"element event for {event.task_id}, which does not map"
    element = progress.elements[event.index]
    if element.status == "running" and not isinstance(event, MapElementStarted):
        progress.running -= 1
    if isinstance(event, MapElementStarted):
        element.status = "running"
        element.attempts = event.attempt
        progress.running += 1
        if task.status == "scheduled":
            _move(state, task, "running")
            task.started_at = event.timestamp
            task.worker = event.worker
    elif isinstance(event, MapElementCompleted):
        element.status = "completed"
        element.result = event.result
        element.retry_at = None
        progress.completed += 1
    elif isinstance(event, MapElementFailed):
        element.last_error = event.error
        task.last_error = event.error
        task.logs = event.logs
        if event.error.type == INTERRUPTED:
            element.interruptions += 1
        if event.retry_at is None:
            element.status = "failed"
            element.retry_at = None
            progress.failed += 1
            if progress.first_failed is None:
                progress.first_failed = event.index
                _cancel_idle(progress)
        else:
            element.status = "waiting_retry"
            element.retry_at = event.retry_at
    else:
        element.status = "scheduled"
        element.attempts = event.attempt
        element.retry_at = None
    if state.cancel_requested and progress.running == 0 and task.status == "running":
        _move(state, task, "cancelled")
        task.completed_at = event.timestamp


def on_cancel_requested(state: RunState, now: datetime) -> None:
    """Fold RunCancelRequested for running map tasks: no element starts any more, and a map
    with no element running is cancelled at once (the others when their last one ends)."""
    from flowweaver.domain.run import _move  # noqa: PLC0415 - run imports this module

    for task in state.tasks.values():
        progress = task.elements
        if progress is None or task.status != "running":
            continue
        _cancel_idle(progress)
        if progress.running == 0:
            _move(state, task, "cancelled")
            task.completed_at = now


def _cancel_idle(progress: MapProgress) -> None:
    for element in progress.elements:
        if element.status in ("scheduled", "waiting_retry"):
            element.status = "cancelled"
            element.retry_at = None


# --- commands -----------------------------------------------------------------------------


def _element(state: RunState, task_id: str, index: int) -> tuple[TaskState, ElementState] | None:
    task = state.tasks.get(task_id)
    if task is None or task.elements is None or not 0 <= index < task.elements.total:
        return None
    return task, task.elements.elements[index]


def record_element_started(
    state: RunState, task_id: str, index: int, attempt: int, worker: str, now: datetime
) -> list[RunEvent]:
    """Decide MapElementStarted, or nothing when that attempt may not start."""
    from flowweaver.domain.run import Decision  # noqa: PLC0415 - run imports this module

    found = _element(state, task_id, index)
    if found is None:
        return []
    task, element = found
    if (
        state.is_terminal
        or state.cancel_requested
        or task.status not in ("scheduled", "running")
        or element.status != "scheduled"
        or element.attempts != attempt
        or (state.is_paused and not task.ordered)
    ):
        return []
    d = Decision(state)
    d.emit(
        MapElementStarted(
            timestamp=now, task_id=task_id, index=index, attempt=attempt, worker=worker
        )
    )
    return d.events


def record_element_completed(
    state: RunState,
    task_id: str,
    index: int,
    attempt: int,
    result: Any,
    duration_ms: float,
    now: datetime,
    *,
    max_io_bytes: int,
    logs: Sequence[LogLine] = (),
) -> list[RunEvent]:
    """Decide MapElementCompleted, and the task's end when it was the last element.

    A result larger than ``max_io_bytes`` as JSON fails the element for good instead.
    """
    from flowweaver.domain.run import Decision, _too_large  # noqa: PLC0415 - run imports this

    found = _element(state, task_id, index)
    if found is None:
        return []
    task, element = found
    if task.status != "running" or element.status != "running" or element.attempts != attempt:
        return []
    size = json_size(result, stop_above=max_io_bytes)
    d = Decision(state)
    if size > max_io_bytes:
        key = element_key(task_id, index)
        error = _too_large("OutputTooLarge", key, "result", size, max_io_bytes)
        d.emit(
            MapElementFailed(
                timestamp=now,
                task_id=task_id,
                index=index,
                attempt=attempt,
                error=error,
                logs=tuple(logs),
            )
        )
    else:
        d.emit(
            MapElementCompleted(
                timestamp=now,
                task_id=task_id,
                index=index,
                attempt=attempt,
                result=result,
                duration_ms=round(duration_ms, 3),
                logs=tuple(logs),
            )
        )
    follow_element(d, task_id, now, max_io_bytes)
    return d.events


def element_failure_event(
    state: RunState,
    task_id: str,
    index: int,
    attempt: int,
    error: ErrorInfo,
    now: datetime,
    *,
    jitter_sample: float,
    interruption_limit: int,
    logs: Sequence[LogLine] = (),
) -> MapElementFailed | None:
    """Return the MapElementFailed an element's failed attempt decides (its retry under the
    task's policy), without applying it; None for a stale attempt."""
    from flowweaver.domain.run import _LIMIT_NOTE  # noqa: PLC0415 - run imports this module

    found = _element(state, task_id, index)
    if found is None:
        return None
    task, element = found
    if (
        task.status not in ("running", "scheduled")
        or element.status not in ("running", "scheduled")
        or element.attempts != attempt
    ):
        return None
    policy = state.spec.retry_policy(state.spec.task(task_id))
    retry_at: datetime | None = None
    if state.cancel_requested or not error.retryable:
        pass
    elif error.type == INTERRUPTED:
        retry_at = now if element.interruptions + 1 < interruption_limit else None
    elif error.type in policy.non_retryable:
        error = msgspec.structs.replace(error, retryable=False)
    else:
        counted = element.attempts - element.interruptions
        if counted < policy.max_attempts:
            delay = policy.delay_before(counted + 1, jitter_sample)
            retry_at = now + timedelta(seconds=delay)
    if error.type == INTERRUPTED and element.interruptions + 1 >= interruption_limit:
        error = ErrorInfo(
            type=INTERRUPTED,
            message=f"{error.message}{_LIMIT_NOTE.format(count=element.interruptions + 1)}",
            retryable=False,
        )
    return MapElementFailed(
        timestamp=now,
        task_id=task_id,
        index=index,
        attempt=attempt,
        error=error,
        retry_at=retry_at,
        logs=tuple(logs),
    )


def record_element_failed(
    state: RunState,
    task_id: str,
    index: int,
    attempt: int,
    error: ErrorInfo,
    now: datetime,
    *,
    jitter_sample: float,
    interruption_limit: int,
    max_io_bytes: int,
    logs: Sequence[LogLine] = (),
) -> list[RunEvent]:
    """Decide MapElementFailed, and the task's failure once no element of it runs."""
    from flowweaver.domain.run import Decision  # noqa: PLC0415 - run imports this module

    event = element_failure_event(
        state,
        task_id,
        index,
        attempt,
        error,
        now,
        jitter_sample=jitter_sample,
        interruption_limit=interruption_limit,
        logs=logs,
    )
    if event is None:
        return []
    d = Decision(state)
    d.emit(event)
    follow_element(d, task_id, now, max_io_bytes)
    return d.events


def record_element_retry_due(
    state: RunState, task_id: str, index: int, attempt: int, now: datetime
) -> list[RunEvent]:
    """Decide MapElementRetried once the failed ``attempt``'s delay passed."""
    from flowweaver.domain.run import Decision  # noqa: PLC0415 - run imports this module

    found = _element(state, task_id, index)
    if found is None:
        return []
    task, element = found
    if (
        task.status != "running"
        or element.status != "waiting_retry"
        or element.attempts != attempt
        or state.cancel_requested
        or state.is_paused
    ):
        return []
    d = Decision(state)
    d.emit(MapElementRetried(timestamp=now, task_id=task_id, index=index, attempt=attempt + 1))
    return d.events


def interrupt_elements(
    state: RunState,
    task: TaskState,
    now: datetime,
    *,
    alive: Collection[tuple[str, int]],
    interruption_limit: int,
    max_io_bytes: int,
    message: str,
) -> list[RunEvent]:
    """Decide MapElementFailed(Interrupted) for every running element not in ``alive``."""
    progress = task.elements
    if progress is None:
        return []
    events: list[RunEvent] = []
    error = ErrorInfo(type=INTERRUPTED, message=message, retryable=True)
    for index, element in enumerate(progress.elements):
        if element.status != "running":
            continue
        if (element_key(task.id, index), element.attempts) in alive:
            continue
        events.extend(
            record_element_failed(
                state,
                task.id,
                index,
                element.attempts,
                error,
                now,
                jitter_sample=0.0,
                interruption_limit=interruption_limit,
                max_io_bytes=max_io_bytes,
            )
        )
    return events


def follow_element(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """Decide what follows an element's outcome, just emitted into ``d``: the task completes
    with every result in order once all completed; it fails once an element failed for
    good and none runs any more; a cancelled run may end."""
    from flowweaver.domain import run  # noqa: PLC0415 - run imports this module

    state = d.state
    task = state.tasks[task_id]
    progress = task.elements
    assert progress is not None
    if task.status != "running" or progress.running:
        if task.status == "cancelled":
            run._finish_if_done(d, now)
        return
    if progress.first_failed is not None:
        first = progress.elements[progress.first_failed].last_error
        assert first is not None
        error = ErrorInfo(
            type=first.type,
            message=f"element {progress.first_failed}: {first.message}",
            retryable=False,
            traceback=first.traceback,
        )
        failed = TaskFailed(timestamp=now, task_id=task_id, attempt=task.attempts, error=error)
        d.emit(failed)
        run.follow_outcome(d, failed, max_io_bytes=max_io_bytes)
        return
    if progress.completed == progress.total:
        results = [element.result for element in progress.elements]
        started = task.started_at or now
        duration_ms = (now - started).total_seconds() * 1000
        d.events.extend(
            run.record_completed(
                state, task_id, task.attempts, results, duration_ms, now, max_io_bytes=max_io_bytes
            )
        )


def after_scheduled(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """Decide what follows a map task's TaskScheduled (or an operator's TaskRetried) at once:
    a failure when its path selects no usable list, completion when the list is empty."""
    from flowweaver.domain import run  # noqa: PLC0415 - run imports this module

    state = d.state
    task = state.tasks[task_id]
    path = state.spec.task(task_id).map
    if path is None or task.status != "scheduled":
        return
    outcome: TaskCompleted | TaskFailed
    if task.elements is None:
        _, why = items_of(path, task.inputs or {})
        error = ErrorInfo(type=MAP_INPUT_ERROR, message=why, retryable=False)
        outcome = TaskFailed(timestamp=now, task_id=task_id, attempt=task.attempts, error=error)
    elif task.elements.total == 0:
        outputs = state.spec.task(task_id).outputs
        try:
            output = publish([], task.inputs or {}, outputs)
        except TaskInputError as e:
            error = ErrorInfo(type="OutputError", message=str(e), retryable=False)
            outcome = TaskFailed(timestamp=now, task_id=task_id, attempt=task.attempts, error=error)
        else:
            outcome = TaskCompleted(
                timestamp=now, task_id=task_id, attempt=task.attempts, output=output
            )
    else:
        return
    d.emit(outcome)
    run.follow_outcome(d, outcome, max_io_bytes=max_io_bytes)


def progress_counts(progress: MapProgress) -> dict[str, int]:
    """Return the element counts by status (``total`` included) of one map task."""
    counts = {"waiting_retry": 0, "cancelled": 0}
    for element in progress.elements:
        if element.status in counts:
            counts[element.status] += 1
    return {
        "total": progress.total,
        "completed": progress.completed,
        "failed": progress.failed,
        "running": progress.running,
        **counts,
    }
