"""The engine: the embedded Python API, a facade over the parts it composes.

It builds the group committer (writer.py), the timers, the worker pool (pool.py), the
supervisor of run actors (supervisor.py) and the services every run actor shares
(run_actor.RunServices). Writers are actors; readers (``get_run``, ``wait_run_finished``)
read the store.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from flowweaver.domain import run as commands
from flowweaver.domain import subworkflow
from flowweaver.domain.concurrency import MAX_PRIORITY, MIN_PRIORITY
from flowweaver.domain.events import ENGINE_PRINCIPAL, ParentTask, RunEvent, RunForked, RunStarted
from flowweaver.domain.ids import (
    ID_PATTERN,
    canonical_run_id,
    fork_request_hash,
    is_ident,
    request_hash,
    run_id_for_fork_key,
    run_id_for_key,
)
from flowweaver.domain.run import (
    DEFAULT_INTERRUPTION_LIMIT,
    DEFAULT_MAX_TASK_IO_BYTES,
    RunState,
)
from flowweaver.domain.spec import (
    OnTaskFailure,
    WorkflowSpec,
    decode_workflow,
    handler_names,
    workflow_from_builtins,
)
from flowweaver.engine.actions import DEFAULT_ACTION_TIMEOUT_S, ActionRouter
from flowweaver.engine.admission import SWEEP_INTERVAL_S, Admission
from flowweaver.engine.children import DEFAULT_POLL_INTERVAL_S, ChildRuns, Started
from flowweaver.engine.dispatch import DEFAULT_ACTOR_THREADS, Dispatcher, turn_here
from flowweaver.engine.lineage import Lineage, read_lineage
from flowweaver.engine.operator import (
    ANONYMOUS,
    MAX_PRINCIPAL_CHARS,
    MAX_REASON_CHARS,
    OperatorAction,
)
from flowweaver.engine.pool import WorkerPool
from flowweaver.engine.run_actor import RunServices, reserve_workers
from flowweaver.engine.stamps import stamp_time
from flowweaver.engine.supervisor import Supervisor
from flowweaver.engine.timers import Timers
from flowweaver.engine.tracing import load_tracing, valid_traceparent
from flowweaver.engine.writer import GroupCommitter
from flowweaver.errors import (
    ConcurrencyError,
    EngineClosedError,
    FieldError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from flowweaver.handlers import HandlerRegistry, default_registry
from flowweaver.observability import metrics
from flowweaver.ports import (
    Append,
    Clock,
    EventStore,
    LeaseProvider,
    Leases,
    LocalLeases,
    SystemClock,
)
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL

log = structlog.get_logger("flowweaver.engine")

MAX_KEY_LENGTH = 256
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class RunHandle:
    """The answer to a start request: the run, and whether this request created it."""

    run_id: str
    created: bool
    state: RunState


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
        admission_sweep_interval: float = SWEEP_INTERVAL_S,
        child_poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        tracer_provider: Any = None,
        actor_threads: int = DEFAULT_ACTOR_THREADS,
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
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        if leases is None:
            try:  # a SQLite store refuses a second engine here (StoreLockedError)
                leases = (
                    store.open_leases(self.node)
                    if isinstance(store, LeaseProvider)
                    else LocalLeases()
                )
            except BaseException:
                if owns_store:
                    store.close()
                raise
        self.leases: Leases = leases
        self.supervisor = Supervisor(store, leases, takeover_interval=takeover_interval)
        self.timers = Timers()
        self.pool = WorkerPool(
            workers, self.handlers, self.supervisor, self.timers, self._event_loop, node=self.node
        )
        # None without the otel extra; a provider of None means OpenTelemetry's global one.
        self.tracing = load_tracing(store, tracer_provider)
        self.pool.tracing = self.tracing
        # The run actors' threads: a run actor owns none (engine/dispatch.py).
        self.dispatcher = Dispatcher(actor_threads)
        self.services = RunServices(
            store=store,
            dispatcher=self.dispatcher,
            writer=GroupCommitter(store),
            pool=self.pool,
            timers=self.timers,
            clock=self.clock,
            holds=leases.holds,
            interruption_limit=interruption_limit,
            snapshot_interval=snapshot_interval,
            max_task_io_bytes=max_task_io_bytes,
            tracing=self.tracing,
        )
        self.children = ChildRuns(
            start=self._start_child,
            cancel=self._cancel_child,
            read=store.run_state,
            deliver=self.supervisor.deliver,
            is_live=self.supervisor.is_live,
            poll_interval=child_poll_interval,
        )
        self.services.children = self.children
        self.supervisor.add_finish_listener(self.children.run_finished)
        self.supervisor.start(self.services, recover=recover)
        try:
            self.actions = ActionRouter(
                store,
                self.supervisor,
                leases,
                self.clock,
                node=self.node,
                max_io_bytes=max_task_io_bytes,
            )
        except BaseException:
            self.close(grace=0)
            raise
        self.admission = Admission(
            store,
            self._append,  # not writer.append: a benchmark swaps the writer
            self.supervisor.spawn,
            self.leases,
            self.clock,
            max_io_bytes=max_task_io_bytes,
            sweep_interval=admission_sweep_interval,
        )
        self.supervisor.add_finish_listener(self.admission.run_ended)

    def _append(self, append: Append) -> None:
        self.writer.append(append)

    @property
    def writer(self) -> GroupCommitter:
        """The group committer every append of this engine goes through."""
        return self.services.writer

    @writer.setter
    def writer(self, writer: GroupCommitter) -> None:
        self.services.writer = writer  # a benchmark measures appends without group commit

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

        Registering a definition identical to the latest version records nothing. Every
        workflow a task runs as a sub-workflow must be registered, and none may lead back
        to this one (a sub-workflow cycle).

        Raises:
            ValidationError: the definition breaks a rule; each error names its JSON path.
        """
        spec = _as_spec(definition)
        problems = subworkflow.check_child_workflows(spec, self._latest_definition)
        if problems:
            raise ValidationError(problems)
        return self.store.register_workflow(spec, self.clock.now())

    def _latest_definition(self, workflow_id: str) -> WorkflowSpec | None:
        try:
            return self.store.get_workflow(workflow_id).definition
        except NotFoundError:
            return None

    # --- runs ----------------------------------------------------------------------------

    def start_run(
        self,
        workflow_id: str,
        *,
        parameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        version: int | None = None,
        submitted_by: str | None = None,
        on_task_failure: OnTaskFailure | None = None,
        priority: int = 0,
        parent: ParentTask | None = None,
        traceparent: str | None = None,
    ) -> RunHandle:
        """Start a run of a workflow (its latest version unless ``version`` is given).

        With an idempotency key the run id is derived from it: the same key and request
        return the existing run (``created`` False). ``on_task_failure`` ("fail" or "pause")
        overrides the workflow's ``onTaskFailure``: with "pause" a task that fails for good
        pauses the run for an operator instead of failing it. ``parent`` is set by the
        engine for the child run of a sub-workflow task.

        ``traceparent`` (W3C; ignored when malformed, taken from the caller's active span
        when None and tracing is on) is recorded as the parent of the run's trace spans.

        ``priority`` (higher first, from -1,000,000 to 1,000,000) orders the run among the
        queued runs of a workflow with a concurrency limit, and its ready tasks before other
        runs' for free workers. A run over its workflow's limit is stored queued (its state's
        status is ``queued``) and begins when a slot frees.

        Raises:
            NotFoundError: no such workflow or version.
            ValidationError: parameters are not a JSON object, a key is malformed, the
                priority is out of range, or a handler the workflow names is not registered here.
            IdempotencyConflictError: the key was used for a different request.
            EngineClosedError: the engine is closed.
        """
        if self.supervisor.closed:
            raise EngineClosedError("the engine is closed")
        params = _check_parameters(parameters)
        if on_task_failure not in (None, "fail", "pause"):
            raise ValidationError(
                [FieldError("$.onTaskFailure", "onTaskFailure is one of: fail, pause")]
            )
        if idempotency_key is not None:
            _check_key(idempotency_key)
        _check_priority(priority)
        registered = self.store.get_workflow(workflow_id, version)
        spec = registered.definition
        self._check_handlers(spec, handler_names(spec), "$.workflowId")
        digest = request_hash(
            workflow_id, version, params, on_task_failure=on_task_failure, priority=priority
        )
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
            on_task_failure=on_task_failure,
            max_io_bytes=self.max_task_io_bytes,
            priority=priority,
            parent=parent,
            traceparent=self._traceparent(traceparent, run_id),
        )

        def launch(state: RunState, events: list[RunEvent]) -> RunHandle:
            return self._launch(
                state,
                events,
                idempotency_key,
                digest,
                "run_queued" if state.is_queued else "run_started",
                workflow_id=workflow_id,
                version=registered.version,
            )

        if spec.concurrency is None:
            return launch(state, events)
        handle: RunHandle = self.admission.launch(state, events, launch)
        return handle

    def _start_child(
        self, workflow_id: str, inputs: dict[str, Any], key: str, parent: ParentTask
    ) -> Started:
        """Start (or find, for a repeated key) the child run of a sub-workflow task."""
        handle = self.start_run(
            workflow_id,
            parameters=inputs,
            idempotency_key=key,
            submitted_by=ENGINE_PRINCIPAL,
            parent=parent,
        )
        return Started(handle.run_id, handle.state.workflow_version, handle.state)

    def _cancel_child(self, child_run_id: str, reason: str) -> None:
        self.cancel_run(child_run_id, reason, by=ENGINE_PRINCIPAL)

    def _traceparent(self, given: str | None, run_id: str) -> str | None:
        if self.tracing is None:
            return valid_traceparent(given)
        found = self.tracing.current_traceparent() if given is None else valid_traceparent(given)
        self.tracing.expect_run(run_id, found)  # spares its span a read of RunStarted
        return found

    def fork_run(
        self,
        parent_run_id: str,
        *,
        at_version: int | None = None,
        reset: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
        reason: str = "",
        by: str = "anonymous",
        idempotency_key: str | None = None,
        on_task_failure: OnTaskFailure | None = None,
    ) -> RunHandle:
        """Start a new run from a version of another run (its last unless ``at_version``).

        ``reset`` (default: every task not completed as of that version) and everything
        downstream of it run again; every other completed task is carried with its output,
        or its override in ``outputs``, and does not run again. ``parameters`` replace the
        parent's when given. The parent, live or ended, is not changed. With an idempotency
        key the fork's id is derived from the parent's id and the key
        (:func:`~flowweaver.domain.ids.run_id_for_fork_key`): the same key and request return
        the existing fork (``created`` False).

        Raises:
            NotFoundError: no such run.
            ValidationError: ``at_version`` outside 1 to the run's version, a reset task the
                workflow lacks, an override of a task that is not carried, parameters or
                outputs that are not JSON objects, a malformed key, or a handler a task to
                run needs is not registered here.
            IdempotencyConflictError: the key was used for a different fork of this run.
            EngineClosedError: the engine is closed.
        """
        if self.supervisor.closed:
            raise EngineClosedError("the engine is closed")
        parent_id = _canonical(parent_run_id)
        params = None if parameters is None else _check_parameters(parameters)
        _check_fork_request(at_version, reset, outputs)
        if idempotency_key is not None:
            _check_key(idempotency_key)
        # A run that ended here is remembered as it ended (it never changes again): forking
        # it at its end, the usual rerun, needs no fold. Folding a 1,000-task parent from its
        # snapshot allocates enough to set off a full garbage collection every few forks.
        parent = self.supervisor.finished_state(parent_id)
        if parent is None or (at_version is not None and at_version != parent.version):
            parent = self.store.run_state(parent_id, at=at_version)
        if parent is None:
            raise NotFoundError("run", parent_id)
        if at_version is not None and parent.version < at_version:
            raise ValidationError(
                [
                    FieldError(
                        "$.atVersion",
                        f"run {parent_id} has {parent.version} events; "
                        "atVersion must be from 1 to that",
                    )
                ]
            )
        digest = fork_request_hash(parent_id, at_version, reset, params, outputs, on_task_failure)
        run_id = (
            run_id_for_fork_key(parent_id, idempotency_key)
            if idempotency_key
            else str(uuid.uuid4())
        )
        state, events = commands.fork_run(
            run_id,
            parent,
            self.clock.now(),
            reset=reset,
            parameters=params,
            outputs=outputs,
            by=by,
            reason=reason,
            idempotency_key=idempotency_key,
            request_hash=digest,
            on_task_failure=on_task_failure,
            max_io_bytes=self.max_task_io_bytes,
        )
        spec = state.spec
        rerun = set(_unfinished_task_ids(state))
        self._check_handlers(spec, handler_names(spec, rerun), "$")
        return self._launch(
            state,
            events,
            idempotency_key,
            digest,
            "run_forked",
            parent_run_id=parent_id,
            parent_version=parent.version,
            carried=len(state.tasks) - len(rerun),
        )

    def _check_handlers(self, spec: WorkflowSpec, names: Iterable[str | None], path: str) -> None:
        """Raise ValidationError at ``path`` when a handler of ``names`` is not registered."""
        missing = self.handlers.missing(names)
        if missing:
            raise ValidationError(
                [
                    FieldError(
                        path,
                        f"workflow {spec.id!r} needs handler(s) not registered here: "
                        + ", ".join(missing),
                    )
                ]
            )

    def _launch(
        self,
        state: RunState,
        events: list[RunEvent],
        key: str | None,
        digest: str,
        log_event: str,
        **log_fields: Any,
    ) -> RunHandle:
        """Store a new run's first events, log ``log_event``, and give the run an actor
        (unless it ended already).

        A repeated idempotency key loses the race at version 0 and returns the run it names.
        """
        run_id = state.id
        # Tasks it schedules start in the same append when workers are idle: their
        # TaskStarted is stored with RunStarted, and the actor hands the jobs over as it
        # starts, instead of storing TaskStarted in an append of its own first.
        reserved = (
            {}
            if state.is_terminal or state.is_queued
            else reserve_workers(state, events, self.pool, stamp_time(self.clock, state))
        )
        try:
            self.writer.append(Append(run_id, 0, events))
        except BaseException as e:
            self.pool.unreserve_all(reserved.values())
            if not isinstance(e, ConcurrencyError) or key is None:
                raise
            return self._existing_run(run_id, key, digest)
        metrics.runs_started.labels(workflow=state.workflow_id).inc()
        metrics.events_appended.inc(len(events))
        log.info(log_event, run_id=run_id, **log_fields)
        if state.is_terminal:
            # A fork with nothing to run again ended in that append: record the end as its
            # actor would (waiters, metrics, the final state) without starting a thread for it.
            self.supervisor.run_finished(run_id, state)
        elif state.is_queued:
            # No actor until a slot frees (admission.py), and no lease: the store may have
            # given this node one as it created the run, and whichever node begins the run
            # must be able to write to it.
            self.leases.release(run_id)
        else:
            # The actor decides on a state of its own, folded from the same events: the
            # handle's is the run as stored, which the caller may read (and answer a POST
            # with) while the actor moves on; it must never show decisions not yet stored.
            actor_state = commands.fold(events, commands.new_state(run_id))
            # The actor's first turn runs here: it hands the reserved workers their jobs at
            # once (it stores nothing: a new run's first append is done), rather than after
            # the first turns of every run started before it, which held those workers idle.
            with turn_here():
                self.supervisor.spawn(run_id, actor_state, reserved=reserved)
        return RunHandle(run_id=run_id, created=True, state=state)

    def _existing_run(self, run_id: str, key: str, digest: str) -> RunHandle:
        first = self.store.read_run(run_id, upto=1)
        started = first[0].event if first else None
        if not isinstance(started, RunStarted | RunForked) or started.request_hash != digest:
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

    def lineage(self, run_id: str, *, limit: int = 100, cursor: str | None = None) -> Lineage:
        """Return the run's parent (None unless it is a fork) and a page of its forks.

        Raises:
            NotFoundError: no such run.
            ValidationError: ``limit`` below 1 or a cursor the store did not issue.
        """
        return read_lineage(self.store, _canonical(run_id), limit=limit, cursor=cursor)

    def wait_run_finished(self, run_id: str, timeout: float | None = None) -> RunState:
        """Block until the run is terminal and return its final state.

        Raises:
            NotFoundError: no such run.
            TimeoutError: ``timeout`` seconds passed first.
        """
        run_id = _canonical(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self.supervisor.watch(run_id)
        try:
            while True:
                state = self.supervisor.finished_state(run_id)
                if state is None and not self.supervisor.is_live(run_id):
                    state = self.get_run(run_id)  # a live run here ends through `done`: no read
                if state is not None and state.is_terminal:
                    return state
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    status = (state or self.get_run(run_id)).status
                    raise TimeoutError(f"run {run_id} is still {status}")
                # Wake on our own actors at once; re-read now and then for other processes.
                done.wait(1.0 if remaining is None else min(remaining, 1.0))
                done.clear()
        finally:
            self.supervisor.unwatch(run_id, done)

    # --- operator actions ------------------------------------------------------------------
    #
    # Each is decided by the run's actor (on this node, or on the node that owns the run in a
    # cluster) and stored as one event that records ``by`` (at most 256 characters) and
    # ``reason`` (at most 4,096); each returns the run's state once it is stored, and stores
    # nothing when it raises.

    def cancel_run(
        self,
        run_id: str,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
        *,
        by: str = ANONYMOUS,
    ) -> RunState:
        """Ask a run that has not ended to stop (RunCancelRequested); return its state.

        Pending tasks are cancelled at once, running handlers see their context cancelled,
        and RunCancelled follows when none is running. Cancelling a run already being
        cancelled records nothing more.

        Raises:
            NotFoundError: no such run.
            InvalidCommandError: the run has ended.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        return self._act("cancel", run_id, timeout, by=by, reason=reason)

    def pause_run(
        self,
        run_id: str,
        *,
        by: str = ANONYMOUS,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Pause a running run (RunPaused): no new task starts; running attempts finish and
        are recorded, and what they make ready waits for :meth:`resume_run`.

        Raises:
            NotFoundError: no such run.
            InvalidCommandError: the run is not running (paused, being cancelled, ended).
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        return self._act("pause", run_id, timeout, by=by, reason=reason)

    def resume_run(
        self,
        run_id: str,
        *,
        by: str = ANONYMOUS,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Resume a paused run (RunResumed): what the pause held starts, retries that came
        due begin, and tasks that failed for good meanwhile skip what depends on them.

        Raises:
            NotFoundError: no such run.
            InvalidCommandError: the run is not paused.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        return self._act("resume", run_id, timeout, by=by, reason=reason)

    def retry_task(
        self,
        run_id: str,
        task_id: str,
        *,
        by: str = ANONYMOUS,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Start the next attempt of a task now (TaskRetried): one waiting for its retry, or
        one that failed in a paused run. The attempt starts even while the run is paused.

        Raises:
            NotFoundError: no such run or task.
            InvalidCommandError: the task neither waits for a retry nor failed in a paused
                run, or the run ended.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        return self._act("retry", run_id, timeout, by=by, reason=reason, task_id=task_id)

    def skip_task(
        self,
        run_id: str,
        task_id: str,
        *,
        by: str = ANONYMOUS,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Skip a task that has not completed and is not running (TaskSkipped), and what
        depends on it; a job of it waiting for a worker never runs.

        Raises:
            NotFoundError: no such run or task.
            InvalidCommandError: the task completed, runs or was skipped, or the run ended.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        return self._act("skip", run_id, timeout, by=by, reason=reason, task_id=task_id)

    def complete_task(
        self,
        run_id: str,
        task_id: str,
        output: Any,
        *,
        by: str = ANONYMOUS,
        reason: str = "",
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Complete a task that has not completed and is not running by hand, with ``output``
        as its published output (TaskCompleted, attempt 0); what it makes ready is scheduled
        unless the run is paused, and a job of it waiting for a worker never runs.

        Raises:
            NotFoundError: no such run or task.
            InvalidCommandError: the task completed or runs, or the run ended.
            ValidationError: ``output`` is not JSON or is larger than the task data limit.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        _check_output(output)
        return self._act(
            "complete", run_id, timeout, by=by, reason=reason, task_id=task_id, output=output
        )

    def send_signal(
        self,
        run_id: str,
        name: str,
        payload: Any = None,
        *,
        by: str = ANONYMOUS,
        timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    ) -> RunState:
        """Send the run the signal ``name`` (SignalReceived with ``by``): every task waiting
        for it completes with ``payload`` as its result, and one not reached yet completes
        when it is (docs/concepts.md, "Signals and waits").

        Raises:
            NotFoundError: no such run, or no task of its workflow waits for ``name``.
            InvalidCommandError: the run ended or is being cancelled, or ``name`` was received.
            ValidationError: ``name`` is no valid id, or ``payload`` is not JSON or is larger
                than the task data limit.
            RunUnavailableError: no node that owns the run answered within ``timeout``.
        """
        if not isinstance(name, str) or not is_ident(name):
            raise ValidationError(
                [FieldError("$.name", f"not a valid signal name (pattern {ID_PATTERN})")]
            )
        _check_output(payload, "$.payload")
        return self._act("signal", run_id, timeout, by=by, reason="", output=payload, signal=name)

    def _act(
        self,
        kind: Any,
        run_id: str,
        timeout: float,
        *,
        by: str,
        reason: str,
        task_id: str | None = None,
        output: Any = None,
        signal: str | None = None,
    ) -> RunState:
        if self.supervisor.closed:
            raise EngineClosedError("the engine is closed")
        if len(reason) > MAX_REASON_CHARS:
            raise ValidationError(
                [FieldError("$.reason", f"at most {MAX_REASON_CHARS} characters")]
            )
        if not by or len(by) > MAX_PRINCIPAL_CHARS:
            raise ValidationError([FieldError("$.by", f"1 to {MAX_PRINCIPAL_CHARS} characters")])
        action = OperatorAction(
            kind=kind,
            run_id=_canonical(run_id),
            by=by,
            reason=reason,
            task_id=task_id,
            output=output,
            signal=signal,
        )
        return self.actions.act(action, timeout)

    def add_finish_listener(self, listener: Callable[[str, RunState], None]) -> None:
        """Call ``listener(run_id, final state)`` on the run's thread whenever a run ends here.

        The listener must return at once and never raise (it runs on a run actor's thread).
        """
        self.supervisor.add_finish_listener(listener)

    def remove_finish_listener(self, listener: Callable[[str, RunState], None]) -> None:
        """Stop calling ``listener`` (it may still be called once, by a run ending now)."""
        self.supervisor.remove_finish_listener(listener)

    def live_runs(self) -> int:
        """Return how many run actors are alive in this process."""
        return self.supervisor.live_runs()

    def parked(self) -> dict[str, list[tuple[str, int]]]:
        """Return the attempts whose outcome is held for a run with no actor here, by run."""
        return self.supervisor.parked()

    # --- recovery ------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Replay and resume every run of the store that has not ended; return their ids."""
        return self.supervisor.recover()

    def take_over_orphans(self) -> int:
        """Resume unfinished runs no process owns, as many as there is room for (see Supervisor)."""
        return self.supervisor.take_over_orphans()

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
        if not self.supervisor.stop_starting():
            return  # closed already
        admission = getattr(self, "admission", None)  # absent when the relay failed to open
        if admission is not None:
            admission.close()
        actions = getattr(self, "actions", None)  # absent when the relay failed to open
        if actions is not None:
            actions.close()
        self.children.close()
        self.pool.close(grace)
        self.supervisor.stop_actors()
        self.dispatcher.close()
        if self.tracing is not None:
            self.tracing.close()
        self.leases.close()
        self.timers.close()
        if self._loop is not None and self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=5)
            self._loop.close()
        if self._owns_store:
            self.store.close()
        self.supervisor.wake_waiters()


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


def _unfinished_task_ids(state: RunState) -> list[str]:
    """Return the ids of a run's tasks that have not completed (a fork's tasks to run)."""
    return [t.id for t in state.tasks.values() if t.status != "completed"]


MAX_RESET = 10_000
"""The most task ids a fork request may name in ``reset`` (a workflow has no more tasks)."""


def _check_fork_request(at_version: object, reset: object, outputs: object) -> None:
    """Check the shape of a fork request's version, reset list and output overrides.

    Raises:
        ValidationError: each problem at its JSON path.
    """
    problems: list[FieldError] = []
    if at_version is not None and (
        isinstance(at_version, bool) or not isinstance(at_version, int) or at_version < 1
    ):
        problems.append(FieldError("$.atVersion", "must be a whole number from 1"))
    if reset is not None:
        if not isinstance(reset, list) or len(reset) > MAX_RESET:
            problems.append(FieldError("$.reset", f"must be a list of at most {MAX_RESET} ids"))
        else:
            problems += [
                FieldError(f"$.reset[{i}]", "must be a task id")
                for i, task_id in enumerate(reset)
                if not isinstance(task_id, str)
            ]
    if outputs is not None:
        if not isinstance(outputs, dict):
            problems.append(FieldError("$.outputs", "must be a JSON object of task ids"))
        else:
            try:
                _json.encode(outputs)
            except (TypeError, ValueError, OverflowError) as e:
                problems.append(FieldError("$.outputs", f"not JSON: {e}"))
    if problems:
        raise ValidationError(problems)


def _check_output(output: Any, path: str = "$.output") -> None:
    try:
        _json.encode(output)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValidationError([FieldError(path, f"not JSON: {e}")]) from e


def _check_priority(priority: object) -> None:
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not MIN_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise ValidationError(
            [
                FieldError(
                    "$.priority",
                    f"a priority is a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}",
                )
            ]
        )


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
