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
from flowweaver.domain.ids import canonical_run_id, request_hash, run_id_for_key
from flowweaver.domain.run import (
    DEFAULT_INTERRUPTION_LIMIT,
    DEFAULT_MAX_TASK_IO_BYTES,
    RunState,
)
from flowweaver.domain.spec import WorkflowSpec, decode_workflow, workflow_from_builtins
from flowweaver.engine.mailbox import Mailbox, refuse
from flowweaver.engine.messages import (
    CancelRequest,
    Completed,
    Dropped,
    Failed,
    Reply,
    RunInput,
    StartRequest,
)
from flowweaver.engine.pool import Job, WorkerPool
from flowweaver.engine.run_actor import RunActor
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
MAX_ACTOR_DEATHS = 5
PARKED_RETRY_S = 0.1
ACTOR_STOP_TIMEOUT_S = 5.0
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
        max_task_io_bytes: int = DEFAULT_MAX_TASK_IO_BYTES,
    ) -> None:
        self.store = store
        self.handlers = handlers if handlers is not None else default_registry
        self.clock: Clock = clock or SystemClock()
        self.interruption_limit = interruption_limit
        # A task whose resolved inputs or published output pass this (as JSON) fails.
        self.max_task_io_bytes = max_task_io_bytes
        self.snapshot_interval = snapshot_interval
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._owns_store = owns_store
        self._lock = threading.RLock()
        self._live: dict[str, _LiveRun] = {}
        self._waiters: dict[str, list[threading.Event]] = {}
        # Final states of runs that ended here lately: waiters need no replay for them.
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        # Outcomes of attempts that ran here for runs with no actor here (the lease was lost,
        # the store was down): held until a run actor of this engine stores them, or the
        # store shows the attempt was settled without them. Never silently dropped.
        self._parked: dict[str, dict[tuple[str, int], Completed | Failed]] = {}
        # Start requests of workers waiting for an answer: closing says no to them at once.
        self._starting: set[Reply] = set()
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
        if recover and self.leases.shared:
            self.take_over_orphans()  # as many as there is room for; the scan takes the rest
        elif recover:
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
            max_io_bytes=self.max_task_io_bytes,
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
        run_id = _canonical(run_id)
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
        run_id = _canonical(run_id)
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
        run_id = _canonical(run_id)
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

    def take_over_orphans(self) -> int:
        """Resume unfinished runs that no process owns, as many as this engine has room for.

        Room is the workers not busy (running or queued jobs), and at least one run per
        call, so that orphans are resumed even by nodes that are always busy. Taking
        only that much leaves the rest of a dead node's runs to the other nodes' scans and
        to a node that restarts, instead of piling them all behind the workers of the
        first node to look. Oldest runs first. Return how many runs were taken.
        """
        budget = max(1, self.pool.size - self.pool.busy())
        taken = 0
        for run_id in self.store.active_run_ids():
            if taken >= budget or self._closed:
                break
            if run_id not in self._live and self._spawn(run_id, None):
                taken += 1
        if taken:
            log.info("runs_taken_over", count=taken, budget=budget)
        return taken

    def _spawn(self, run_id: str, state: RunState | None, mailbox: Mailbox | None = None) -> bool:
        """Start an actor for ``run_id``; say whether this made the run live here."""
        with self._lock:
            if self._closed:
                return False
            live = self._live.get(run_id)
            if mailbox is not None and (live is None or live.mailbox is not mailbox):
                return False  # a replacement for an actor of a run given up here meanwhile
            if live is not None and mailbox is None:
                return False  # already live here
            if live is None and not self.leases.acquire(run_id):
                return False  # another process owns this run
            created = live is None
            if live is None:
                live = _LiveRun(mailbox=Mailbox(), ref=None)
                self._live[run_id] = live
                for outcome in self._parked.pop(run_id, {}).values():
                    live.mailbox.put(outcome)
            metrics.live_runs.set(len(self._live))
        # The spawner thread starts the actor: starting a thread waits for it to run, and the
        # caller (an API request, a dying actor) need not. Inputs that arrive meanwhile wait
        # in the mailbox; attach() drains them.
        self._spawns.put((run_id, live, state))
        return created

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
        """Called by a run actor that raised (starting or later): rebuild it by replay.

        The new actor keeps the mailbox and gets ``pending`` back. After the first death it
        starts after a growing delay; past the death limit the run is given up here: its
        inputs are refused, its lease released (another node may have better luck), and it
        leaves the live table, so nothing waits on a mailbox nobody drains.
        """
        with self._lock:
            live = self._live.get(run_id)
            if live is None or live.mailbox is not mailbox or self._closed:
                refuse(pending)
                return
            live.deaths += 1
            deaths = live.deaths
            if deaths > MAX_ACTOR_DEATHS:
                del self._live[run_id]
                metrics.live_runs.set(len(self._live))
        if deaths > MAX_ACTOR_DEATHS:
            log.error("run_actor_keeps_failing", run_id=run_id, deaths=deaths)
            self.park(run_id, list(pending) + mailbox.close())
            self.leases.release(run_id)
            return
        for item in pending:
            mailbox.put(item)
        delay = 0.0 if deaths == 1 else min(1.0, 0.02 * 2**deaths)
        self.timers.call_later(delay, lambda: self._spawn(run_id, None, mailbox))

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

    def run_lost(self, run_id: str, pending: Sequence[RunInput] = ()) -> None:
        """Called by a run actor that found another writer on its run, or lost its lease.

        Outcomes among ``pending`` and the run's mailbox are parked (see :meth:`park`).
        """
        with self._lock:
            live = self._live.pop(run_id, None)
        self.leases.release(run_id)
        self.park(run_id, list(pending) + (live.mailbox.close() if live is not None else []))
        log.warning("run_lost", run_id=run_id)

    def park(self, run_id: str, items: Sequence[RunInput]) -> None:
        """Hold the outcomes among ``items`` for the run's next actor here; refuse the rest.

        A worker's outcome is a handler's work done: losing it runs the handler again. So
        an outcome that cannot reach a run actor now (leases lost, the store down, the actor
        gone) waits here. The takeover loop tries to own the run again at once and often;
        when it does, the new actor finds the outcomes in its mailbox and counts their
        attempts as alive, so none is recorded as Interrupted. When the store shows that
        the attempt was settled meanwhile (another node took the run and interrupted it, or
        the run ended), the outcome is dropped with a warning. A closing engine drops them:
        the next one records those attempts as Interrupted.
        """
        refused: list[RunInput] = []
        with self._lock:
            for item in items:
                if isinstance(item, Completed | Failed) and not self._closed:
                    held = self._parked.setdefault(run_id, {})
                    held[item.task_id, item.attempt] = item
                    log.warning(
                        "outcome_parked", run_id=run_id, task_id=item.task_id, attempt=item.attempt
                    )
                else:
                    refused.append(item)
        refuse(refused)

    def unpark(self, run_id: str, mailbox: Mailbox) -> None:
        """Move the outcomes parked for ``run_id`` into its live mailbox."""
        with self._lock:
            held = self._parked.pop(run_id, {})
        for outcome in held.values():
            if not mailbox.put(outcome):
                self.park(run_id, [outcome])

    def parked(self) -> dict[str, list[tuple[str, int]]]:
        """Return the attempts whose outcome is parked, by run."""
        with self._lock:
            return {run_id: list(held) for run_id, held in self._parked.items()}

    def _leases_lost(self) -> None:
        """Every lease lapsed (the lease connection died): stop every run actor here.

        Other processes may own those runs now; the takeover scan takes back whatever
        nobody owns once leases can be had again. Outcomes waiting in the mailboxes are
        parked, and their runs are the first this engine tries to own again.
        """
        with self._lock:
            lives = list(self._live.items())
            self._live.clear()
        for run_id, live in lives:
            self.park(run_id, live.mailbox.close())
            if live.ref is not None:
                live.ref.stop(block=False)
            log.warning("run_lease_lost", run_id=run_id)

    def _takeover_loop(self) -> None:
        """Now and then, resume unfinished runs that no process owns (see take_over_orphans).

        While outcomes are parked, their runs are tried every PARKED_RETRY_S: the engine
        holding a handler's result should be the one that owns its run next.
        """
        next_scan = time.monotonic() + self.takeover_interval
        while True:
            wait = max(0.0, next_scan - time.monotonic())
            if self._parked:
                wait = min(wait, PARKED_RETRY_S)
            if self._stop_takeover.wait(wait):
                return
            scan = time.monotonic() >= next_scan
            try:
                self._reclaim_parked(check_store=scan)
                if scan:
                    self.take_over_orphans()
            except FlowweaverError as e:
                log.warning("takeover_scan_failed", error=str(e))
            except Exception:  # a bug must not end the scan for the life of the process
                log.exception("takeover_scan_crashed")
            if scan:
                next_scan = time.monotonic() + self.takeover_interval

    def _reclaim_parked(self, *, check_store: bool) -> None:
        """Own again the runs of parked outcomes; drop those the store shows were settled."""
        for run_id in list(self._parked):
            if self._closed:
                return
            live = self._live.get(run_id)
            if live is None:
                self._spawn(run_id, None)  # takes the parked outcomes along when it owns it
                live = self._live.get(run_id)
            if live is not None:
                self.unpark(run_id, live.mailbox)
            elif check_store:
                self._drop_settled(run_id)

    def _drop_settled(self, run_id: str) -> None:
        """Drop parked outcomes whose attempt is no longer running in the store."""
        state = self.store.run_state(run_id)
        with self._lock:
            held = self._parked.get(run_id, {})
            for (task_id, attempt), outcome in list(held.items()):
                task = state.tasks.get(task_id) if state is not None else None
                if (
                    state is not None
                    and not state.is_terminal
                    and task is not None
                    and task.status == "running"
                    and task.attempts == attempt
                ):
                    continue  # still undecided: whoever owns the run may yet be us
                del held[task_id, attempt]
                log.warning(
                    "outcome_dropped",
                    run_id=run_id,
                    task_id=task_id,
                    attempt=attempt,
                    outcome=type(outcome).__name__,
                    reason="the attempt was settled without it (another node owns the run)",
                )
            if not held:
                self._parked.pop(run_id, None)

    def _deliver(self, run_id: str, item: RunInput) -> None:
        live = self._live.get(run_id)  # a dict read is atomic; writers hold the lock
        if live is not None and live.mailbox.put(item):
            return
        if live is None and not self._closed:
            try:
                state = self.store.run_state(run_id)
            except FlowweaverError as e:  # the store is down: park an outcome, refuse the rest
                log.warning("deliver_failed", run_id=run_id, error=str(e))
                state = None
            if state is not None and state.is_terminal:
                if isinstance(item, Completed | Failed):
                    log.warning(
                        "outcome_dropped",
                        run_id=run_id,
                        task_id=item.task_id,
                        attempt=item.attempt,
                        outcome=type(item).__name__,
                        reason="the run ended without it",
                    )
                refuse([item])
                return
            if state is not None:
                self._spawn(run_id, None)
        with self._lock:
            live = self._live.get(run_id)
            if live is not None and live.mailbox.put(item):
                return
            ended_here = run_id in self._finished
        if self.leases.shared and not ended_here:
            self.park(run_id, [item])  # the takeover loop brings it back to its run
        else:
            refuse([item])

    # --- the pool's router -----------------------------------------------------------------

    def request_start(self, job: Job, worker: str) -> bool:
        reply = Reply()
        with self._lock:
            if self._closed:
                return False
            self._starting.add(reply)
        try:
            self._deliver(job.run_id, StartRequest(job.task_id, job.attempt, worker, reply))
            answer = reply.wait(START_REPLY_TIMEOUT_S)
        finally:
            with self._lock:
                self._starting.discard(reply)
        if answer is None:
            reply.set(False)  # an answer given later changes nothing: the job is dropped
            log.warning("start_request_unanswered", run_id=job.run_id, task_id=job.task_id)
            return False
        return answer

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

        No new attempt starts once closing begins: workers waiting to start one are told
        no at once, so a failing store (whose actors cannot record TaskStarted) does not
        hold the close for the grace period. Unfinished runs stay in the store and resume
        when an engine opens it again.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting, self._starting = list(self._starting), set()
        for reply in waiting:
            reply.set(False)
        self._stop_takeover.set()
        if self._takeover is not None:
            self._takeover.join(timeout=10)
        self._spawns.put(None)
        self._spawner_thread.join(timeout=10)
        self.pool.close(grace)
        with self._lock:
            lives = list(self._live.values())
            self._live.clear()
        # Each actor stops after the wake-ups already in its inbox: the outcomes of handlers
        # that finished within the grace period are stored first (or, with the store down,
        # tried once). All together, not one after another: an actor inside an append to a
        # store that hangs holds its stop for the store's own timeout.
        refs = [live.ref for live in lives if live.ref is not None]
        deadline = time.monotonic() + ACTOR_STOP_TIMEOUT_S
        for ref in refs:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)
        for ref in refs:
            if not ref.actor_stopped.wait(max(0.0, deadline - time.monotonic())):
                log.warning("run_actor_still_busy_at_close", actor=str(ref))
        for live in lives:
            refuse(live.mailbox.close())
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


def _canonical(run_id: str) -> str:
    """Return the run id as runs are keyed (any spelling of the UUID names the same run).

    Raises:
        NotFoundError: it is no UUID, so no run has it.
    """
    canonical = canonical_run_id(run_id) if isinstance(run_id, str) else None
    if canonical is None:
        raise NotFoundError("run", str(run_id)[:80])
    return canonical


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
