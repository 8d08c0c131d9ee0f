"""A run's state as a fold over its events, and the commands that decide new events.

The fold (:func:`apply`) only applies facts. Commands check the state, return the events
they decide, and apply each one to the state they were given as they go, so that a chain
of decisions (complete a task, schedule what became ready, finish the run) sees its own
effects. Time and randomness come in as arguments: replay is deterministic.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from flowweaver.domain import mapping
from flowweaver.domain.data import (
    input_context,
    json_size,
    may_read_tasks,
    publish,
    resolve_inputs,
)
from flowweaver.domain.events import (
    ENGINE_PRINCIPAL,
    INTERRUPTED,
    TERMINAL_RUN_STATUSES,
    TERMINAL_TASK_STATUSES,
    ChildRunStarted,
    ErrorInfo,
    Event,
    LogLine,
    ParentTask,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunDequeued,
    RunEvent,
    RunFailed,
    RunForked,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    RunStatus,
    RunSummary,
    SignalReceived,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskScheduled,
    TaskSkipped,
    TaskStarted,
    TaskStatus,
)
from flowweaver.domain.spec import (
    OnTaskFailure,
    TriggerRule,
    WorkflowSpec,
    concurrency_group,
)
from flowweaver.errors import (
    FieldError,
    InvalidCommandError,
    NotFoundError,
    TaskInputError,
    ValidationError,
)

DEFAULT_INTERRUPTION_LIMIT = 3
DEFAULT_MAX_TASK_IO_BYTES = 1024 * 1024
"""Largest resolved inputs, and largest published output, of one task (as JSON bytes)."""


class TaskState(msgspec.Struct, kw_only=True, rename="camel"):
    """Where one task stands; ``attempts`` is the number of the latest attempt."""

    id: str
    status: TaskStatus = "pending"
    attempts: int = 0
    interruptions: int = 0
    waiting_for: int = 0
    inputs: dict[str, Any] | None = None
    output: Any = None
    last_error: ErrorInfo | None = None
    retry_at: datetime | None = None
    worker: str | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    logs: tuple[LogLine, ...] = ()
    """What the handler logged in the latest attempt that has an outcome."""
    ordered: bool = False
    """The current attempt was ordered by an operator: it starts even while the run is paused."""
    child_run_id: str | None = None
    """A sub-workflow task: the child run of its latest attempt (ChildRunStarted)."""
    elements: mapping.MapProgress | None = None
    """A map task's elements, once its TaskScheduled expanded them (None for other tasks)."""


class RunState(msgspec.Struct, kw_only=True, rename="camel"):
    """Everything known about a run, derived only from its events."""

    id: str
    version: int = 0
    status: RunStatus = "pending"
    workflow_id: str = ""
    workflow_version: int = 0
    definition: WorkflowSpec | None = None
    parameters: dict[str, Any] = {}
    idempotency_key: str | None = None
    request_hash: str = ""
    submitted_by: str | None = None
    on_task_failure: OnTaskFailure = "fail"
    parent_run_id: str | None = None
    parent_version: int | None = None
    priority: int = 0
    concurrency_key: str | None = None
    """While queued or after: the key's value its concurrency limit counted it under."""
    parent_task_id: str | None = None
    """A sub-workflow run: the task of ``parent_run_id`` that started it."""
    depth: int = 0
    """How deep a sub-workflow run nests: 0 for a run that no task started."""
    tasks: dict[str, TaskState] = {}
    unfinished: int = 0
    running: int = 0
    cancel_requested: bool = False
    cancel_reason: str | None = None
    cancel_by: str | None = None
    paused_by: str | None = None
    pause_reason: str | None = None
    signals: dict[str, Any] = {}
    """The payload of each signal received, by name (the first; see domain/signals.py)."""
    summary: RunSummary | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        """Say whether the run has ended (completed, failed or cancelled)."""
        return self.status in TERMINAL_RUN_STATUSES

    @property
    def is_paused(self) -> bool:
        """Say whether the run is paused: nothing the engine decides on its own starts."""
        return self.status == "paused"

    @property
    def is_queued(self) -> bool:
        """Say whether the run waits for a slot of its workflow's concurrency limit."""
        return self.status == "queued"

    @property
    def spec(self) -> WorkflowSpec:
        """Return the pinned definition.

        Raises:
            RuntimeError: the run has not started (no RunStarted folded yet).
        """
        if self.definition is None:
            raise RuntimeError(f"run {self.id} has no RunStarted event")
        return self.definition

    def task(self, task_id: str) -> TaskState:
        """Return one task's state.

        Raises:
            KeyError: the workflow has no such task.
        """
        return self.tasks[task_id]

    def running_tasks(self) -> list[TaskState]:
        """Return the tasks whose current attempt started and has no outcome yet."""
        return [t for t in self.tasks.values() if t.status == "running"]

    def published_outputs(self) -> dict[str, Any]:
        """Return every completed task's published output, by task id."""
        return {t.id: t.output for t in self.tasks.values() if t.status == "completed"}


# --- the fold ---------------------------------------------------------------------------------


def new_state(run_id: str) -> RunState:
    """Return the state of a run before its first event."""
    return RunState(id=run_id)


