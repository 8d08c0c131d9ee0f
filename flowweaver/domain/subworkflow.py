"""Sub-workflows: a task that runs another workflow as a child run.

A task with ``workflow: "child-id"`` (instead of a handler) is not given to the worker
pool. Once it is scheduled, the engine starts a run of the child workflow (its latest
version, pinned when the child starts) with the task's resolved inputs as parameters and
the idempotency key :func:`child_key`, so a restart never starts two children for one
attempt; the parent records ChildRunStarted and the task runs until the child ends. The
child's published outputs (every completed task's output, by task id) are the task's
result; a child that fails or is cancelled fails the attempt (the task's retry policy may
start a new child, with the next attempt's key).

Pure: the checks and decisions here read what they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flowweaver.domain.events import ChildRunStarted, ErrorInfo, RunEvent
from flowweaver.domain.run import Decision, RunState
from flowweaver.domain.spec import TaskSpec, WorkflowSpec
from flowweaver.errors import FieldError

MAX_DEPTH = 32
"""How deep sub-workflow runs may nest. Registration refuses cycles; this bounds what a race
between two registrations on two nodes could still let through."""
CHILD_FAILED = "ChildRunFailed"
CHILD_CANCELLED = "ChildRunCancelled"
CHILD_NOT_STARTED = "ChildRunNotStarted"


def is_child_task(task: TaskSpec) -> bool:
    """Say whether the task runs a workflow as a child run (not a handler)."""
    return task.workflow is not None


def child_key(run_id: str, task_id: str, attempt: int) -> str:
    """Return the idempotency key of the child run of one attempt of a task.

    The child's run id is derived from it (and the child workflow's id), so the store's
    uniqueness on a run's first event makes starting the child at most once, across nodes.
    """
    return f"parent:{run_id}:{task_id}:{attempt}"


def check_child_workflows(
    spec: WorkflowSpec, latest: Callable[[str], WorkflowSpec | None]
) -> list[FieldError]:
    """Check the workflows ``spec``'s tasks run as children, against what is registered.

    ``latest(workflow_id)`` returns the latest registered definition, or None. Every child
    workflow must be registered (``spec`` itself aside), and no chain of sub-workflows may
    lead back to a workflow on it (A runs B runs A), with ``spec`` standing for its id.
    """
    errors: list[FieldError] = []
    for index, task in enumerate(spec.tasks):
        if task.workflow is None or task.workflow == spec.id:
            continue
        if latest(task.workflow) is None:
            errors.append(
                FieldError(
                    f"$.tasks[{index}].workflow", f"no workflow {task.workflow!r} is registered"
                )
            )
    if errors:
        return errors
    cycle = _cycle_through(spec, latest)
    if cycle:
        index = next(i for i, t in enumerate(spec.tasks) if t.workflow == cycle[1])
        errors.append(
            FieldError(f"$.tasks[{index}].workflow", "sub-workflow cycle: " + " -> ".join(cycle))
        )
    return errors


def _cycle_through(
    spec: WorkflowSpec, latest: Callable[[str], WorkflowSpec | None]
) -> list[str] | None:
    """Return a cycle of workflow ids that starts and ends at ``spec.id``, or None.

    Depth-first over the latest definitions, each workflow visited once (iterative).
    """
    definitions: dict[str, WorkflowSpec | None] = {spec.id: spec}

    def children(workflow_id: str) -> list[str]:
        if workflow_id not in definitions:
            definitions[workflow_id] = latest(workflow_id)
        found = definitions[workflow_id]
        if found is None:
            return []
        return list(dict.fromkeys(t.workflow for t in found.tasks if t.workflow is not None))

    seen = {spec.id}
    path = [spec.id]
    stack = [iter(children(spec.id))]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            path.pop()
            continue
        if child == spec.id:
            return [*path, child]
        if child in seen:
            continue
        seen.add(child)
        path.append(child)
        stack.append(iter(children(child)))
    return None


def record_child_started(
    state: RunState,
    task_id: str,
    attempt: int,
    child_run_id: str,
    workflow_id: str,
    workflow_version: int,
    now: datetime,
) -> list[RunEvent]:
    """Decide ChildRunStarted for a scheduled attempt whose child run is stored, or nothing
    when the attempt is stale (retried, skipped, completed by hand, cancelled) or the run
    ended: then the child is not this run's any more and the engine cancels it.
    """
    task = state.tasks.get(task_id)
    if (
        task is None
        or state.is_terminal
        or state.cancel_requested
        or task.status != "scheduled"
        or task.attempts != attempt
    ):
        return []
    d = Decision(state)
    d.emit(
        ChildRunStarted(
            timestamp=now,
            task_id=task_id,
            attempt=attempt,
            child_run_id=child_run_id,
            workflow_id=workflow_id,
            workflow_version=workflow_version,
        )
    )
    return d.events


def owns_child(state: RunState, task_id: str, attempt: int, child_run_id: str) -> bool:
    """Say whether the child run is the live child of the task's current attempt."""
    task = state.tasks.get(task_id)
    return (
        task is not None
        and not state.is_terminal
        and task.attempts == attempt
        and task.status in ("scheduled", "running")
        and task.child_run_id in (None, child_run_id)
        and not (state.cancel_requested and task.status == "scheduled")
    )


def running_children(state: RunState) -> list[tuple[str, int, str]]:
    """Return (task id, attempt, child run id) of every task waiting for its child run."""
    return [
        (t.id, t.attempts, t.child_run_id)
        for t in state.tasks.values()
        if t.status == "running" and t.child_run_id is not None
    ]


def child_result(child: RunState) -> Any:
    """Return a completed child run's result for its parent task: its published outputs."""
    return child.published_outputs()


def child_error(child: RunState) -> ErrorInfo:
    """Return the error of a parent task whose child run failed or was cancelled.

    A failed child may be retried by the task's policy (a new child run); a cancelled one
    was stopped on purpose, and is not.
    """
    if child.status == "cancelled":
        reason = f": {child.cancel_reason}" if child.cancel_reason else ""
        return ErrorInfo(
            type=CHILD_CANCELLED,
            message=f"child run {child.id} of workflow {child.workflow_id} was cancelled{reason}",
            retryable=False,
        )
    failed = ", ".join(child.summary.failed_tasks) if child.summary else ""
    detail = f": task(s) {failed} failed" if failed else ""
    return ErrorInfo(
        type=CHILD_FAILED,
        message=f"child run {child.id} of workflow {child.workflow_id} failed{detail}",
        retryable=True,
    )


def not_started_error(workflow_id: str, why: str) -> ErrorInfo:
    """Return the error of a task whose child run could not be started (never retried)."""
    return ErrorInfo(
        type=CHILD_NOT_STARTED,
        message=f"the child run of workflow {workflow_id!r} could not start: {why}",
        retryable=False,
    )
