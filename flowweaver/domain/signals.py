"""Signals and waits: a task that completes when someone sends the run a signal.

A task with ``wait: {signal, timeout?}`` runs no handler. When its trigger rule makes it
ready it is scheduled as any task is (TaskScheduled, its inputs resolved), and the fold puts
it in status ``waiting`` instead of ``scheduled``: no worker ever takes it. It ends in one of
three ways:

- SignalReceived with its signal's name (``POST /runs/{id}/signals/{name}``): the payload is
  the task's result, published as a handler's result is (``{"result": payload}``, or the
  task's ``outputs`` mapping), in a TaskCompleted of the current attempt, decided with the
  SignalReceived; dependents proceed as after any completion.
- Its ``timeout`` passes, counted from the TaskScheduled (or TaskRetried) of the attempt:
  TaskFailed with error type ``SignalTimeout``, retryable, so the task's retry policy decides
  (one attempt by default; ``nonRetryable: ["SignalTimeout"]`` makes it final). Another
  attempt waits again for a full ``timeout``.
- An operator completes, skips or cancels it, as any task.

A signal is kept on the run (``RunState.signals``, first payload by name): one sent before
its task is reached completes the task the moment the task starts waiting. A name is taken
once: a second signal of a name already received is refused (409) and nothing is stored.
A signal that no task of the workflow waits for is refused too (404): a typo fails loudly.

Pure, like the rest of the domain: time comes in as arguments, and the run actor arms the
timer from the state (:func:`wait_deadline`), so a deadline survives a restart by replay.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flowweaver.domain.data import json_size, publish
from flowweaver.domain.events import (
    SIGNAL_TIMEOUT,
    ErrorInfo,
    RunEvent,
    SignalReceived,
    TaskCompleted,
    TaskFailed,
)
from flowweaver.domain.run import (
    DEFAULT_INTERRUPTION_LIMIT,
    DEFAULT_MAX_TASK_IO_BYTES,
    Decision,
    RunState,
    follow_outcome,
    record_failed,
)
from flowweaver.errors import (
    FieldError,
    InvalidCommandError,
    NotFoundError,
    TaskInputError,
    ValidationError,
)

WAITING = "waiting"
"""The status of a ``wait`` task's attempt while it waits for its signal."""


def waits_for(state: RunState, name: str) -> list[str]:
    """Return the ids of the workflow's tasks that wait for the signal ``name``."""
    return [t.id for t in state.spec.tasks if t.wait is not None and t.wait.signal == name]


def receive_signal(
    state: RunState,
    name: str,
    payload: Any,
    now: datetime,
    *,
    by: str,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
) -> list[RunEvent]:
    """Decide SignalReceived, and TaskCompleted for every task waiting for ``name``.

    Raises:
        InvalidCommandError: the run has not started, has ended or is being cancelled; or
            the signal ``name`` was already received.
        NotFoundError: no task of the workflow waits for ``name``.
        ValidationError: ``payload`` takes more than ``max_io_bytes`` as JSON.
    """
    if state.definition is None:
        raise InvalidCommandError(state.id, "has not started")
    if name in state.signals:  # first: a repeated signal is refused the same way, ended run or not
        raise InvalidCommandError(
            state.id, f"signal {name} was already received: a signal is taken once"
        )
    if state.is_terminal:
        raise InvalidCommandError(state.id, f"has ended ({state.status})")
    if state.cancel_requested:
        raise InvalidCommandError(state.id, "is being cancelled")
    waiting = waits_for(state, name)
    if not waiting:
        raise NotFoundError("signal", f"{name} of run {state.id}")
    size = json_size(payload, stop_above=max_io_bytes)
    if size > max_io_bytes:
        raise ValidationError(
            [
                FieldError(
                    "$.payload", f"takes {size} bytes as JSON, over the limit of {max_io_bytes}"
                )
            ]
        )
    d = Decision(state)
    d.emit(SignalReceived(timestamp=now, name=name, payload=payload, by=by))
    for task_id in waiting:
        complete_if_signalled(d, task_id, now, max_io_bytes)
    return d.events


def complete_if_signalled(d: Decision, task_id: str, now: datetime, max_io_bytes: int) -> None:
    """If ``task_id`` waits and its signal was received, complete it with the payload and
    decide what follows (the hook of every path that puts a task in ``waiting``)."""
    state = d.state
    task = state.tasks[task_id]
    wait = state.spec.task(task_id).wait
    if task.status != WAITING or wait is None or wait.signal not in state.signals:
        return
    payload = state.signals[wait.signal]
    event: TaskCompleted | TaskFailed
    try:
        output = publish(payload, task.inputs or {}, state.spec.task(task_id).outputs)
    except TaskInputError as e:
        error = ErrorInfo(type="OutputError", message=str(e), retryable=False)
        event = TaskFailed(timestamp=now, task_id=task_id, attempt=task.attempts, error=error)
    else:
        size = json_size(output, stop_above=max_io_bytes)
        if size > max_io_bytes:
            message = (
                f"task {task_id!r}: its published output takes at least {size} bytes as "
                f"JSON, over the limit of {max_io_bytes} bytes"
            )
            error = ErrorInfo(type="OutputTooLarge", message=message, retryable=False)
            event = TaskFailed(timestamp=now, task_id=task_id, attempt=task.attempts, error=error)
        else:
            event = TaskCompleted(
                timestamp=now, task_id=task_id, attempt=task.attempts, output=output
            )
    d.emit(event)
    follow_outcome(d, event, max_io_bytes=max_io_bytes)


def wait_deadline(state: RunState, task_id: str) -> datetime | None:
    """Return when the waiting attempt of ``task_id`` times out; None when it does not wait
    or has no timeout. Derived from the events (the attempt's TaskScheduled or TaskRetried)."""
    task = state.tasks.get(task_id)
    if task is None or task.status != WAITING or task.scheduled_at is None:
        return None
    wait = state.spec.task(task_id).wait
    if wait is None or wait.timeout is None:
        return None
    return task.scheduled_at + timedelta(seconds=wait.timeout)


def record_wait_expired(
    state: RunState,
    task_id: str,
    attempt: int,
    now: datetime,
    *,
    jitter_sample: float = 0.0,
    interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
) -> list[RunEvent]:
    """Decide TaskFailed ``SignalTimeout`` for ``attempt`` of a task still waiting for its
    signal, with a retry when its policy allows one; nothing for a stale attempt or a wait
    without a timeout."""
    task = state.tasks.get(task_id)
    if task is None or task.status != WAITING or task.attempts != attempt:
        return []
    wait = state.spec.task(task_id).wait
    if wait is None or wait.timeout is None:  # no timeout: it waits for the signal alone
        return []
    error = ErrorInfo(
        type=SIGNAL_TIMEOUT,
        message=f"no signal {wait.signal!r} came within {wait.timeout:g} s",
        retryable=True,
    )
    return record_failed(
        state,
        task_id,
        attempt,
        error,
        now,
        jitter_sample=jitter_sample,
        interruption_limit=interruption_limit,
    )
