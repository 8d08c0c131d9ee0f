"""The run actor: the only writer of its run.

Inputs (free workers offered by the pool and the outcomes of attempts, timer expiries,
operator actions) arrive in a mailbox that lives outside the actor, so none is lost when an
actor dies and is rebuilt. Each wake-up drains the whole mailbox, decides on every input, and
stores all resulting events in one append; only then does it act on them (hand jobs to
workers, reply, dispatch, arm timers). A failed append gives offered workers back, keeps the
other inputs, and rebuilds the state from the store before they are tried again.

A worker's outcome that the actor holds (queued, or waiting for the store to come back) is a
handler's finished work: rebuilding the state counts its attempt as alive, so a store outage
never records it as Interrupted, and the outcome is stored once the store takes writes again.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pykka
import structlog

from flowweaver.backoff import Backoff
from flowweaver.domain import mapping, signals, subworkflow
from flowweaver.domain import run as commands
from flowweaver.domain.events import (
    MapElementFailed,
    MapElementRetried,
    ParentTask,
    RunCancelRequested,
    RunEvent,
    RunResumed,
    TaskFailed,
    TaskRetried,
    TaskScheduled,
)
from flowweaver.domain.run import RunState
from flowweaver.engine import faults, operator
from flowweaver.engine.children import ChildLauncher, NoChildren
from flowweaver.engine.dispatch import Dispatcher, PooledActor
from flowweaver.engine.mailbox import Mailbox, refuse
from flowweaver.engine.messages import (
    DRAIN,
    RETRY_APPEND,
    CancelRequest,
    ChildStarted,
    Completed,
    Failed,
    Offer,
    OperatorCommand,
    RetryDue,
    RunInput,
    WaitExpired,
)
from flowweaver.engine.pool import Job, Reservation, WorkerPool
from flowweaver.engine.stamps import stamp_time
from flowweaver.engine.timers import Timers
from flowweaver.engine.tracing import Tracing
from flowweaver.engine.writer import GroupCommitter
from flowweaver.errors import ConcurrencyError, FlowweaverError, StoreError
from flowweaver.observability import metrics
from flowweaver.ports import Append, Clock, EventStore

MAX_BACKOFF_S = 5.0
_RETRY_BACKOFF = Backoff(base=0.05, cap=MAX_BACKOFF_S)

_log = structlog.get_logger("flowweaver.run")


@dataclass(slots=True)
class RunServices:
    """What a run actor uses besides its mailbox: shared by every actor of an engine."""

    store: EventStore  # reads (replay) and snapshots; appends go through ``writer``
    writer: GroupCommitter
    pool: WorkerPool
    timers: Timers
    clock: Clock
    holds: Callable[[str], bool]  # whether this process still holds the run's lease
    interruption_limit: int
    snapshot_interval: int
    max_task_io_bytes: int
    dispatcher: Dispatcher  # the threads the run actors' turns run on
    children: ChildLauncher = field(default_factory=NoChildren)  # sub-workflow tasks' runs
    tracing: Tracing | None = None  # None: OpenTelemetry is not installed


class Supervision(Protocol):
    """The calls a run actor makes back to whoever supervises it (see engine/supervisor.py)."""

    def actor_died(self, run_id: str, mailbox: Mailbox, pending: Sequence[RunInput]) -> None:
        """The actor raised: start another on the same mailbox, handing it ``pending``."""
        ...

    def run_finished(self, run_id: str, state: RunState) -> None:
        """The run ended (``state`` is terminal and stored)."""
        ...

    def run_lost(self, run_id: str, pending: Sequence[RunInput]) -> None:
        """Another process owns the run now; the actor stops."""
        ...

    def park(self, run_id: str, items: Sequence[RunInput]) -> None:
        """Hold outcomes among ``items`` for the run's next actor; refuse the rest."""
        ...

    def run_waits(self, run_id: str, mailbox: Mailbox) -> None:
        """The run is queued (engine/admission.py): it needs no actor until it begins."""
        ...

    def unpark(self, run_id: str, mailbox: Mailbox) -> None:
        """Move outcomes held for the run into its mailbox."""
        ...