def apply(state: RunState, event: Event) -> RunState:  # noqa: PLR0915 - one branch per event
    """Apply one event to ``state`` in place and return it; the version advances by one.

    Besides statuses, the fold keeps counts that make decisions O(1) per event: tasks not
    yet finished, tasks running, and per task the dependencies not yet completed.
    """
    state.version += 1
    state.updated_at = event.timestamp
    if isinstance(event, TaskScheduled | TaskStarted | TaskCompleted | TaskFailed):
        task = state.tasks[event.task_id]
        if isinstance(event, TaskStarted):
            _move(state, task, "running")
            task.worker = event.worker
            task.started_at = event.timestamp
        elif isinstance(event, TaskCompleted):
            _move(state, task, "completed")
            task.output = event.output
            task.completed_at = event.timestamp
            task.retry_at = None
            task.logs = event.logs
            task.ordered = False
            for successor in state.spec.dag.dependents[task.id]:
                state.tasks[successor].waiting_for -= 1
        elif isinstance(event, TaskScheduled):
            _move(state, task, _scheduled_status(state, task.id))
            task.attempts = event.attempt
            task.inputs = event.inputs
            task.scheduled_at = event.timestamp
            task.ordered = False
            mapping.on_scheduled(state, task)
        else:
            task.last_error = event.error
            task.retry_at = event.retry_at
            task.logs = event.logs
            task.ordered = False
            if event.error.type == INTERRUPTED:
                task.interruptions += 1
            if event.retry_at is None:
                _move(state, task, "failed")
                task.completed_at = event.timestamp
            else:
                _move(state, task, "waiting_retry")
    elif isinstance(event, ChildRunStarted):
        task = state.tasks[event.task_id]
        _move(state, task, "running")
        task.child_run_id = event.child_run_id
        task.started_at = event.timestamp
    elif isinstance(event, TaskRetried):
        task = state.tasks[event.task_id]
        _move(state, task, _scheduled_status(state, task.id))
        task.attempts = event.attempt
        task.retry_at = None
        task.scheduled_at = event.timestamp
        task.completed_at = None
        task.ordered = event.by is not None
        mapping.on_retried(state, task)
    elif isinstance(event, TaskSkipped):
        task = state.tasks[event.task_id]
        _move(state, task, "skipped")
        task.completed_at = event.timestamp
        task.retry_at = None
    elif isinstance(event, mapping.MAP_ELEMENT_EVENTS):
        mapping.apply_element(state, event)
    elif isinstance(event, RunStarted | RunForked):
        _begin(state, event)
    elif isinstance(event, RunQueued):
        state.status = "queued"
        state.priority = event.priority
        state.concurrency_key = event.concurrency_key
    elif isinstance(event, RunDequeued):
        state.status = "running"
    elif isinstance(event, SignalReceived):
        # Replaced, never changed in place: answered copies of the state share the dict.
        state.signals = {**state.signals, event.name: event.payload}
    elif isinstance(event, RunPaused):
        state.status = "paused"
        state.paused_by = event.by
        state.pause_reason = event.reason
    elif isinstance(event, RunResumed):
        state.status = "running"
        state.paused_by = None
        state.pause_reason = None
    elif isinstance(event, RunCancelRequested):
        state.cancel_requested = True
        state.cancel_reason = event.reason
        state.cancel_by = event.by
        for task in state.tasks.values():
            if task.status in ("pending", "scheduled", "waiting", "waiting_retry"):
                _move(state, task, "cancelled")
                task.retry_at = None
                task.completed_at = event.timestamp
        mapping.on_cancel_requested(state, event.timestamp)
    elif isinstance(event, RunCancelled):
        state.status = "cancelled"
        for task in state.tasks.values():
            if task.status not in TERMINAL_TASK_STATUSES:
                _move(state, task, "cancelled")
                task.completed_at = event.timestamp
    elif isinstance(event, RunCompleted):
        state.status = "completed"
        state.summary = event.summary
    elif isinstance(event, RunFailed):
        state.status = "failed"
        state.summary = event.summary
    return state


def _begin(state: RunState, event: RunStarted | RunForked) -> None:
    """Fold a run's first event: the pinned definition, and for a fork its carried tasks."""
    spec = event.definition
    state.status = "running"
    state.workflow_id = event.workflow_id
    state.workflow_version = event.workflow_version
    state.definition = spec
    state.parameters = event.parameters
    state.idempotency_key = event.idempotency_key
    state.request_hash = event.request_hash
    state.on_task_failure = event.on_task_failure or spec.on_task_failure or "fail"
    state.created_at = event.timestamp
    if isinstance(event, RunStarted):
        state.submitted_by = event.submitted_by
        state.priority = event.priority
        if spec.concurrency is not None:
            state.concurrency_key = concurrency_group(spec, event.parameters)
        if event.parent is not None:
            state.parent_run_id = event.parent.run_id
            state.parent_task_id = event.parent.task_id
            state.depth = event.parent.depth
        carried: dict[str, Any] = {}
    else:
        state.submitted_by = event.by
        state.parent_run_id = event.parent_run_id
        state.parent_version = event.parent_version
        carried = event.carried
    tasks: dict[str, TaskState] = {}
    for t in spec.tasks:
        if t.id in carried:
            tasks[t.id] = TaskState(
                id=t.id, status="completed", output=carried[t.id], completed_at=event.timestamp
            )
        else:
            waiting = sum(1 for dep in t.dependencies if dep not in carried)
            tasks[t.id] = TaskState(id=t.id, waiting_for=waiting)
    state.tasks = tasks
    state.unfinished = sum(1 for task in tasks.values() if task.status != "completed")
    state.running = 0


def _scheduled_status(state: RunState, task_id: str) -> TaskStatus:
    """A scheduled attempt waits for a worker, or, for a ``wait`` task, for its signal."""
    return "waiting" if state.spec.task(task_id).wait is not None else "scheduled"


