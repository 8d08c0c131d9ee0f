"""Operator actions on live runs: pause, resume, cancel, retry, skip or complete a task, and
send a signal (domain/signals.py: it travels the same way).

An action is a plain value (:class:`OperatorAction`) so that it can travel: to the run's
actor in this process (an :class:`~flowweaver.engine.messages.OperatorCommand` in its
mailbox, decided in its normal drain), or over a store's relay to the node that owns the run
in a cluster. :func:`decide` maps it to the domain command; :func:`encode_answer` and
:func:`decode_answer` carry the owner's answer back (a relayed answer names the error, and
the caller reads the new state from the shared store).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowweaver.domain import run as commands
from flowweaver.domain import signals
from flowweaver.domain.events import RunEvent
from flowweaver.domain.run import RunState
from flowweaver.errors import (
    FieldError,
    FlowweaverError,
    InvalidCommandError,
    NotFoundError,
    RunUnavailableError,
    ValidationError,
)

if TYPE_CHECKING:
    from flowweaver.engine.messages import OperatorCommand

ANONYMOUS = "anonymous"
"""``by`` of an action when no principal is known (the API without auth, the CLI)."""

ActionKind = Literal["pause", "resume", "cancel", "retry", "skip", "complete", "signal"]

MAX_REASON_CHARS = 4096
"""The longest ``reason`` an operator action records."""
MAX_PRINCIPAL_CHARS = 256
"""The longest ``by`` an operator action records."""
MAX_ANSWER_MESSAGE_CHARS = 4096
"""Longest error message a relayed answer carries (a domain message is far shorter)."""

DOMAIN_ERRORS = (InvalidCommandError, NotFoundError, ValidationError)
"""The errors an action's decision raises; each means nothing was stored."""


class OperatorAction(msgspec.Struct, frozen=True, kw_only=True):
    """One operator action on one run, as decided by its owner."""

    kind: ActionKind
    run_id: str
    by: str
    reason: str = ""
    task_id: str | None = None
    output: Any = None
    """The hand-given output of ``complete``; the payload of ``signal``."""
    signal: str | None = None
    """The name of the signal a ``signal`` action sends."""


def decide(
    action: OperatorAction, state: RunState, now: datetime, *, max_io_bytes: int
) -> list[RunEvent]:
    """Decide the events of ``action`` on ``state`` (applying them to it).

    Raises:
        InvalidCommandError: the run or the task is not in a state that allows it.
        NotFoundError: the workflow has no such task.
        ValidationError: a hand-given output over ``max_io_bytes``.
    """
    by, reason = action.by, action.reason
    if action.kind == "pause":
        return commands.pause_run(state, now, by=by, reason=reason)
    if action.kind == "resume":
        return commands.resume_run(state, now, by=by, reason=reason, max_io_bytes=max_io_bytes)
    if action.kind == "cancel":
        if state.definition is None:
            raise InvalidCommandError(state.id, "has not started")
        if state.is_terminal:
            raise InvalidCommandError(state.id, f"has ended ({state.status})")
        # A second cancel of a run being cancelled decides nothing and is answered all the same.
        return commands.request_cancel(state, reason, now, by=by)
    if action.kind == "signal":
        return signals.receive_signal(
            state, action.signal or "", action.output, now, by=by, max_io_bytes=max_io_bytes
        )
    task_id = action.task_id or ""
    if action.kind == "retry":
        return commands.retry_task(state, task_id, now, by=by, reason=reason)
    if action.kind == "skip":
        return commands.skip_task(state, task_id, now, by=by, reason=reason)
    return commands.complete_task(
        state, task_id, action.output, now, by=by, reason=reason, max_io_bytes=max_io_bytes
    )


def decide_or_refuse(
    action: OperatorAction, state: RunState, now: datetime, *, max_io_bytes: int
) -> tuple[list[RunEvent], FlowweaverError | None]:
    """Return :func:`decide`'s events and no error, or no events and the domain error.

    A refused action leaves ``state`` as it was: each domain command checks before it
    decides anything.
    """
    try:
        return decide(action, state, now, max_io_bytes=max_io_bytes), None
    except DOMAIN_ERRORS as e:
        return [], e


