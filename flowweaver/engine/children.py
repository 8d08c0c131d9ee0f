"""Child runs of sub-workflow tasks: starting them, following them to their end, cancelling.

One thread per engine does the work, so a run actor never blocks on another run: actors
ask (:meth:`ChildRuns.launch`, :meth:`ChildRuns.watch`, :meth:`ChildRuns.cancel`) and
return at once. Everything this module does is safe to repeat, which is what makes it
robust to a kill -9 at any point:

- Launch: the child's run id comes from its idempotency key (``parent:<run>:<task>:<attempt>``),
  so starting it again after a restart returns the same child; the parent then records
  ChildRunStarted (a duplicate is stale and ignored).
- End: a child that ends in this process is heard at once (the supervisor's finish
  listener); any other (owned by another node, or ended while nobody owned the parent) is
  found by reading the store every ``poll_interval`` seconds. The outcome goes to the parent's
  mailbox as a worker's would (Completed with the child's published outputs, or Failed).
  A parent actor that starts (after a restart or a takeover) watches its running children
  again, and each new watch is read at once.
- Cancel: asked through the engine (relayed to the child's owner in a cluster), tried
  again at each poll until the child is cancelled or has ended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from flowweaver.domain import subworkflow
from flowweaver.domain.events import ParentTask
from flowweaver.domain.ids import run_id_for_key
from flowweaver.domain.run import RunState
from flowweaver.engine import faults
from flowweaver.engine.messages import ChildStarted, Completed, Failed, RunInput
from flowweaver.errors import (
    EngineClosedError,
    FlowweaverError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    ValidationError,
)

log = structlog.get_logger("flowweaver.children")

DEFAULT_POLL_INTERVAL_S = 1.0
"""How often children that do not run in this process are read from the store."""
RETRY_S = 0.5
"""The pause before a launch or a cancel that met a store or relay failure is tried again."""


class ChildLauncher(Protocol):
    """What a run actor asks of the engine's child runs (see :class:`ChildRuns`)."""

    def launch(
        self,
        parent: ParentTask,
        workflow_id: str,
        inputs: dict[str, Any],
    ) -> None:
        """Start (or find) the child run of one attempt; tell the parent ChildStarted."""
        ...

    def watch(self, parent: ParentTask, child_run_id: str) -> None:
        """Tell the parent the outcome of the child once it ends."""
        ...

    def cancel(self, child_run_id: str, reason: str) -> None:
        """Ask the child run to stop."""
        ...


class NoChildren:
    """The launcher of run actors built without an engine (tests): every call is refused."""

    def launch(self, parent: ParentTask, workflow_id: str, inputs: dict[str, Any]) -> None:
        raise RuntimeError("no child runs here")

    def watch(self, parent: ParentTask, child_run_id: str) -> None:
        raise RuntimeError("no child runs here")

    def cancel(self, child_run_id: str, reason: str) -> None:
        raise RuntimeError("no child runs here")


@dataclass(frozen=True, slots=True)
class _Launch:
    parent: ParentTask
    workflow_id: str
    inputs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Watch:
    parent: ParentTask
    child_run_id: str


@dataclass(frozen=True, slots=True)
class _Cancel:
    child_run_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Ended:
    child_run_id: str
    state: RunState


_Command = _Launch | _Watch | _Cancel | _Ended


@dataclass(frozen=True, slots=True)
class Started:
    """What starting a child run answers: its id and the workflow version it pinned."""

    run_id: str
    workflow_version: int
    state: RunState