def _move(state: RunState, task: TaskState, status: TaskStatus) -> None:
    """Change a task's status and keep the run's counts in step."""
    old = task.status
    if old == status:
        return
    if old == "running":
        state.running -= 1
    elif status == "running":
        state.running += 1
    was_open = old not in TERMINAL_TASK_STATUSES
    is_open = status not in TERMINAL_TASK_STATUSES
    if was_open and not is_open:
        state.unfinished -= 1
    elif is_open and not was_open:
        state.unfinished += 1
    task.status = status


def fold(events: Iterable[Event], state: RunState) -> RunState:
    """Apply ``events`` in order to ``state`` and return it."""
    for event in events:
        apply(state, event)
    return state


# --- commands ---------------------------------------------------------------------------------


class Decision:
    """Collects the events a command decides, applying each to the state as it is decided."""

    __slots__ = ("events", "state")

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.events: list[RunEvent] = []

    def emit(self, event: RunEvent) -> None:
        """Apply ``event`` to the state and add it to the decided events."""
        apply(self.state, event)
        self.events.append(event)


def start_run(
    run_id: str,
    spec: WorkflowSpec,
    workflow_version: int,
    parameters: dict[str, Any],
    now: datetime,
    *,
    idempotency_key: str | None = None,
    request_hash: str = "",
    submitted_by: str | None = None,
    on_task_failure: OnTaskFailure | None = None,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
    priority: int = 0,
    parent: ParentTask | None = None,
    traceparent: str | None = None,
) -> tuple[RunState, list[RunEvent]]:
    """Decide a run's first events: RunStarted, then TaskScheduled for every root task
    (see :func:`begin_run`).

    ``max_io_bytes`` caps each task's resolved inputs (see :func:`record_completed`).
    ``priority`` orders the run among queued runs and its tasks among ready ones.
    ``parent`` names the task that starts this run as a sub-workflow.
    """
    first = RunStarted(
        timestamp=now,
        workflow_id=spec.id,
        workflow_version=workflow_version,
        definition=spec,
        parameters=parameters,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        submitted_by=submitted_by,
        on_task_failure=on_task_failure,
        priority=priority,
        parent=parent,
        traceparent=traceparent,
    )
    return begin_run(run_id, first, max_io_bytes=max_io_bytes)


