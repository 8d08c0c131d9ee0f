"""The replay check: re-derive every decision of a stored run with this code.

A stored run mixes two kinds of events. Facts came from outside the decision code: the
run's first event (the request), a worker starting an attempt (TaskStarted), a handler's
outcome (TaskCompleted, TaskFailed), a timer's expiry (TaskRetried after a retry delay,
TaskFailed ``SignalTimeout`` of a wait), an attempt lost with its process (TaskFailed
``Interrupted``), a signal (SignalReceived), and what operators asked (RunCancelRequested,
RunPaused, RunResumed, and TaskRetried, TaskSkipped or TaskCompleted with ``by``).
Decisions are what the commands of :mod:`flowweaver.domain.run` derived from them: the
tasks scheduled and their resolved inputs, failures at scheduling, whether and when a failed
attempt is retried, what is skipped downstream, a pause on a failure, the run's end and its
summary.

:func:`check_run` walks a run's events in order and feeds each fact to the command the
engine called for it, at the fact's own timestamp. The command decides the fact's event
(or nothing, or refuses) and what follows it; those events must be the ones stored next,
field by field. A handler's raw result is not stored when its task maps ``outputs``, and
the jitter sample of a retry delay is random and not stored: there the stored fact is
applied and what follows it is re-derived through the same code path the engine used
(:func:`~flowweaver.domain.run.record_published`,
:func:`~flowweaver.domain.run.follow_outcome`), and a stored ``retryAt`` must lie within
the policy's jitter bounds. A decision that no fact explains is what a restarted engine
owes the run (:func:`~flowweaver.domain.run.settle`), or a difference. At the end of the
log nothing may be owed.

The actor decides every input of its mailbox and stores them in one append, but each
command's events are stored together and in the order decided, so checking one fact at a
time sees the same states the engine saw. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec

from flowweaver.domain import mapping, signals, subworkflow
from flowweaver.domain import run as commands
from flowweaver.domain.concurrency import dequeue_run
from flowweaver.domain.events import (
    ENGINE_PRINCIPAL,
    ChildRunStarted,
    Event,
    MapElementCompleted,
    MapElementFailed,
    MapElementRetried,
    MapElementStarted,
    RunCancelRequested,
    RunDequeued,
    RunEvent,
    RunForked,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    SignalReceived,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskSkipped,
    TaskStarted,
    event_name,
)
from flowweaver.domain.run import (
    DEFAULT_INTERRUPTION_LIMIT,
    DEFAULT_MAX_TASK_IO_BYTES,
    Decision,
    RunState,
)
from flowweaver.errors import FlowweaverError

MAX_SHOWN_CHARS = 240
"""How much of a value a difference shows, so that its line stays one line."""
PUBLICATION_ERRORS = frozenset({"OutputError", "OutputTooLarge"})
"""Error types of a failure decided while publishing a result, not raised by a handler."""

EVENT_KINDS: dict[str, str] = {
    "RunStarted": "fact: the request",
    "RunForked": "fact: the fork request",
    "RunQueued": "fact: the workflow's concurrency limit was reached",
    "RunDequeued": "fact: a slot of the limit came free; decision: what the start owes",
    "TaskScheduled": "decision",
    "TaskStarted": "fact: a worker took the attempt",
    "TaskCompleted": "fact: the handler's outcome, or an operator's (with by)",
    "TaskFailed": "fact: the handler's outcome or a lost attempt; decision: its retry, and "
    "failures at scheduling or publication",
    "TaskRetried": "fact: a retry delay passed, or an operator asked (with by); decision "
    "on a resume",
    "TaskSkipped": "fact: an operator asked (with by); else decision",
    "SignalReceived": "fact: someone sent the signal",
    "MapElementStarted": "fact: a worker took an element's attempt",
    "MapElementCompleted": "fact: the handler's outcome for an element",
    "MapElementFailed": "fact: the handler's outcome for an element or a lost attempt; "
    "decision: its retry, and a result over the size limit",
    "MapElementRetried": "fact: an element's retry delay passed",
    "RunCancelRequested": "fact: someone asked",
    "RunPaused": "fact: an operator asked; decision by engine",
    "RunResumed": "fact: an operator asked",
    "RunCancelled": "decision",
    "RunCompleted": "decision",
    "RunFailed": "decision",
    "ChildRunStarted": "fact: a sub-workflow task's child run was stored",
}
"""What each run event type is to the check. A new event type needs its place here and in
``_Checker._derive`` (a fact goes to the command the engine calls for it)."""

_encoder = msgspec.json.Encoder()


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """Where a stored run and what this code derives from it first part.

    ``version`` is the run's event where they part (one past the last event when the code
    derives something the log ends without); ``event_type`` the stored event there (None
    past the end); ``field`` the first field that differs (None when the whole event does);
    ``stored`` and ``derived`` what was stored and what the code derives now, as short text.
    """

    run_id: str
    version: int
    event_type: str | None
    field: str | None
    stored: str
    derived: str

    def describe(self) -> str:
        """Return the difference as one line (without the run id)."""
        where = self.event_type or "past the end of the log"
        what = f"{self.field}: " if self.field else ""
        return (
            f"differs at version {self.version} ({where}): "
            f"{what}stored {self.stored}; the code derives {self.derived}"
        )


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of checking one run: how many events were read, and the first difference."""

    run_id: str
    events: int
    difference: Difference | None = None

    @property
    def ok(self) -> bool:
        """Say whether the code derives every decision the run stored."""
        return self.difference is None