class RunActor(PooledActor):
    """Owns one live run: decides, appends, then acts (in turns on the services' dispatcher)."""

    def __init__(
        self,
        services: RunServices,
        supervisor: Supervision,
        run_id: str,
        mailbox: Mailbox,
        state: RunState | None = None,
        reserved: dict[str, Reservation] | None = None,
    ) -> None:
        super().__init__(services.dispatcher)
        self.services = services
        self.supervisor = supervisor
        self.run_id = run_id
        self.mailbox = mailbox
        self.state = state
        # Workers set aside for tasks whose TaskStarted is in ``state`` already (a new run's
        # first append, see Engine._launch): the actor hands them their jobs as it starts.
        self._reserved = reserved or {}
        self._retry: list[RunInput] = []
        self._backing_off = False  # after a failed append, until the backoff timer's retry
        self._processing: list[RunInput] = []
        self._failures = 0
        self._lost = False
        self._finished = False
        self._items: dict[str, tuple[object, list[Any]]] = {}  # map task -> (inputs, list)

    @functools.cached_property
    def log(self) -> Any:
        """The run's logger, bound on first use: most runs log nothing of their own, and
        binding a logger for each run cost a few percent of W3's CPU time."""
        return _log.bind(run_id=self.run_id)

    # --- lifecycle ---------------------------------------------------------------------

    def on_start(self) -> None:
        # pykka calls on_failure only for errors while handling messages: an error here
        # would stop the actor and leave its run live with a mailbox nobody drains.
        try:
            self._start()
        except Exception:
            self.log.exception("run_actor_start_failed")
            self._unreserve()
            pending = self._processing + self._retry
            self._processing, self._retry = [], []
            self.supervisor.actor_died(self.run_id, self.mailbox, pending)
            self.stop()

    def _start(self) -> None:
        if not self.mailbox.bind(self.actor_ref):
            self._unreserve()
            self.stop()  # the run was closed here before this actor got going
            return
        if not self.services.holds(self.run_id):
            self._unreserve()
            self._give_up([])
            return
        faults.hit("actor_start")
        if self.state is None:
            self._resume()
        elif self.state.is_terminal:
            self._finish()
        else:
            self._assign_reserved()  # before _reconcile, which counts them as running
            self._reconcile(starting=True)
        self.mailbox.attach(self.actor_ref)
        self._retire_if_queued()

    def on_failure(self, *exc_info: Any) -> None:
        self.log.error("run_actor_failed", exc_info=exc_info)
        # The inputs of the wake-up that raised go to the next actor too: an offered worker
        # must be taken or given back. A bug that raises on every try ends after
        # the supervisor's death limit, which refuses them.
        self.supervisor.actor_died(self.run_id, self.mailbox, self._processing + self._retry)

    def on_stop(self) -> None:
        # Stopped from outside (leases lost, engine closing) while inputs waited for a retry
        # of a failed append: a cancel request hears no at once; an outcome goes back to the
        # supervisor, which holds it for the run's next actor.
        self.supervisor.park(self.run_id, self._retry)
        self._retry = []

    def on_receive(self, message: Any) -> Any:
        if message is RETRY_APPEND:
            self._backing_off = False
            self._drain()
        elif message is DRAIN:
            if self._backing_off:
                self._hold()
            else:
                self._drain()
        return None

    # --- the loop ----------------------------------------------------------------------

    def _drain(self) -> None:
        inputs = self._retry + self.mailbox.take()
        self._retry = []
        if not inputs:
            return
        self._processing = inputs
        self._decide_and_act(inputs)
        self._processing = []
        self._retire_if_queued()

    def _hold(self) -> None:
        """While the actor backs off after a failed append, new inputs wait for the retry.

        An offered worker is given back at once, for another run's job: taking it would
        mean trying the store again without a pause (and, as the actor rebuilds its state,
        queueing the same task again, to be offered the same worker again at once).
        """
        held = self.mailbox.take()
        _decline([item for item in held if isinstance(item, Offer)])
        self._retry += [item for item in held if not isinstance(item, Offer)]

    def _retire_if_queued(self) -> None:
        """A queued run (woken by an action that left it queued) holds no actor or lease."""
        if self.state is not None and self.state.is_queued and not self._retry:
            self.supervisor.run_waits(self.run_id, self.mailbox)
            self.stop()

    def _decide_and_act(self, inputs: list[RunInput]) -> None:  # noqa: PLR0915 - one branch per input
        # An offered worker is never held across a retry: a failed append gives it back,
        # and the task, still scheduled in the store, is queued again when the state is
        # rebuilt (see _reconcile).
        offers = [item for item in inputs if isinstance(item, Offer)]
        inputs = [item for item in inputs if not isinstance(item, Offer)] if offers else inputs
        if self.state is None and not self._reload(held=inputs):
            _decline(offers)
            self._later(inputs)
            return
        state = self.state
        assert state is not None
        base = state.version
        now = stamp_time(self.services.clock, state)
        events: list[RunEvent] = []
        replies: list[Any] = []
        answers: list[tuple[OperatorCommand, FlowweaverError | None]] = []
        accepted: list[Offer] = []
        strays: list[str] = []  # child runs whose task no longer waits for them
        limit = self.services.interruption_limit
        pool = self.services.pool
        for offer in offers:
            if offer.answered:  # handled by an actor of this run that died since
                continue
            decided = (
                []
                if pool.closed
                else commands.record_started(state, offer.task_id, offer.attempt, offer.worker, now)
            )
            if decided:
                accepted.append(offer)
                events.extend(decided)
            else:
                offer.decline()  # stale, cancelled, or the engine is closing
        for item in inputs:
            if isinstance(item, Completed):
                decided = commands.record_completed(
                    state,
                    item.task_id,
                    item.attempt,
                    item.result,
                    item.duration_ms,
                    now,
                    max_io_bytes=self.services.max_task_io_bytes,
                    logs=item.logs,
                )
            elif isinstance(item, Failed):
                decided = commands.record_failed(
                    state,
                    item.task_id,
                    item.attempt,
                    item.error,
                    now,
                    jitter_sample=random.uniform(-1.0, 1.0),
                    interruption_limit=limit,
                    logs=item.logs,
                    max_io_bytes=self.services.max_task_io_bytes,
                )
            elif isinstance(item, RetryDue):
                decided = commands.record_retry_due(state, item.task_id, item.attempt, now)
            elif isinstance(item, WaitExpired):
                decided = signals.record_wait_expired(
                    state,
                    item.task_id,
                    item.attempt,
                    now,
                    jitter_sample=random.uniform(-1.0, 1.0),
                    interruption_limit=limit,
                )
            elif isinstance(item, ChildStarted):
                decided = _child_started(state, item, now, strays)
            elif isinstance(item, OperatorCommand):
                # Answered, refused or not, once this wake-up's append is stored.
                decided, refused = operator.decide_or_refuse(
                    item.action, state, now, max_io_bytes=self.services.max_task_io_bytes
                )
                answers.append((item, refused))
            else:
                assert isinstance(item, CancelRequest)
                decided = commands.request_cancel(state, item.reason, now)
                replies.append(item.reply)
            events.extend(decided)
        if events and not self.services.holds(self.run_id):
            _decline(accepted)
            self._give_up(inputs)
            return
        reserved = self._reserve_workers(events, now)
        if events and not self._append(base, events):
            _decline(accepted)
            pool.unreserve_all(reserved.values())
            if self._lost:
                self._give_up(inputs)
            else:
                self._later(inputs)
            return
        for reply in replies:
            reply.set(True)
        for child_run_id in strays:
            self.services.children.cancel(child_run_id, "its parent task no longer waits for it")
        operator.answer(answers, state)
        for offer in accepted:
            offer.accept()
        for task_id, reservation in reserved.items():
            pool.assign(reservation, self._job(task_id))
        self._act(events, base)
        if state.is_terminal:
            self._finish()

    def _append(self, base: int, events: list[RunEvent]) -> bool:
        faults.hit("before_append")
        started = time.perf_counter()
        try:
            self.services.writer.append(Append(self.run_id, base, events))
        except (ConcurrencyError, StoreError) as e:
            self._failures += 1
            self.log.warning("append_failed", error=str(e), failures=self._failures)
            self.state = None  # it holds undurable decisions: rebuild from the store
            if isinstance(e, ConcurrencyError) and self._failures >= 3:
                self.log.error("run_lost_to_another_writer")
                self._lost = True
            return False
        metrics.append_latency.observe(time.perf_counter() - started)
        metrics.events_appended.inc(len(events))
        self._failures = 0
        faults.hit("after_append")
        return True

    def _give_up(self, inputs: list[RunInput]) -> None:
        """Another process owns the run now: hand what is pending to the supervisor and stop.

        The supervisor answers cancel requests with no, gives offered workers back, and holds
        outcomes (see ``Supervisor.park``).
        """
        pending, self._retry = inputs + self._retry, []
        self.supervisor.run_lost(self.run_id, pending)
        self.stop()

    def _later(self, inputs: list[RunInput]) -> None:
        """Keep ``inputs`` and try again after a backoff (inputs that arrive meanwhile wait
        for it too, see :meth:`_hold`)."""
        self._retry = inputs
        self._backing_off = True
        delay = _RETRY_BACKOFF.delay(self._failures)
        ref = self.actor_ref
        self.services.timers.call_later(delay, lambda: _tell_quietly(ref, RETRY_APPEND))

    # --- acting on stored events -----------------------------------------------------------

    def _act(self, events: Sequence[RunEvent], base: int) -> None:
        state = self.state
        assert state is not None
        to_dispatch: list[str] = []
        for event in events:
            if isinstance(event, TaskScheduled | TaskRetried):
                to_dispatch.append(event.task_id)
            elif isinstance(event, TaskFailed):
                metrics.task_failures.labels(error_type=event.error.type).inc()
                if event.retry_at is not None:
                    self._arm_retry(event.task_id, event.attempt, event.retry_at)
                    metrics.task_retries.inc()
            elif isinstance(event, MapElementRetried):
                to_dispatch.append(mapping.element_key(event.task_id, event.index))
            elif isinstance(event, MapElementFailed):
                metrics.task_failures.labels(error_type=event.error.type).inc()
                if event.retry_at is not None:
                    key = mapping.element_key(event.task_id, event.index)
                    self._arm_retry(key, event.attempt, event.retry_at)
                    metrics.task_retries.inc()
            elif isinstance(event, RunCancelRequested):
                self.services.pool.cancel_run(self.run_id)
                self._cancel_children()
        for task_id in to_dispatch:
            self._dispatch_if_idle(task_id)
            self._arm_wait(task_id)
        if any(isinstance(event, RunResumed) for event in events):
            # Offers declined while paused dropped their jobs, and retries came due unheard.
            self._redispatch()
        interval = self.services.snapshot_interval
        if interval and state.version // interval > base // interval and not state.is_terminal:
            try:
                self.services.store.save_snapshot(state)
            except StoreError as e:
                self.log.warning("snapshot_failed", error=str(e))

    def _arm_retry(self, task_id: str, attempt: int, retry_at: datetime) -> None:
        """Deliver RetryDue for ``attempt`` when ``retry_at`` comes."""
        delay = (retry_at - self.services.clock.now()).total_seconds()
        mailbox = self.mailbox
        self.services.timers.call_later(delay, lambda: mailbox.put(RetryDue(task_id, attempt)))

    def _arm_wait(self, task_id: str) -> None:
        """A ``wait`` task is not dispatched: deliver WaitExpired when its timeout comes."""
        state = self.state
        assert state is not None
        deadline = signals.wait_deadline(state, task_id)
        if deadline is None:
            return
        attempt = state.tasks[task_id].attempts
        delay = (deadline - self.services.clock.now()).total_seconds()
        mailbox = self.mailbox
        self.services.timers.call_later(delay, lambda: mailbox.put(WaitExpired(task_id, attempt)))

    def _reserve_workers(self, events: list[RunEvent], now: datetime) -> dict[str, Reservation]:
        """Start newly scheduled tasks on idle workers within this same append."""
        assert self.state is not None
        return reserve_workers(self.state, events, self.services.pool, now)

    def _assign_reserved(self) -> None:
        """Hand the jobs whose TaskStarted the run's first append stored to their workers."""
        reserved, self._reserved = self._reserved, {}
        for task_id, reservation in reserved.items():
            self.services.pool.assign(reservation, self._job(task_id))

    def _unreserve(self) -> None:
        """Give back the workers set aside for the run's first tasks (the actor is not going
        on): those attempts are stored as started, and the run's next actor interrupts them."""
        reserved, self._reserved = self._reserved, {}
        self.services.pool.unreserve_all(reserved.values())

    def _job(self, task_id: str) -> Job:
        state = self.state
        assert state is not None
        element = mapping.split_key(task_id)
        if element is not None:
            return self._element_job(task_id, *element)
        task = state.tasks[task_id]
        task_spec = state.spec.task(task_id)
        tracing = self.services.tracing
        return Job(
            run_id=self.run_id,
            task_id=task_id,
            attempt=task.attempts,
            handler=task_spec.handler or "",  # wait and sub-workflow tasks are never jobs
            inputs=task.inputs or {},
            timeout=state.spec.timeout_of(task_spec),
            priority=state.priority,
            trace=None if tracing is None else tracing.run_context(self.run_id, state),
        )

    def _element_job(self, key: str, task_id: str, index: int) -> Job:
        """Return the job of one map element: the task's inputs with ``item`` and ``index``."""
        state = self.state
        assert state is not None
        task = state.tasks[task_id]
        progress = task.elements
        assert progress is not None
        inputs = task.inputs or {}
        cached = self._items.get(task_id)
        if cached is None or cached[0] is not inputs:
            task_spec = state.spec.task(task_id)
            items, _ = mapping.items_of(task_spec.map or "$", inputs)
            cached = (inputs, items or [])
            self._items[task_id] = cached
        task_spec = state.spec.task(task_id)
        tracing = self.services.tracing
        return Job(
            run_id=self.run_id,
            task_id=key,
            attempt=progress.elements[index].attempts,
            handler=task_spec.handler or "",  # registration refuses a map without a handler
            inputs=mapping.element_inputs(inputs, cached[1], index),
            timeout=state.spec.timeout_of(task_spec),
            priority=state.priority,
            trace=None if tracing is None else tracing.run_context(self.run_id, state),
        )

    def _dispatch_if_idle(self, task_id: str) -> None:
        state = self.state
        assert state is not None
        element = mapping.split_key(task_id)
        if element is not None:
            self._dispatch_element(task_id, *element)
            return
        task = state.tasks.get(task_id)
        if task is not None and task.elements is not None:
            for index in mapping.scheduled_elements(task):
                self._dispatch_element(mapping.element_key(task_id, index), task_id, index)
            return
        if task is None or task.status != "scheduled" or state.cancel_requested:
            return
        if state.is_paused and not task.ordered:
            return  # held by the pause: resuming dispatches it (see _redispatch)
        task_spec = state.spec.task(task_id)
        if task_spec.workflow is not None:  # a sub-workflow: a child run, not a worker's job
            parent = ParentTask(
                run_id=self.run_id, task_id=task_id, attempt=task.attempts, depth=state.depth + 1
            )
            self.services.children.launch(parent, task_spec.workflow, task.inputs or {})
            return
        self.services.pool.submit(self._job(task_id))

    def _dispatch_element(self, key: str, task_id: str, index: int) -> None:
        state = self.state
        assert state is not None
        task = state.tasks[task_id]
        progress = task.elements
        if progress is None or state.cancel_requested:
            return
        if task.status not in ("scheduled", "running"):
            return
        element = progress.elements[index]
        if element.status != "scheduled" or (state.is_paused and not task.ordered):
            return
        if not self.services.pool.is_inflight(self.run_id, key, element.attempts):
            self.services.pool.submit(self._job(key))

    def _redispatch(self) -> None:
        """Queue every scheduled task that is not queued or running here; re-arm retries."""
        state = self.state
        assert state is not None
        for task in state.tasks.values():
            if task.elements is not None:
                self._dispatch_if_idle(task.id)
                for index, element in mapping.waiting_elements(task):
                    if element.retry_at is not None:
                        key = mapping.element_key(task.id, index)
                        self._arm_retry(key, element.attempts, element.retry_at)
            elif task.status == "scheduled":
                if not self.services.pool.is_inflight(self.run_id, task.id, task.attempts):
                    self._dispatch_if_idle(task.id)
            elif task.status == "waiting_retry" and task.retry_at is not None:
                self._arm_retry(task.id, task.attempts, task.retry_at)
            elif task.status == signals.WAITING:
                self._arm_wait(task.id)
        for task_id, attempt, child_run_id in subworkflow.running_children(state):
            parent = ParentTask(
                run_id=self.run_id, task_id=task_id, attempt=attempt, depth=state.depth + 1
            )
            self.services.children.watch(parent, child_run_id)

    def _cancel_children(self) -> None:
        """Pass the run's cancellation down to the child runs its tasks wait for."""
        state = self.state
        assert state is not None
        for _, _, child_run_id in subworkflow.running_children(state):
            self.services.children.cancel(child_run_id, f"parent run {self.run_id} was cancelled")

    # --- recovery ------------------------------------------------------------------------

    def _reload(self, *, starting: bool = False, held: Sequence[RunInput] = ()) -> bool:
        try:
            self.state = self.services.store.run_state(self.run_id)
        except StoreError as e:
            self._failures += 1
            self.log.warning("reload_failed", error=str(e))
            return False
        if self.state is None:
            self.log.error("run_vanished")
            self.stop()
            return False
        self._reconcile(starting=starting, held=held)
        return self.state is not None

    def _resume(self) -> None:
        """Rebuild from the store and settle what the run still owes."""
        if not self._reload(starting=True):
            self._later([])
            return
        state = self.state
        assert state is not None
        if state.is_terminal:
            self._finish()

    def _reconcile(self, *, starting: bool = False, held: Sequence[RunInput] = ()) -> None:
        """Interrupt lost attempts, schedule what is ready, redispatch, re-arm timers.

        ``starting``: called as the actor starts, before it takes its mailbox; inputs that
        are already queued are handled first. ``held``: inputs this actor took and has not
        stored yet (a retry after a failed append).
        """
        # Which attempts run here, looked at before the mailbox: a worker reports its
        # outcome before it leaves the in-flight set, so an attempt missing from this list
        # either left its outcome with us (held, queued, or parked by the supervisor) or was
        # really lost. Only a lost one is interrupted: a store outage is not a lost attempt.
        alive = self.services.pool.inflight(self.run_id)
        self.supervisor.unpark(self.run_id, self.mailbox)
        alive += self.mailbox.outcomes()
        alive += [
            (item.task_id, item.attempt) for item in held if isinstance(item, Completed | Failed)
        ]
        queued = self.mailbox.take() if starting else []
        if queued:
            self._processing = queued
            self._decide_and_act(queued)
            self._processing = []
            # Those decisions may have started attempts here (a completion that made the
            # next task ready): they are alive too, running or with their outcome queued.
            alive += self.services.pool.inflight(self.run_id)
            alive += self.mailbox.outcomes()
        state = self.state
        if state is None or state.is_terminal:
            return
        base = state.version
        now = stamp_time(self.services.clock, state)
        # A task waiting for its child run is not lost with a process: the child is stored.
        alive += [(task_id, attempt) for task_id, attempt, _ in subworkflow.running_children(state)]
        events = commands.interrupt_running(
            state,
            now,
            still_running=alive,
            interruption_limit=self.services.interruption_limit,
            max_io_bytes=self.services.max_task_io_bytes,
        )
        events += commands.settle(state, now, max_io_bytes=self.services.max_task_io_bytes)
        if events and not self._append(base, events):
            return
        for event in events:
            if isinstance(event, TaskFailed):
                metrics.task_failures.labels(error_type=event.error.type).inc()
        self._redispatch()
        if state.cancel_requested:
            self.services.pool.cancel_run(self.run_id)
            self._cancel_children()

    def _finish(self) -> None:
        state = self.state
        assert state is not None
        if self._finished:
            return  # a start that decided queued inputs ended the run already (_resume)
        self._finished = True
        refuse(self.mailbox.close() + self._retry)
        self._retry = []
        if self.services.tracing is not None:
            self.services.tracing.end_run(self.run_id, state)
        self.supervisor.run_finished(self.run_id, state)
        self.stop()