def begin_run(
    run_id: str,
    first: RunStarted | RunForked,
    *,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> tuple[RunState, list[RunEvent]]:
    """Decide what follows a run's first event: TaskScheduled for every task it leaves
    ready, and the run's end when nothing is left to run.

    The one path behind :func:`start_run` and :func:`fork_run`; the replay check
    (:mod:`flowweaver.domain.replay_check`) calls it with a stored first event.
    """
    state = new_state(run_id)
    d = Decision(state)
    d.emit(first)
    _decide_pending(d, first.timestamp, max_io_bytes)
    _finish_if_done(d, first.timestamp)
    return state, d.events


def record_started(
    state: RunState, task_id: str, attempt: int, worker: str, now: datetime
) -> list[RunEvent]:
    """Decide TaskStarted, or nothing when that attempt may not start (stale or cancelled).

    ``task_id`` may be a map element's key (``task[index]``, see :mod:`.mapping`).
    """
    if (element := mapping.split_key(task_id)) is not None:
        return mapping.record_element_started(state, *element, attempt, worker, now)
    task = state.tasks.get(task_id)
    if (
        task is None
        or state.is_terminal
        or state.cancel_requested
        or task.status != "scheduled"
        or task.attempts != attempt
        or (state.is_paused and not task.ordered)
    ):
        return []
    d = Decision(state)
    d.emit(TaskStarted(timestamp=now, task_id=task_id, attempt=attempt, worker=worker))
    return d.events


def record_completed(
    state: RunState,
    task_id: str,
    attempt: int,
    result: Any,
    duration_ms: float,
    now: datetime,
    *,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
    logs: Sequence[LogLine] = (),
) -> list[RunEvent]:
    """Decide TaskCompleted and whatever it makes ready, or nothing for a stale attempt.

    An output path that matches nothing, or a published output of more than
    ``max_io_bytes`` as JSON, fails the task for good instead; so does a task made ready
    whose resolved inputs pass that size. ``logs`` are the lines the handler logged.
    While the run is paused nothing is made ready. ``task_id`` may be a map element's key.
    """
    if (element := mapping.split_key(task_id)) is not None:
        return mapping.record_element_completed(
            state,
            *element,
            attempt,
            result,
            duration_ms,
            now,
            max_io_bytes=max_io_bytes,
            logs=logs,
        )
    task = state.tasks.get(task_id)
    if task is None or task.status != "running" or task.attempts != attempt:
        return []
    outputs = state.spec.task(task_id).outputs
    try:
        output = publish(result, task.inputs or {}, outputs)
    except TaskInputError as e:
        failure = ErrorInfo(type="OutputError", message=str(e), retryable=False)
        return record_published(
            state,
            task_id,
            attempt,
            None,
            duration_ms,
            now,
            failure=failure,
            max_io_bytes=max_io_bytes,
            logs=logs,
        )
    return record_published(
        state, task_id, attempt, output, duration_ms, now, max_io_bytes=max_io_bytes, logs=logs
    )


def record_published(
    state: RunState,
    task_id: str,
    attempt: int,
    output: Any,
    duration_ms: float,
    now: datetime,
    *,
    failure: ErrorInfo | None = None,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
    logs: Sequence[LogLine] = (),
) -> list[RunEvent]:
    """Decide TaskCompleted for ``output``, already published from the handler's result,
    and whatever it makes ready; or nothing for a stale attempt.

    ``failure`` (publishing failed: an output path matched nothing), or an ``output`` of
    more than ``max_io_bytes`` as JSON, fails the task for good instead. The second half of
    :func:`record_completed`, and what the replay check runs for a stored outcome whose raw
    result is not stored.
    """
    task = state.tasks.get(task_id)
    if task is None or task.status != "running" or task.attempts != attempt:
        return []
    if failure is None:
        size = json_size(output, stop_above=max_io_bytes)
        if size > max_io_bytes:
            failure = _too_large("OutputTooLarge", task_id, "published output", size, max_io_bytes)
    event: TaskCompleted | TaskFailed
    if failure is not None:
        error = ErrorInfo(type=failure.type, message=failure.message, retryable=False)
        event = TaskFailed(
            timestamp=now, task_id=task_id, attempt=attempt, error=error, logs=tuple(logs)
        )
    else:
        event = TaskCompleted(
            timestamp=now,
            task_id=task_id,
            attempt=attempt,
            output=output,
            duration_ms=round(duration_ms, 3),
            logs=tuple(logs),
        )
    d = Decision(state)
    d.emit(event)
    follow_outcome(d, event, max_io_bytes=max_io_bytes)
    return d.events


def follow_outcome(
    d: Decision,
    outcome: TaskCompleted | TaskFailed,
    *,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> None:
    """Decide what follows a task's outcome, just emitted into ``d``.

    A completion schedules the dependents it made ready (unless the run is paused or being
    cancelled); a failure for good skips what depends on the task, or pauses the run for an
    operator; either may end the run. A failure with a retry ahead decides nothing more.
    Every command that records an outcome ends here, and so does the replay check.
    """
    now = outcome.timestamp
    if isinstance(outcome, TaskCompleted):
        _decide_dependents(d, outcome.task_id, now, max_io_bytes)
    elif outcome.retry_at is None:
        _failed_for_good(d, outcome.task_id, now, max_io_bytes)
    else:
        return
    _finish_if_done(d, now)


def _decide_dependents(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """A task just ended: decide each pending dependent by its trigger rule, and cascade.

    A dependent whose rule is met is scheduled (unless the run is paused or being cancelled:
    it waits for resume); one whose rule can no longer be met is skipped with the reason, and
    its own dependents are decided in turn; any other keeps waiting.
    """
    state = d.state
    if state.cancel_requested:
        return
    completed = state.tasks[task_id].status == "completed"
    work = deque((t, completed) for t in state.spec.dag.dependents[task_id])
    roots = Roots()
    while work:
        dependent, after_completion = work.popleft()
        waiting = state.tasks[dependent]
        if waiting.status != "pending":
            continue
        if (
            after_completion
            and waiting.waiting_for
            and state.spec.task(dependent).trigger in (None, "all_success")
        ):
            # O(1) for the default rule after a completion (a join of 1,000 tasks stays
            # linear): a dependency that failed or was skipped would have decided it already.
            continue
        verdict, why = trigger_verdict(state, dependent, roots)
        if verdict == "skip":
            d.emit(TaskSkipped(timestamp=now, task_id=dependent, reason=why))
            work.extend((t, False) for t in state.spec.dag.dependents[dependent])
        elif verdict == "ready" and not state.is_paused:
            _schedule(d, [dependent], now, max_io_bytes)


Verdict = tuple[str, str]
"""``("ready" | "skip" | "wait", reason)``: what a pending task's trigger rule says now."""


def trigger_verdict(state: RunState, task_id: str, roots: Roots | None = None) -> Verdict:
    """Say whether a pending task may run, can never run, or waits, by its trigger rule.

    Counts its direct dependencies that completed, failed and were skipped, with Airflow's
    meaning: a task the engine skipped because its own dependencies failed counts as failed
    (Airflow's ``upstream_failed``). While the run is paused a failed dependency is not
    final yet (an operator may retry it), so it counts as not ended. A task with no
    dependencies is ready whatever its rule. ``roots`` may carry what skipped tasks stand for
    between calls of one command.
    """
    spec = state.spec.task(task_id)
    rule: TriggerRule = spec.trigger or "all_success"
    n = len(spec.dependencies)
    if (
        n == 0
        or rule == "always"
        or (rule == "all_success" and not state.tasks[task_id].waiting_for)
    ):
        return ("ready", "")
    ok = failed = skipped = 0
    roots = roots or Roots()
    failed_root = skipped_root = ""
    for dep in spec.dependencies:
        status = state.tasks[dep].status
        if status == "completed":
            ok += 1
        elif status == "failed":
            if not state.is_paused:
                failed += 1
                failed_root = failed_root or dep
        elif status == "skipped":
            root = _failure_root(state, dep, roots)
            if root is not None:
                failed += 1
                failed_root = failed_root or root
            else:
                skipped += 1
                skipped_root = skipped_root or _skip_root(state, dep, roots)
    if rule == "all_success" and (failed or skipped):
        # The reason runs written before trigger rules carry, so the replay check agrees.
        if failed:
            return ("skip", f"upstream task {failed_root} failed")
        return ("skip", f"upstream task {skipped_root} was skipped")
    done = ok + failed + skipped
    return _rule_verdict(rule, n, ok, failed, skipped, done)


def _rule_verdict(
    rule: TriggerRule, n: int, ok: int, failed: int, skipped: int, done: int
) -> Verdict:
    why = f"trigger rule {rule}: "
    if rule == "all_success":
        return ("ready", "") if ok == n else ("wait", "")
    if rule == "all_failed":
        if ok or skipped:
            what = "completed" if ok else "was skipped"
            return ("skip", why + f"an upstream task {what}")
        return ("ready", "") if failed == n else ("wait", "")
    if rule == "all_done":
        return ("ready", "") if done == n else ("wait", "")
    if rule == "one_success":
        if ok:
            return ("ready", "")
        return ("skip", why + "no upstream task completed") if done == n else ("wait", "")
    if rule == "one_failed":
        if failed:
            return ("ready", "")
        return ("skip", why + "no upstream task failed") if done == n else ("wait", "")
    if failed:  # none_failed, none_failed_min_one_success
        return ("skip", why + "an upstream task failed")
    if done < n:
        return ("wait", "")
    if rule == "none_failed_min_one_success" and not ok:
        return ("skip", why + "no upstream task completed")
    return ("ready", "")


_FAILURE_PROPAGATING: frozenset[str] = frozenset(
    {"all_success", "one_success", "none_failed", "none_failed_min_one_success"}
)


class Roots:
    """What skipped tasks stand for, worked out once for the decisions of one command."""

    __slots__ = ("failure", "skip")

    def __init__(self) -> None:
        self.failure: dict[str, str | None] = {}
        self.skip: dict[str, str] = {}


def _ended_by(task: TaskState, moment: datetime | None) -> bool:
    return task.completed_at is not None and moment is not None and task.completed_at <= moment


def _failure_root(state: RunState, task_id: str, roots: Roots) -> str | None:
    """For a skipped task that counts as failed downstream (Airflow's upstream_failed),
    return the failed task behind it; None when it counts as skipped.

    It counts as failed when its rule is one a failure defeats and one of its own
    dependencies that had ended when it was skipped failed or counts as failed; so what it
    stands for never changes afterwards. Iterative: a chain of any length is fine.
    """
    memo = roots.failure
    stack = [task_id]
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        spec = state.spec.task(current)
        skipped_at = state.tasks[current].completed_at
        answer: str | None = None
        unknown: str | None = None
        if (spec.trigger or "all_success") in _FAILURE_PROPAGATING:
            for dep in spec.dependencies:
                upstream = state.tasks[dep]
                if not _ended_by(upstream, skipped_at):
                    continue
                if upstream.status == "failed" and not state.is_paused:
                    answer = dep
                elif upstream.status == "skipped":
                    if dep not in memo:
                        unknown = dep
                        break
                    answer = memo[dep]
                if answer is not None:
                    break
        if unknown is not None:
            stack.append(unknown)
            continue
        memo[current] = answer
        stack.pop()
    return memo[task_id]


def _skip_root(state: RunState, task_id: str, roots: Roots) -> str:
    """Return the task whose skip made a skipped ``all_success`` chain skip (for reasons)."""
    memo = roots.skip
    path: list[str] = []
    current = task_id
    while current not in memo:
        path.append(current)
        spec = state.spec.task(current)
        upstream = [d for d in spec.dependencies if state.tasks[d].status == "skipped"]
        if (spec.trigger or "all_success") != "all_success" or not upstream:
            memo[current] = current
            break
        current = upstream[0]
    root = memo[current]
    for seen in path:
        memo[seen] = root
    return root


def record_failed(
    state: RunState,
    task_id: str,
    attempt: int,
    error: ErrorInfo,
    now: datetime,
    *,
    jitter_sample: float = 0.0,
    interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
    logs: Sequence[LogLine] = (),
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> list[RunEvent]:
    """Decide TaskFailed with ``retry_at`` when the policy allows another attempt.

    ``jitter_sample`` in [-1, 1] scales the policy's jitter. An ``Interrupted`` error retries
    at once and does not use up maxAttempts, but ``interruption_limit`` of them fail the task.
    A failure for good skips everything downstream and may end the run; with
    ``onTaskFailure: pause`` it pauses the run instead. ``logs`` are the handler's lines.
    ``task_id`` may be a map element's key (its retry follows the task's policy).
    """
    if (element := mapping.split_key(task_id)) is not None:
        return mapping.record_element_failed(
            state,
            *element,
            attempt,
            error,
            now,
            jitter_sample=jitter_sample,
            interruption_limit=interruption_limit,
            max_io_bytes=max_io_bytes,
            logs=logs,
        )
    event = failure_event(
        state,
        task_id,
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
    follow_outcome(d, event)
    return d.events


def failure_event(
    state: RunState,
    task_id: str,
    attempt: int,
    error: ErrorInfo,
    now: datetime,
    *,
    jitter_sample: float = 0.0,
    interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
    logs: Sequence[LogLine] = (),
) -> TaskFailed | None:
    """Return the TaskFailed that :func:`record_failed` decides, without applying it; None
    for a stale attempt. ``state`` is not changed."""
    task = state.tasks.get(task_id)
    if (
        task is None
        or task.status not in ("running", "scheduled", "waiting")
        or task.attempts != attempt
    ):
        return None
    retry_at = _retry_at(state, task, error, now, jitter_sample, interruption_limit)
    if error.retryable and error.type != INTERRUPTED:
        policy = state.spec.retry_policy(state.spec.task(task_id))
        if error.type in policy.non_retryable:
            # The policy says retrying this type never helps: the stored error says so too.
            error = msgspec.structs.replace(error, retryable=False)
    if error.type == INTERRUPTED and task.interruptions + 1 >= interruption_limit:
        error = ErrorInfo(
            type=INTERRUPTED,
            message=f"{error.message}{_LIMIT_NOTE.format(count=task.interruptions + 1)}",
            retryable=False,
        )
    return TaskFailed(
        timestamp=now,
        task_id=task_id,
        attempt=attempt,
        error=error,
        retry_at=retry_at,
        logs=tuple(logs),
    )


_LIMIT_NOTE = " (interrupted {count} times, the limit)"
_LIMIT_NOTE_RE = re.compile(r" \(interrupted \d+ times, the limit\)\Z")


def reported_error(stored: ErrorInfo) -> ErrorInfo:
    """Return the error as it was reported to :func:`record_failed`, given the one stored.

    The inverse of what :func:`failure_event` does to an error: an ``Interrupted`` attempt
    at the interruption limit was stored with a note and as not retryable. A retryable
    error the policy lists as non-retryable was stored as not retryable; given either
    flag, the command decides the same, so the stored flag stands.
    """
    if stored.type == INTERRUPTED and _LIMIT_NOTE_RE.search(stored.message):
        message = _LIMIT_NOTE_RE.sub("", stored.message)
        return msgspec.structs.replace(stored, message=message, retryable=True)
    return stored


def record_retry_due(state: RunState, task_id: str, attempt: int, now: datetime) -> list[RunEvent]:
    """Decide TaskRetried for the next attempt once the failed ``attempt``'s delay passed
    (MapElementRetried for a map element's key)."""
    if (element := mapping.split_key(task_id)) is not None:
        return mapping.record_element_retry_due(state, *element, attempt, now)
    task = state.tasks.get(task_id)
    if (
        task is None
        or task.status != "waiting_retry"
        or task.attempts != attempt
        or state.cancel_requested
        or state.is_paused
    ):
        return []
    d = Decision(state)
    d.emit(TaskRetried(timestamp=now, task_id=task_id, attempt=attempt + 1))
    _signal_hook(d, task_id, now, DEFAULT_MAX_TASK_IO_BYTES)
    return d.events


def request_cancel(
    state: RunState, reason: str, now: datetime, *, by: str | None = None
) -> list[RunEvent]:
    """Decide RunCancelRequested (and RunCancelled when nothing is running), or nothing."""
    if state.is_terminal or state.cancel_requested:
        return []
    d = Decision(state)
    d.emit(RunCancelRequested(timestamp=now, reason=reason, by=by))
    _finish_if_done(d, now)
    return d.events


def interrupt_running(
    state: RunState,
    now: datetime,
    *,
    still_running: Sequence[tuple[str, int]] = (),
    interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
    message: str = "the process running this attempt stopped",
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> list[RunEvent]:
    """Decide TaskFailed(Interrupted) for every running attempt not in ``still_running``
    (MapElementFailed for the running elements of a map task)."""
    alive = set(still_running)
    d = Decision(state)
    for task in state.running_tasks():
        if task.elements is not None:
            d.events.extend(
                mapping.interrupt_elements(
                    state,
                    task,
                    now,
                    alive=alive,
                    interruption_limit=interruption_limit,
                    max_io_bytes=max_io_bytes,
                    message=message,
                )
            )
            continue
        if (task.id, task.attempts) in alive:
            continue
        error = ErrorInfo(type=INTERRUPTED, message=message, retryable=True)
        d.events.extend(
            record_failed(
                state, task.id, task.attempts, error, now, interruption_limit=interruption_limit
            )
        )
    return d.events


def settle(
    state: RunState, now: datetime, *, max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES
) -> list[RunEvent]:
    """Decide what a resumed run still owes: schedule ready tasks, end the run if all ended.

    A paused run owes nothing until it is resumed (see :func:`resume_run`), a queued one
    nothing until it is dequeued (:mod:`flowweaver.domain.concurrency`).
    """
    if state.is_terminal or state.definition is None or state.is_paused or state.is_queued:
        return []
    d = Decision(state)
    _decide_pending(d, now, max_io_bytes)
    _finish_if_done(d, now)
    return d.events


# --- forks and operator actions -----------------------------------------------------------
#
# Each raises InvalidCommandError (409) when the run's state does not allow it and
# NotFoundError for a task the workflow does not have; nothing is decided then.


def fork_run(
    run_id: str,
    parent: RunState,
    now: datetime,
    *,
    reset: Sequence[str] | None = None,
    parameters: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    by: str = "anonymous",
    reason: str = "",
    idempotency_key: str | None = None,
    request_hash: str = "",
    on_task_failure: OnTaskFailure | None = None,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> tuple[RunState, list[RunEvent]]:
    """Decide a fork of ``parent`` (its state at the version to fork from): RunForked, then
    TaskScheduled for what is ready.

    ``reset`` (default: every task not completed in ``parent``) and everything downstream of
    it run again; every other completed task is carried with its output, or its override in
    ``outputs``. ``parameters`` replace the parent's when given.

    Raises:
        InvalidCommandError: ``parent`` has not started.
        ValidationError: a reset task the workflow lacks, an output override for a task that
            is not carried, or an override larger than ``max_io_bytes``.
    """
    if parent.definition is None:
        raise InvalidCommandError(parent.id, "has no first event to fork from")
    spec = parent.definition
    dag = spec.dag
    problems: list[FieldError] = []
    if reset is None:
        reset = [t for t in dag.order if parent.tasks[t].status != "completed"]
    else:
        for i, task_id in enumerate(reset):
            if task_id not in parent.tasks:
                problems.append(
                    FieldError(f"$.reset[{i}]", f"workflow {spec.id} has no task {task_id!r}")
                )
    rerun = {t for t in reset if t in parent.tasks}
    for task_id in list(rerun):
        rerun.update(dag.descendants(task_id))
    carried = {
        t: parent.tasks[t].output
        for t in dag.order
        if t not in rerun and parent.tasks[t].status == "completed"
    }
    for task_id, value in (outputs or {}).items():
        path = f"$.outputs.{task_id}"
        if task_id not in carried:
            why = "runs again in the fork" if task_id in parent.tasks else "is not in the workflow"
            problems.append(FieldError(path, f"task {task_id!r} is not carried: it {why}"))
        elif (size := json_size(value, stop_above=max_io_bytes)) > max_io_bytes:
            problems.append(FieldError(path, f"over the limit of {max_io_bytes} bytes ({size})"))
        else:
            carried[task_id] = value
    if problems:
        raise ValidationError(problems)
    first = RunForked(
        timestamp=now,
        parent_run_id=parent.id,
        parent_version=parent.version,
        workflow_id=parent.workflow_id,
        workflow_version=parent.workflow_version,
        definition=spec,
        parameters=parent.parameters if parameters is None else parameters,
        carried=carried,
        reset=tuple(t for t in dag.order if t in set(reset)),
        by=by,
        reason=reason,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        on_task_failure=on_task_failure or parent.on_task_failure,
    )
    return begin_run(run_id, first, max_io_bytes=max_io_bytes)


def pause_run(state: RunState, now: datetime, *, by: str, reason: str = "") -> list[RunEvent]:
    """Decide RunPaused: nothing new starts; running attempts finish and are recorded."""
    _require_open(state)
    if state.status != "running":
        raise InvalidCommandError(state.id, f"is {state.status}: only a running run pauses")
    d = Decision(state)
    d.emit(RunPaused(timestamp=now, by=by, reason=reason))
    return d.events


def resume_run(
    state: RunState,
    now: datetime,
    *,
    by: str,
    reason: str = "",
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> list[RunEvent]:
    """Decide RunResumed and what the pause held back.

    Tasks that failed for good while paused now skip what depends on them (as a run that
    does not pause would have), retries whose time has come begin, ready tasks are
    scheduled, and the run ends if everything has.
    """
    _require_open(state)
    if not state.is_paused:
        raise InvalidCommandError(state.id, f"is {state.status}, not paused")
    d = Decision(state)
    d.emit(RunResumed(timestamp=now, by=by, reason=reason))
    for task_id in state.spec.dag.order:
        task = state.tasks[task_id]
        if task.status == "waiting_retry" and task.retry_at is not None and task.retry_at <= now:
            d.emit(TaskRetried(timestamp=now, task_id=task_id, attempt=task.attempts + 1))
            _signal_hook(d, task_id, now, max_io_bytes)
    _decide_pending(d, now, max_io_bytes)
    _finish_if_done(d, now)
    return d.events


def retry_task(
    state: RunState, task_id: str, now: datetime, *, by: str, reason: str = ""
) -> list[RunEvent]:
    """Decide TaskRetried now for a task waiting for its retry, or failed in a paused run.

    The new attempt starts even while the run is paused: the pause holds back what the
    engine decides on its own, not what an operator orders.
    """
    task = _open_task(state, task_id)
    if not (task.status == "waiting_retry" or (task.status == "failed" and state.is_paused)):
        where = " in a run that is not paused" if task.status == "failed" else ""
        raise InvalidCommandError(
            state.id,
            f"task {task_id} is {task.status}{where}: only a task waiting for a retry, or "
            "failed in a paused run, is retried",
        )
    d = Decision(state)
    d.emit(
        TaskRetried(timestamp=now, task_id=task_id, attempt=task.attempts + 1, by=by, reason=reason)
    )
    _signal_hook(d, task_id, now, DEFAULT_MAX_TASK_IO_BYTES)
    mapping.after_scheduled(d, task_id, now, DEFAULT_MAX_TASK_IO_BYTES)
    return d.events


def skip_task(
    state: RunState, task_id: str, now: datetime, *, by: str, reason: str = ""
) -> list[RunEvent]:
    """Decide TaskSkipped for a task that has not completed and is not running, and skip
    what depends on it."""
    task = _open_task(state, task_id)
    if task.status in ("completed", "running", "skipped", "cancelled"):
        raise InvalidCommandError(
            state.id,
            f"task {task_id} is {task.status}: only a task that has not completed, "
            "is not running and was not skipped can be skipped",
        )
    d = Decision(state)
    d.emit(TaskSkipped(timestamp=now, task_id=task_id, reason=reason, by=by))
    _decide_dependents(d, task_id, now, DEFAULT_MAX_TASK_IO_BYTES)
    _finish_if_done(d, now)
    return d.events


def complete_task(
    state: RunState,
    task_id: str,
    output: Any,
    now: datetime,
    *,
    by: str,
    reason: str = "",
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> list[RunEvent]:
    """Decide TaskCompleted (attempt 0) with ``output`` as the task's published output, for
    a task that has not completed and is not running; what it makes ready is scheduled
    unless the run is paused.

    Raises:
        ValidationError: ``output`` is larger than ``max_io_bytes`` as JSON.
    """
    task = _open_task(state, task_id)
    if task.status in ("completed", "running", "cancelled"):
        raise InvalidCommandError(
            state.id,
            f"task {task_id} is {task.status}: only a task that has not completed "
            "and is not running can be completed by hand",
        )
    size = json_size(output, stop_above=max_io_bytes)
    if size > max_io_bytes:
        raise ValidationError(
            [
                FieldError(
                    "$.output", f"takes {size} bytes as JSON, over the limit of {max_io_bytes}"
                )
            ]
        )
    d = Decision(state)
    event = TaskCompleted(
        timestamp=now, task_id=task_id, attempt=0, output=output, by=by, reason=reason
    )
    d.emit(event)
    follow_outcome(d, event, max_io_bytes=max_io_bytes)
    return d.events


def _require_open(state: RunState) -> None:
    if state.definition is None:
        raise InvalidCommandError(state.id, "has not started")
    if state.is_terminal:
        raise InvalidCommandError(state.id, f"has ended ({state.status})")
    if state.is_queued:
        raise InvalidCommandError(state.id, "is queued: none of its tasks has begun")
    if state.cancel_requested:
        raise InvalidCommandError(state.id, "is being cancelled")


def _open_task(state: RunState, task_id: str) -> TaskState:
    _require_open(state)
    task = state.tasks.get(task_id)
    if task is None:
        raise NotFoundError("task", f"{task_id} of run {state.id}")
    return task


def _decide_pending(d: Decision, now: datetime, max_io_bytes: int) -> None:
    """Decide every pending task by its trigger rule, in topological order, so that a skip
    is seen by what depends on it: schedule what is ready, skip what can never run."""
    state = d.state
    if state.cancel_requested or state.is_paused or state.is_queued:
        return
    ready: list[str] = []
    roots = Roots()
    for task_id in state.spec.dag.order:
        if state.tasks[task_id].status != "pending":
            continue
        verdict, why = trigger_verdict(state, task_id, roots)
        if verdict == "skip":
            d.emit(TaskSkipped(timestamp=now, task_id=task_id, reason=why))
        elif verdict == "ready":
            ready.append(task_id)
    _schedule(d, ready, now, max_io_bytes)


def _schedule(d: Decision, task_ids: Iterable[str], now: datetime, max_io_bytes: int) -> None:
    state = d.state
    spec = state.spec
    everything: dict[str, Any] | None = None
    for task_id in task_ids:
        if state.tasks[task_id].status != "pending":
            # Decided already by an outcome decided in this loop (a task that failed at
            # scheduling, or a wait that completed with a kept signal, made it ready).
            continue
        task_spec = spec.task(task_id)
        upstream: dict[str, Any] = {}
        for dep in task_spec.dependencies:
            published = state.tasks[dep].output
            if isinstance(published, dict):
                upstream.update(published)
        if everything is None and task_spec.inputs and may_read_tasks(task_spec.inputs):
            everything = state.published_outputs()
        try:
            inputs = resolve_inputs(
                task_spec.inputs, input_context(upstream, state.parameters, everything or {})
            )
        except TaskInputError as e:
            error = ErrorInfo(type="InputError", message=str(e), retryable=False)
        else:
            size = json_size(inputs, stop_above=max_io_bytes)
            if size <= max_io_bytes:
                d.emit(TaskScheduled(timestamp=now, task_id=task_id, attempt=1, inputs=inputs))
                if task_spec.wait is not None:
                    _signal_hook(d, task_id, now, max_io_bytes)
                elif task_spec.map is not None:
                    mapping.after_scheduled(d, task_id, now, max_io_bytes)
                continue
            error = _too_large("InputTooLarge", task_id, "resolved inputs", size, max_io_bytes)
        # The task fails where it stands, with empty inputs: nothing huge is stored.
        d.emit(TaskScheduled(timestamp=now, task_id=task_id, attempt=1, inputs={}))
        failed = TaskFailed(timestamp=now, task_id=task_id, attempt=1, error=error)
        d.emit(failed)
        follow_outcome(d, failed, max_io_bytes=max_io_bytes)


def _signal_hook(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """A task just began an attempt: a ``wait`` task whose signal came already completes."""
    if d.state.spec.task(task_id).wait is not None:
        from flowweaver.domain import signals  # noqa: PLC0415 - signals builds on this module

        signals.complete_if_signalled(d, task_id, now, max_io_bytes)


def _too_large(kind: str, task_id: str, what: str, size: int, limit: int) -> ErrorInfo:
    message = (
        f"task {task_id!r}: its {what} take at least {size} bytes as JSON, "
        f"over the limit of {limit} bytes"
    )
    return ErrorInfo(type=kind, message=message, retryable=False)


def _failed_for_good(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """A task failed for good: decide what depends on it, or pause the run for an operator."""
    state = d.state
    if state.on_task_failure == "pause" and not state.cancel_requested:
        if not state.is_paused:
            d.emit(
                RunPaused(
                    timestamp=now, by=ENGINE_PRINCIPAL, reason=f"task {task_id} failed for good"
                )
            )
        return
    _decide_dependents(d, task_id, now, max_io_bytes)


def _finish_if_done(d: Decision, now: datetime) -> None:
    state = d.state
    if state.is_terminal:
        return
    if state.cancel_requested:
        if state.running == 0:
            d.emit(RunCancelled(timestamp=now, reason=state.cancel_reason or ""))
        return
    if state.unfinished or state.is_paused:
        return
    summary = summarize(state)
    if summary.failed_tasks:
        d.emit(RunFailed(timestamp=now, summary=summary))
    else:
        d.emit(RunCompleted(timestamp=now, summary=summary))


def summarize(state: RunState) -> RunSummary:
    """Count the tasks by status and list the ones that failed."""
    counts: dict[str, int] = {}
    failed: list[str] = []
    for task in state.tasks.values():
        counts[task.status] = counts.get(task.status, 0) + 1
        if task.status == "failed":
            failed.append(task.id)
    return RunSummary(counts=counts, failed_tasks=tuple(failed))


def _retry_at(
    state: RunState,
    task: TaskState,
    error: ErrorInfo,
    now: datetime,
    jitter_sample: float,
    interruption_limit: int,
) -> datetime | None:
    if state.cancel_requested or not error.retryable:
        return None
    if error.type == INTERRUPTED:
        return now if task.interruptions + 1 < interruption_limit else None
    policy = state.spec.retry_policy(state.spec.task(task.id))
    if error.type in policy.non_retryable:
        return None
    counted_attempts = task.attempts - task.interruptions
    if counted_attempts >= policy.max_attempts:
        return None
    delay = policy.delay_before(counted_attempts + 1, jitter_sample)
    return now + timedelta(seconds=delay)