class ChildRuns:
    """Starts, follows and cancels the child runs of one engine's sub-workflow tasks."""

    def __init__(
        self,
        *,
        start: Callable[[str, dict[str, Any], str, ParentTask], Started],
        cancel: Callable[[str, str], None],
        read: Callable[[str], RunState | None],
        deliver: Callable[[str, RunInput], None],
        is_live: Callable[[str], bool],
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self._start = start
        self._cancel = cancel
        self._read = read
        self._deliver = deliver
        self._is_live = is_live
        self.poll_interval = poll_interval
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._watched: dict[str, ParentTask] = {}  # child run id -> the attempt it serves
        self._later: list[tuple[float, _Launch | _Cancel]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flowweaver-children", daemon=True)
        self._thread.start()

    # --- asked by run actors and the supervisor (any thread, never blocks) ----------------

    def launch(self, parent: ParentTask, workflow_id: str, inputs: dict[str, Any]) -> None:
        """Start (or find) the child run of one attempt; tell the parent ChildStarted."""
        self._queue.put(_Launch(parent, workflow_id, inputs))

    def watch(self, parent: ParentTask, child_run_id: str) -> None:
        """Tell the parent the outcome of the child once it ends (at once if it has)."""
        self._queue.put(_Watch(parent, child_run_id))

    def cancel(self, child_run_id: str, reason: str) -> None:
        """Ask the child run to stop; its end reaches the parent as a failure."""
        self._queue.put(_Cancel(child_run_id, reason))

    def run_finished(self, run_id: str, state: RunState) -> None:
        """A run ended in this process (the supervisor's finish listener)."""
        if state.parent_task_id is not None:
            self._queue.put(_Ended(run_id, state))

    def watched(self) -> dict[str, ParentTask]:
        """Return the children followed here, by child run id (a copy)."""
        return dict(self._watched)

    def close(self) -> None:
        """Stop the thread; what it was asked and has not done is done by the next engine."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    # --- the thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        next_poll = time.monotonic() + self.poll_interval
        while not self._closed.is_set():
            now = time.monotonic()
            wake = min([next_poll, *(due for due, _ in self._later)])
            try:
                command = self._queue.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                command = None
            if self._closed.is_set():
                return
            try:
                if command is not None:
                    self._do(command)
                now = time.monotonic()
                if self._later and min(due for due, _ in self._later) <= now:
                    due_now = [c for due, c in self._later if due <= now]
                    self._later = [(due, c) for due, c in self._later if due > now]
                    for again in due_now:
                        self._do(again)
                if now >= next_poll:
                    self._poll()
                    next_poll = time.monotonic() + self.poll_interval
            except Exception:  # a bug must not end the thread for the life of the engine
                log.exception("child_runs_failed")

    def _do(self, command: _Command) -> None:
        if isinstance(command, _Launch):
            self._launch(command)
        elif isinstance(command, _Watch):
            self._watched[command.child_run_id] = command.parent
            self._check(command.child_run_id, None)
        elif isinstance(command, _Cancel):
            self._cancel_child(command)
        else:
            self._check(command.child_run_id, command.state)

    def _launch(self, launch: _Launch) -> None:
        parent = launch.parent
        if parent.depth > subworkflow.MAX_DEPTH:
            why = f"sub-workflows nest more than {subworkflow.MAX_DEPTH} levels deep"
            self._fail(parent, subworkflow.not_started_error(launch.workflow_id, why))
            return
        key = subworkflow.child_key(parent.run_id, parent.task_id, parent.attempt)
        child_id = run_id_for_key(launch.workflow_id, key)
        # Watched before it starts: a child that ends at once is not missed.
        self._watched[child_id] = parent
        try:
            started = self._start(launch.workflow_id, launch.inputs, key, parent)
        except (NotFoundError, ValidationError, IdempotencyConflictError) as e:
            self._watched.pop(child_id, None)
            self._fail(parent, subworkflow.not_started_error(launch.workflow_id, str(e)))
            return
        except EngineClosedError:
            self._watched.pop(child_id, None)
            return
        except FlowweaverError as e:  # the store is down: try again
            log.warning("child_start_failed", run_id=parent.run_id, error=str(e))
            self._later.append((time.monotonic() + RETRY_S, launch))
            return
        faults.hit("child_started")
        log.info(
            "child_run_started",
            run_id=parent.run_id,
            task_id=parent.task_id,
            attempt=parent.attempt,
            child_run_id=started.run_id,
        )
        self._deliver(
            parent.run_id,
            ChildStarted(
                parent.task_id,
                parent.attempt,
                started.run_id,
                launch.workflow_id,
                started.workflow_version,
            ),
        )
        if started.state.is_terminal:
            self._check(started.run_id, started.state)

    def _fail(self, parent: ParentTask, error: Any) -> None:
        self._deliver(parent.run_id, Failed(parent.task_id, parent.attempt, error))

    def _check(self, child_run_id: str, state: RunState | None) -> None:
        """Tell the parent the child's outcome when it has ended; keep watching otherwise."""
        parent = self._watched.get(child_run_id)
        if parent is None:
            return
        if state is None:
            try:
                state = self._read(child_run_id)
            except FlowweaverError as e:
                log.warning("child_read_failed", child_run_id=child_run_id, error=str(e))
                return
        if state is None or not state.is_terminal:
            return
        del self._watched[child_run_id]
        outcome: Completed | Failed
        if state.status == "completed":
            duration = 0.0
            if state.created_at is not None and state.updated_at is not None:
                duration = (state.updated_at - state.created_at).total_seconds() * 1000
            outcome = Completed(
                parent.task_id, parent.attempt, subworkflow.child_result(state), duration
            )
        else:
            outcome = Failed(parent.task_id, parent.attempt, subworkflow.child_error(state))
        if not self._is_live(parent.run_id):
            # Its owner (another node, or the next actor here) watches the child itself.
            return
        self._deliver(parent.run_id, outcome)

    def _poll(self) -> None:
        for child_run_id in list(self._watched):
            if not self._is_live(child_run_id):  # a child live here is heard when it ends
                self._check(child_run_id, None)

    def _cancel_child(self, command: _Cancel) -> None:
        try:
            self._cancel(command.child_run_id, command.reason)
        except (InvalidCommandError, NotFoundError):
            return  # it has ended, or is being cancelled already
        except EngineClosedError:
            return
        except FlowweaverError as e:  # its owner did not answer in time: try again
            log.warning("child_cancel_failed", child_run_id=command.child_run_id, error=str(e))
            self._later.append((time.monotonic() + RETRY_S, command))
