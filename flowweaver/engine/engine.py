"""The engine: the embedded Python API, and the supervisor of run actors and the pool.

Writers are actors; readers (``get_run``, ``wait_run_finished``) read the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pykka
import structlog

from flowweaver.domain import run as commands
from flowweaver.domain.events import RunStarted
from flowweaver.domain.ids import request_hash, run_id_for_key
from flowweaver.domain.run import DEFAULT_INTERRUPTION_LIMIT, RunState
from flowweaver.domain.spec import WorkflowSpec, decode_workflow, workflow_from_builtins
from flowweaver.engine.messages import (
    CancelRequest,
    Completed,
    Dropped,
    Failed,
    RunInput,
    StartRequest,
)
from flowweaver.engine.pool import Job, WorkerPool
from flowweaver.engine.run_actor import Mailbox, RunActor, refuse
from flowweaver.engine.timers import Timers
from flowweaver.engine.writer import GroupCommitter
from flowweaver.errors import (
    ConcurrencyError,
    EngineClosedError,
    FieldError,
    FlowweaverError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    ValidationError,
)
from flowweaver.handlers import HandlerRegistry, default_registry
from flowweaver.observability import metrics
from flowweaver.ports import Append, Clock, EventStore, Leases, LocalLeases, SystemClock
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL

log = structlog.get_logger("flowweaver.engine")

MAX_KEY_LENGTH = 256
START_REPLY_TIMEOUT_S = 60.0
FINISHED_CACHE = 4096
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class RunHandle:
    """The answer to a start request: the run, and whether this request created it."""

    run_id: str
    created: bool
    state: RunState


@dataclass
class _LiveRun:
    mailbox: Mailbox
    ref: pykka.ActorRef[Any] | None
    deaths: int = 0


class Engine:
    """Runs workflows on an event store.

    ``Engine(store)`` recovers every unfinished run of the store at once. Close it with
    :meth:`close` (or use it as a context manager): no thread is left behind.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        handlers: HandlerRegistry | None = None,
        workers: int = 8,
        clock: Clock | None = None,
        interruption_limit: int = DEFAULT_INTERRUPTION_LIMIT,
        snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL,
        node: str | None = None,
        owns_store: bool = False,
        recover: bool = True,
        leases: Leases | None = None,
        takeover_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.handlers = handlers if handlers is not None else default_registry
        self.clock: Clock = clock or SystemClock()
        self.interruption_limit = interruption_limit
        self.snapshot_interval = snapshot_interval
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._owns_store = owns_store
        self._lock = threading.RLock()
        self._live: dict[str, _LiveRun] = {}
        self._waiters: dict[str, list[threading.Event]] = {}
        # Final states of runs that ended here lately: waiters need no replay for them.
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        if leases is None:
            opener = getattr(store, "open_leases", None)
            try:  # a SQLite store refuses a second engine here (StoreLockedError)
                leases = opener(self.node) if callable(opener) else LocalLeases()
            except BaseException:
                if owns_store:
                    store.close()
                raise
        self.leases: Leases = leases
        self.leases.on_lost(self._leases_lost)
        self.takeover_interval = takeover_interval
        self._stop_takeover = threading.Event()
        self._takeover: threading.Thread | None = None
        self._spawns: queue.SimpleQueue[tuple[str, _LiveRun, RunState | None] | None] = (
            queue.SimpleQueue()
        )
        self._spawner_thread = threading.Thread(
            target=self._spawner, name="flowweaver-spawner", daemon=True
        )
        self._spawner_thread.start()
        self.timers = Timers()
        self.writer = GroupCommitter(store)
        self.pool = WorkerPool(
            workers, self.handlers, self, self.timers, self._event_loop, node=self.node
        )
        if recover:
            self.recover()
        if self.leases.shared:
            self._takeover = threading.Thread(
                target=self._takeover_loop, name="flowweaver-takeover", daemon=True
            )
            self._takeover.start()

    @classmethod
    def open(cls, url: str, **options: Any) -> Engine:
        """Open the store at ``url`` and start an engine that closes it when it closes."""
        from flowweaver.store import open_store  # noqa: PLC0415 - engine does not need store otherwise

        return cls(open_store(url), owns_store=True, **options)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- workflows -----------------------------------------------------------------------

    def register_workflow(
        self, definition: WorkflowSpec | dict[str, Any] | bytes | str
    ) -> tuple[int, bool]:
        """Validate and record a workflow definition: (version, created).

        Registering a definition identical to the latest version records nothing.

        Raises:
            ValidationError: the definition breaks a rule; each error names its JSON path.
        """
        spec = _as_spec(definition)
        return self.store.register_workflow(spec, self.clock.now())

    # --- runs ----------------------------------------------------------------------------

    def start_run(
        self,
        workflow_id: str,
        *,
        parameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int | None = None,
        submitted_by: str | None = None,
    ) -> RunHandle:
        """Start a run of a workflow (its latest version unless ``version`` is given).

        With an idempotency key the run id is derived from it: the same key and request
        return the existing run (``created`` False).

        Raises:
            NotFoundError: no such workflow or version.
            ValidationError: parameters are not a JSON object, a key is malformed, or a
                handler the workflow names is not registered here.
            IdempotencyConflictError: the key was used for a different request.
            EngineClosedError: the engine is closed.
        """
        if self._closed:
            raise EngineClosedError("the engine is closed")
        params = _check_parameters(parameters)
        if idempotency_key is not None:
            _check_key(idempotency_key)
        registered = self.store.get_workflow(workflow_id, version)
        spec = registered.definition
        missing = self.handlers.missing(t.handler for t in spec.tasks)
        if missing:
            raise ValidationError(
                [
                    FieldError(
                        "$.workflowId",
                        f"workflow {workflow_id!r} needs handler(s) not registered here: "
                        + ", ".join(missing),
                    )
                ]
            )
        digest = request_hash(workflow_id, version, params)
        run_id = (
            run_id_for_key(workflow_id, idempotency_key) if idempotency_key else str(uuid.uuid4())
        )
        state, events = commands.start_run(
            run_id,
            spec,
            registered.version,
            params,
            self.clock.now(),
            idempotency_key=idempotency_key,
            request_hash=digest,
            submitted_by=submitted_by,
        )
        try:
            self.writer.append(Append(run_id, 0, events))
        except ConcurrencyError:
            if idempotency_key is None:
                raise
            return self._existing_run(run_id, idempotency_key, digest)
        metrics.runs_started.labels(workflow=workflow_id).inc()
        metrics.events_appended.inc(len(events))
        log.info("run_started", run_id=run_id, workflow_id=workflow_id, version=registered.version)
        self._spawn(run_id, state)
        return RunHandle(run_id=run_id, created=True, state=state)

    def _existing_run(self, run_id: str, key: str, digest: str) -> RunHandle:
        first = self.store.read_run(run_id, upto=1)
        started = first[0].event if first else None
        if not isinstance(started, RunStarted) or started.request_hash != digest:
            raise IdempotencyConflictError(run_id, key)
        state = self.store.run_state(run_id)
        assert state is not None
        return RunHandle(run_id=run_id, created=False, state=state)

    def get_run(self, run_id: str, *, at: int | None = None) -> RunState:
        """Return the run's state from the store (as of version ``at`` when given).

        Raises:
            NotFoundError: no such run.
        """
        state = self.store.run_state(run_id, at=at)
        if state is None:
            raise NotFoundError("run", run_id)
        return state

    def wait_run_finished(self, run_id: str, timeout: float | None = None) -> RunState:
        """Block until the run is terminal and return its final state.

        Raises:
            NotFoundError: no such run.
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        done = threading.Event()
        with self._lock:
            self._waiters.setdefault(run_id, []).append(done)
        try:
            while True:
                state = self._finished.get(run_id) or self.get_run(run_id)
                if state.is_terminal:
                    return state
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"run {run_id} is still {state.status}")
                # Wake on our own actors at once; re-read now and then for other processes.
                done.wait(1.0 if remaining is None else min(remaining, 1.0))
                done.clear()
        finally:
            with self._lock:
                waiters = self._waiters.get(run_id, [])
                if done in waiters:
                    waiters.remove(done)
                if not waiters:
                    self._waiters.pop(run_id, None)

    def cancel_run(self, run_id: str, reason: str = "", timeout: float = 30.0) -> None:
        """Ask a run to stop; return once the request is recorded.

        Pending tasks are cancelled at once, running handlers see their context cancelled,
        and RunCancelled follows when none is running.

        Raises:
            NotFoundError: no such run.
            InvalidCommandError: the run already ended.
        """
        state = self.get_run(run_id)
        if state.is_terminal:
            raise InvalidCommandError(run_id, f"the run already ended ({state.status})")
        reply: pykka.Future[bool] = pykka.ThreadingFuture()
        self._deliver(run_id, CancelRequest(reason, reply))
        if not reply.get(timeout=timeout):
            state = self.get_run(run_id)
            if not state.is_terminal:
                raise InvalidCommandError(run_id, "the run could not take the request")
            if state.status != "cancelled":
                raise InvalidCommandError(run_id, f"the run already ended ({state.status})")

    def live_runs(self) -> int:
        """Return how many run actors are alive in this process."""
        with self._lock:
            return len(self._live)

    # --- recovery and supervision ----------------------------------------------------------

    def recover(self) -> list[str]:
        """Replay and resume every run of the store that has not ended; return their ids."""
        run_ids = self.store.active_run_ids()
        for run_id in run_ids:
            self._spawn(run_id, None)
        if run_ids:
            log.info("runs_recovered", count=len(run_ids))
        return run_ids

    def _spawn(self, run_id: str, state: RunState | None, mailbox: Mailbox | None = None) -> None:
        with self._lock:
            if self._closed:
                return
            live = self._live.get(run_id)
            if live is not None and mailbox is None:
                return  # already live here
            if live is None and not self.leases.acquire(run_id):
                return  # another process owns this run
            if live is None:
                live = _LiveRun(mailbox=mailbox or Mailbox(), ref=None)
                self._live[run_id] = live
            metrics.live_runs.set(len(self._live))
        # The spawner thread starts the actor: starting a thread waits for it to run, and the
        # caller (an API request, a dying actor) need not. Inputs that arrive meanwhile wait
        # in the mailbox; attach() drains them.
        self._spawns.put((run_id, live, state))

    def _spawner(self) -> None:
        while True:
            item = self._spawns.get()
            if item is None:
                return
            run_id, live, state = item
            if self._closed or live.mailbox.closed:
                continue
            live.ref = RunActor.start(self, run_id, live.mailbox, state)

    def actor_died(self, run_id: str, mailbox: Mailbox, pending: Sequence[RunInput]) -> None:
        """Called by a run actor that raised: rebuild it by replay, keeping its mailbox."""
        with self._lock:
            live = self._live.get(run_id)
            if live is None or live.mailbox is not mailbox or self._closed:
                refuse(pending)
                return
            live.deaths += 1
            if live.deaths > 5:
                log.error("run_actor_keeps_failing", run_id=run_id, deaths=live.deaths)
                del self._live[run_id]
                refuse(list(pending) + mailbox.close())
                return
        for item in pending:
            mailbox.put(item)
        self._spawn(run_id, None, mailbox)

    def run_finished(self, run_id: str, state: RunState) -> None:
        """Called by a run actor when its run ended."""
        self.leases.release(run_id)
        with self._lock:
            self._live.pop(run_id, None)
            waiters = list(self._waiters.get(run_id, []))
            self._finished[run_id] = state
            if len(self._finished) > FINISHED_CACHE:
                self._finished.popitem(last=False)
            metrics.live_runs.set(len(self._live))
        metrics.runs_finished.labels(workflow=state.workflow_id, status=state.status).inc()
        log.info("run_finished", run_id=run_id, status=state.status, version=state.version)
        for done in waiters:
            done.set()

    def run_lost(self, run_id: str) -> None:
        """Called by a run actor that found another writer on its run."""
        with self._lock:
            live = self._live.pop(run_id, None)
        self.leases.release(run_id)
        if live is not None:
            refuse(live.mailbox.close())
        log.warning("run_lost", run_id=run_id)

    def _leases_lost(self) -> None:
        """Every lease lapsed (the lease connection died): stop every run actor here.

        Other processes may own those runs now; the takeover scan takes back whatever
        nobody owns once leases can be had again.
        """
        with self._lock:
            lives = list(self._live.items())
            self._live.clear()
        for run_id, live in lives:
            refuse(live.mailbox.close())
            if live.ref is not None:
                live.ref.stop(block=False)
            log.warning("run_lease_lost", run_id=run_id)

    def _takeover_loop(self) -> None:
        """Now and then, resume every unfinished run that no process owns."""
        while not self._stop_takeover.wait(self.takeover_interval):
            try:
                for run_id in self.store.active_run_ids():
                    if run_id not in self._live and not self._closed:
                        self._spawn(run_id, None)
            except FlowweaverError as e:
                log.warning("takeover_scan_failed", error=str(e))
            except Exception:  # a bug must not end the scan for the life of the process
                log.exception("takeover_scan_crashed")

    def _deliver(self, run_id: str, item: RunInput) -> None:
        live = self._live.get(run_id)  # a dict read is atomic; writers hold the lock
        if live is None and not self._closed:
            try:
                state = self.store.run_state(run_id)
            except FlowweaverError as e:  # the store is down: the run's next owner resumes it
                log.warning("deliver_failed", run_id=run_id, error=str(e))
                state = None
            if state is not None and not state.is_terminal:
                self._spawn(run_id, None)
                with self._lock:
                    live = self._live.get(run_id)
        if live is None or not live.mailbox.put(item):
            refuse([item])

    # --- the pool's router -----------------------------------------------------------------

    def request_start(self, job: Job, worker: str) -> bool:
        reply: pykka.Future[bool] = pykka.ThreadingFuture()
        self._deliver(job.run_id, StartRequest(job.task_id, job.attempt, worker, reply))
        try:
            return bool(reply.get(timeout=START_REPLY_TIMEOUT_S))
        except pykka.Timeout:
            log.warning("start_request_unanswered", run_id=job.run_id, task_id=job.task_id)
            return False

    def report(self, job: Job, outcome: Completed | Failed) -> None:
        self._deliver(job.run_id, outcome)

    def dropped(self, job: Job) -> None:
        live = self._live.get(job.run_id)
        if live is not None:
            live.mailbox.put(Dropped(job.task_id, job.attempt))

    # --- async handlers ----------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="flowweaver-async-handlers", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    # --- shutdown ------------------------------------------------------------------------

    def close(self, grace: float = 10.0) -> None:
        """Stop taking work, let running handlers finish within ``grace``, stop every thread.

        Unfinished runs stay in the store and resume when an engine opens it again.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_takeover.set()
        if self._takeover is not None:
            self._takeover.join(timeout=10)
        self._spawns.put(None)
        self._spawner_thread.join(timeout=10)
        self.pool.close(grace)
        with self._lock:
            lives = list(self._live.values())
            self._live.clear()
        for live in lives:
            refuse(live.mailbox.close())
            if live.ref is not None:
                with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
                    live.ref.stop(block=True, timeout=5)
        self.leases.close()
        self.timers.close()
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
            self._loop.close()
        if self._owns_store:
            self.store.close()
        with self._lock:
            for waiters in self._waiters.values():
                for done in waiters:
                    done.set()


def _as_spec(definition: WorkflowSpec | dict[str, Any] | bytes | str) -> WorkflowSpec:
    if isinstance(definition, WorkflowSpec):
        from flowweaver.domain.spec import validate_workflow  # noqa: PLC0415

        validate_workflow(definition)
        return definition
    if isinstance(definition, bytes | str):
        return decode_workflow(definition)
    return workflow_from_builtins(definition)


def _check_parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ValidationError([FieldError("$.parameters", "parameters must be a JSON object")])
    try:
        _json.encode(parameters)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValidationError([FieldError("$.parameters", f"not JSON: {e}")]) from e
    return parameters


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or "\n" in key:
        raise ValidationError(
            [
                FieldError(
                    "$.idempotencyKey",
                    f"an idempotency key is 1 to {MAX_KEY_LENGTH} characters without newlines",
                )
            ]
        )