class _DiffersError(Exception):
    """Raised inside a derivation: the stored fact already differs from what the code decides."""

    def __init__(self, field: str | None, stored: str, derived: str) -> None:
        super().__init__(derived)
        self.field = field
        self.stored = stored
        self.derived = derived


def check_run(
    run_id: str,
    events: Iterable[RunEvent],
    *,
    max_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
    interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
) -> ReplayReport:
    """Re-derive every decision of a stored run with this code; report the first difference.

    ``events`` are the run's stored events from version 1 on, in order; they are read once,
    one at a time, so a long run needs no more memory than one command's events.
    ``max_io_bytes`` and ``interruption_limit`` are the engine's settings the run was
    decided with (``serve --max-task-data``; three interruptions by default).
    """
    checker = _Checker(run_id, max_io_bytes, interruption_limit)
    return checker.check(events)


class _Checker:
    __slots__ = ("interruption_limit", "max_io_bytes", "run_id", "state")

    def __init__(self, run_id: str, max_io_bytes: int, interruption_limit: int) -> None:
        self.run_id = run_id
        self.max_io_bytes = max_io_bytes
        self.interruption_limit = interruption_limit
        self.state: RunState | None = None

    def check(self, events: Iterable[RunEvent]) -> ReplayReport:
        owed: deque[RunEvent] = deque()  # decided and applied, not yet matched with the log
        version = 0
        last: RunEvent | None = None
        for stored in events:
            version += 1
            last = stored
            if owed:
                found = _first_difference(owed.popleft(), stored)
                if found is not None:
                    return self._report(version, stored, *found)
                continue
            try:
                derived = self._derive(stored, version)
            except _DiffersError as e:
                return self._report(version, stored, e.field, e.stored, e.derived)
            except FlowweaverError as e:  # an operator action this code refuses
                return self._report(version, stored, None, _show(stored), f"a refusal: {e}")
            except Exception as e:  # noqa: BLE001 - the code under check failing is a finding
                return self._report(
                    version, stored, None, _show(stored), f"an error: {type(e).__name__}: {e}"
                )
            if not derived:
                return self._report(version, stored, None, _show(stored), "nothing")
            found = _first_difference(derived[0], stored)
            if found is not None:
                return self._report(version, stored, *found)
            owed.extend(derived[1:])
        if not owed and self.state is not None and last is not None:
            # Nothing may be owed at the end: a restarted engine would decide it now.
            owed.extend(commands.settle(self.state, last.timestamp, max_io_bytes=self.max_io_bytes))
        if owed:
            return self._report(version + 1, None, None, "nothing (the log ends)", _show(owed[0]))
        return ReplayReport(run_id=self.run_id, events=version)

    def _report(
        self,
        version: int,
        stored: RunEvent | None,
        field: str | None,
        stored_text: str,
        derived_text: str,
    ) -> ReplayReport:
        difference = Difference(
            run_id=self.run_id,
            version=version,
            event_type=None if stored is None else event_name(stored),
            field=field,
            stored=stored_text,
            derived=derived_text,
        )
        events = version if stored is not None else version - 1
        return ReplayReport(run_id=self.run_id, events=events, difference=difference)

    def _derive(self, stored: RunEvent, version: int) -> list[RunEvent]:
        """Return what the code decides at ``stored``: its first event stands for ``stored``.

        Raises:
            _DiffersError: the fact itself already differs (a retry time out of bounds).
            FlowweaverError: the code refuses the fact (an operator action it would not take).
        """
        if self.state is None:
            if version == 1 and isinstance(stored, RunStarted) and stored.definition.concurrency:
                # Whether it began or was queued was decided outside the run (admission):
                # the next stored event says, and is checked as a fact or a settle.
                self.state = commands.new_state(self.run_id)
                d = Decision(self.state)
                d.emit(stored)
                return d.events
            if version == 1 and isinstance(stored, RunStarted | RunForked):
                self.state, derived = commands.begin_run(
                    self.run_id, stored, max_io_bytes=self.max_io_bytes
                )
                return derived
            return []
        state = self.state
        now = stored.timestamp
        if isinstance(stored, mapping.MAP_ELEMENT_EVENTS):
            return self._element(state, stored)
        if isinstance(stored, TaskStarted):
            return commands.record_started(
                state, stored.task_id, stored.attempt, stored.worker, now
            )
        if isinstance(stored, ChildRunStarted):
            return subworkflow.record_child_started(
                state,
                stored.task_id,
                stored.attempt,
                stored.child_run_id,
                stored.workflow_id,
                stored.workflow_version,
                now,
            )
        if isinstance(stored, TaskCompleted):
            if stored.by is not None:
                return commands.complete_task(
                    state,
                    stored.task_id,
                    stored.output,
                    now,
                    by=stored.by,
                    reason=stored.reason or "",
                    max_io_bytes=self.max_io_bytes,
                )
            return self._completed(state, stored)
        if isinstance(stored, TaskFailed):
            if _publication_failure(stored):
                return commands.record_published(
                    state,
                    stored.task_id,
                    stored.attempt,
                    None,
                    0.0,
                    now,
                    failure=stored.error,
                    max_io_bytes=self.max_io_bytes,
                    logs=stored.logs,
                )
            return self._failed(state, stored)
        if isinstance(stored, TaskRetried):
            if stored.by is not None:
                return commands.retry_task(
                    state, stored.task_id, now, by=stored.by, reason=stored.reason or ""
                )
            return commands.record_retry_due(state, stored.task_id, stored.attempt - 1, now)
        if isinstance(stored, TaskSkipped) and stored.by is not None:
            return commands.skip_task(
                state, stored.task_id, now, by=stored.by, reason=stored.reason
            )
        if isinstance(stored, RunQueued):
            d = Decision(state)
            d.emit(stored)
            return d.events
        if isinstance(stored, RunDequeued):
            return dequeue_run(state, now, max_io_bytes=self.max_io_bytes)
        if isinstance(stored, SignalReceived):
            return signals.receive_signal(
                state,
                stored.name,
                stored.payload,
                now,
                by=stored.by,
                max_io_bytes=self.max_io_bytes,
            )
        if isinstance(stored, RunCancelRequested):
            return commands.request_cancel(state, stored.reason, now, by=stored.by)
        if isinstance(stored, RunPaused) and stored.by != ENGINE_PRINCIPAL:
            return commands.pause_run(state, now, by=stored.by, reason=stored.reason)
        if isinstance(stored, RunResumed):
            return commands.resume_run(
                state, now, by=stored.by, reason=stored.reason, max_io_bytes=self.max_io_bytes
            )
        # A decision with no fact before it: what an engine owes the run as it (re)starts.
        return commands.settle(state, now, max_io_bytes=self.max_io_bytes)

    def _completed(self, state: RunState, stored: TaskCompleted) -> list[RunEvent]:
        """A handler's outcome: run the command itself when the stored output shows the raw
        result (a task without ``outputs`` publishes ``{"result": ...}``), else apply the
        published output and derive what follows it."""
        task = state.tasks.get(stored.task_id)
        if task is None:
            return []
        output = stored.output
        if not state.spec.task(stored.task_id).outputs:
            whole = isinstance(output, dict) and len(output) == 1 and "result" in output
            return commands.record_completed(
                state,
                stored.task_id,
                stored.attempt,
                output["result"] if whole else output,
                stored.duration_ms,
                stored.timestamp,
                max_io_bytes=self.max_io_bytes,
                logs=stored.logs,
            )
        return commands.record_published(
            state,
            stored.task_id,
            stored.attempt,
            output,
            stored.duration_ms,
            stored.timestamp,
            max_io_bytes=self.max_io_bytes,
            logs=stored.logs,
        )

    def _failed(self, state: RunState, stored: TaskFailed) -> list[RunEvent]:
        """A failed attempt: decide its TaskFailed again from the error as reported; the
        stored retry time stands when it lies within the policy's jitter bounds."""

        def decide(jitter: float) -> TaskFailed | None:
            return commands.failure_event(
                state,
                stored.task_id,
                stored.attempt,
                commands.reported_error(stored.error),
                stored.timestamp,
                jitter_sample=jitter,
                interruption_limit=self.interruption_limit,
                logs=stored.logs,
            )

        expected = decide(0.0)
        if expected is None:
            return []
        if (expected.retry_at is None) != (stored.retry_at is None):
            derived = "no retry" if expected.retry_at is None else "a retry"
            raise _DiffersError("retryAt", _show(stored.retry_at), derived)
        if stored.retry_at is not None:
            earliest, latest = decide(-1.0), decide(1.0)
            low = earliest.retry_at if earliest is not None else None
            high = latest.retry_at if latest is not None else None
            if low is None or high is None or not low <= stored.retry_at <= high:
                bounds = f"a time from {_show(low)} to {_show(high)}"
                raise _DiffersError("retryAt", _show(stored.retry_at), bounds)
            expected = msgspec.structs.replace(expected, retry_at=stored.retry_at)
        found = _first_difference(expected, stored)
        if found is not None:
            raise _DiffersError(*found)
        d = Decision(state)
        d.emit(stored)
        commands.follow_outcome(d, stored, max_io_bytes=self.max_io_bytes)
        return d.events

    def _element(self, state: RunState, stored: mapping.MapElementEvent) -> list[RunEvent]:
        """A map element's fact: the same commands as a task's, under the element's key."""
        key = mapping.element_key(stored.task_id, stored.index)
        now = stored.timestamp
        if isinstance(stored, MapElementStarted):
            return commands.record_started(state, key, stored.attempt, stored.worker, now)
        if isinstance(stored, MapElementCompleted):
            return commands.record_completed(
                state,
                key,
                stored.attempt,
                stored.result,
                stored.duration_ms,
                now,
                max_io_bytes=self.max_io_bytes,
                logs=stored.logs,
            )
        if isinstance(stored, MapElementRetried):
            return commands.record_retry_due(state, key, stored.attempt - 1, now)

        def decide(jitter: float) -> MapElementFailed | None:
            return mapping.element_failure_event(
                state,
                stored.task_id,
                stored.index,
                stored.attempt,
                commands.reported_error(stored.error),
                now,
                jitter_sample=jitter,
                interruption_limit=self.interruption_limit,
                logs=stored.logs,
            )

        expected = decide(0.0)
        if expected is None:
            return []
        if (expected.retry_at is None) != (stored.retry_at is None):
            derived = "no retry" if expected.retry_at is None else "a retry"
            raise _DiffersError("retryAt", _show(stored.retry_at), derived)
        if stored.retry_at is not None:
            earliest, latest = decide(-1.0), decide(1.0)
            low = earliest.retry_at if earliest is not None else None
            high = latest.retry_at if latest is not None else None
            if low is None or high is None or not low <= stored.retry_at <= high:
                bounds = f"a time from {_show(low)} to {_show(high)}"
                raise _DiffersError("retryAt", _show(stored.retry_at), bounds)
            expected = msgspec.structs.replace(expected, retry_at=stored.retry_at)
        found = _first_difference(expected, stored)
        if found is not None:
            raise _DiffersError(*found)
        d = Decision(state)
        d.emit(stored)
        mapping.follow_element(d, stored.task_id, now, self.max_io_bytes)
        return d.events