def _child_started(
    state: RunState, item: ChildStarted, now: datetime, strays: list[str]
) -> list[RunEvent]:
    """Decide ChildRunStarted; a child its task no longer waits for goes to ``strays``."""
    decided = subworkflow.record_child_started(
        state,
        item.task_id,
        item.attempt,
        item.child_run_id,
        item.workflow_id,
        item.workflow_version,
        now,
    )
    if not decided and not subworkflow.owns_child(
        state, item.task_id, item.attempt, item.child_run_id
    ):
        strays.append(item.child_run_id)
    return decided


def reserve_workers(
    state: RunState, events: list[RunEvent], pool: WorkerPool, now: datetime
) -> dict[str, Reservation]:
    """Start the tasks that ``events`` schedule on idle workers, within the same append.

    For each such task (or map element) while a worker is idle: set the worker aside and
    add its TaskStarted to ``events`` (and to ``state``). Returns the reservations by task
    key; the caller hands each its job once the append is stored, or gives them back.
    """
    reserved: dict[str, Reservation] = {}
    if state.cancel_requested:
        return reserved
    for event in list(events):
        if not isinstance(event, TaskScheduled | TaskRetried | MapElementRetried):
            continue
        task = state.tasks[event.task_id]
        if task.elements is not None:
            keys = [
                mapping.element_key(task.id, i)
                for i in (
                    [event.index]
                    if isinstance(event, MapElementRetried)
                    else mapping.scheduled_elements(task)
                )
            ]
        elif task.status != "scheduled" or task.attempts != event.attempt:
            continue
        elif subworkflow.is_child_task(state.spec.task(task.id)):
            continue  # runs as a child run, not on a worker (see _dispatch_if_idle)
        else:
            keys = [task.id]
        for key in keys:
            reservation = pool.reserve()
            if reservation is None:
                return reserved
            started = commands.record_started(
                state, key, _attempt_of(state, key), reservation.name, now
            )
            if not started:  # a paused run starts only what an operator ordered
                pool.unreserve(reservation)
                continue
            events.extend(started)
            reserved[key] = reservation
    return reserved


def _attempt_of(state: RunState, key: str) -> int:
    """Return the current attempt of a task, or of a map element by its key."""
    element = mapping.split_key(key)
    if element is None:
        return state.tasks[key].attempts
    progress = state.tasks[element[0]].elements
    assert progress is not None
    return progress.elements[element[1]].attempts


def _decline(offers: Sequence[Offer]) -> None:
    for offer in offers:
        offer.decline()


def _tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