def answer(answers: list[tuple[OperatorCommand, FlowweaverError | None]], state: RunState) -> None:
    """Answer operator commands after their wake-up's events are stored: the state or the
    error that refused each."""
    if not answers:
        return
    answered = detached(state)
    for command, error in answers:
        command.reply.set(answered if error is None else error)


def detached(state: RunState) -> RunState:
    """Return a copy of ``state`` that the run actor's later decisions do not change.

    The fold replaces a task's fields and never changes a stored value in place, so copying
    the run and its task records is enough.
    """
    twin = copy.copy(state)
    twin.tasks = {task_id: copy.copy(task) for task_id, task in state.tasks.items()}
    return twin


# --- answers across nodes ------------------------------------------------------------------------


class RelayedAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the owner of a run answers to a relayed action: done, an error, or not mine."""

    outcome: Literal[
        "done", "invalid-command", "not-found", "validation", "not-here", "unavailable"
    ]
    message: str = ""
    kind: str = ""
    ident: str = ""
    errors: tuple[tuple[str, str], ...] = ()


_answer_decoder = msgspec.json.Decoder(RelayedAnswer)
_action_decoder = msgspec.json.Decoder(OperatorAction)
_encoder = msgspec.json.Encoder()


def encode_action(action: OperatorAction) -> bytes:
    """Return ``action`` as JSON, to relay it."""
    return _encoder.encode(action)


def decode_action(data: bytes) -> OperatorAction:
    """Read a relayed action.

    Raises:
        msgspec.DecodeError: it is not one.
    """
    return _action_decoder.decode(data)


def encode_answer(answer: RunState | FlowweaverError | None) -> bytes:
    """Return an owner's answer as JSON: done, the domain error, or not here (None)."""
    if answer is None:
        return _encoder.encode(RelayedAnswer(outcome="not-here"))
    if isinstance(answer, RunState):
        return _encoder.encode(RelayedAnswer(outcome="done"))
    if isinstance(answer, NotFoundError):
        relayed = RelayedAnswer(outcome="not-found", kind=answer.kind, ident=answer.ident)
    elif isinstance(answer, ValidationError):
        relayed = RelayedAnswer(
            outcome="validation",
            errors=tuple((e.path, e.message[:MAX_ANSWER_MESSAGE_CHARS]) for e in answer.errors),
        )
    else:
        message = str(answer)
        if isinstance(answer, InvalidCommandError):
            message = message.removeprefix(f"run {answer.run_id}: ")
        relayed = RelayedAnswer(
            outcome="invalid-command", message=message[:MAX_ANSWER_MESSAGE_CHARS]
        )
    return _encoder.encode(relayed)


def encode_unavailable(message: str) -> bytes:
    """Return the owner's answer that it could not store the action in time."""
    relayed = RelayedAnswer(outcome="unavailable", message=message[:MAX_ANSWER_MESSAGE_CHARS])
    return _encoder.encode(relayed)


def decode_answer(run_id: str, data: bytes) -> FlowweaverError | bool:
    """Read an owner's answer: True when done, False when the run is not the node's (any
    more), else the error to raise.

    Raises:
        msgspec.DecodeError: it is not an answer.
    """
    answer = _answer_decoder.decode(data)
    if answer.outcome == "done":
        return True
    if answer.outcome == "not-here":
        return False
    if answer.outcome == "not-found":
        return NotFoundError(answer.kind, answer.ident)
    if answer.outcome == "validation":
        return ValidationError([FieldError(path, message) for path, message in answer.errors])
    if answer.outcome == "unavailable":
        return RunUnavailableError(run_id, answer.message.removeprefix(f"run {run_id}: "))
    return InvalidCommandError(run_id, answer.message)