def _publication_failure(stored: TaskFailed) -> bool:
    """Say whether a failure reads as one decided while publishing a result.

    A handler may raise an exception named OutputError too; one that has a traceback, may
    be retried or is retried is the handler's.
    """
    error = stored.error
    return (
        error.type in PUBLICATION_ERRORS
        and error.traceback is None
        and not error.retryable
        and stored.retry_at is None
    )


def _first_difference(derived: Event, stored: Event) -> tuple[str | None, str, str] | None:
    """Return (field, stored, derived) for the first field where the events differ, or None."""
    if derived is stored or derived == stored:
        return None
    if type(derived) is not type(stored):
        return None, _show(stored), _show(derived)
    path = _field_path(derived, stored)
    if path is None:  # equal field by field: only a float's spelling, say; nothing to report
        return None
    name, stored_value, derived_value = path
    return name, _show(stored_value), _show(derived_value)


def _field_path(derived: Any, stored: Any) -> tuple[str, Any, Any] | None:
    for info in msgspec.structs.fields(derived):
        ours, theirs = getattr(derived, info.name), getattr(stored, info.name)
        if ours == theirs:
            continue
        if isinstance(ours, msgspec.Struct) and type(ours) is type(theirs):
            inner = _field_path(ours, theirs)
            if inner is not None:
                return f"{info.encode_name}.{inner[0]}", inner[1], inner[2]
        return info.encode_name, theirs, ours
    return None


def _show(value: Any) -> str:
    """Return ``value`` as compact JSON, cut to MAX_SHOWN_CHARS."""
    try:
        text = _encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 3] + "..."
    return text


__all__ = ["EVENT_KINDS", "Difference", "ReplayReport", "check_run"]
