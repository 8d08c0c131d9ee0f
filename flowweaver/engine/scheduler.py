"""The scheduler: fires schedules on time, on exactly one node, one run per fire.

One round (:meth:`Scheduler.tick`) refreshes the schedule registry, decides every due fire
(:func:`flowweaver.domain.schedule.decide_fires`), appends the decisions at the registry
version they were decided on, and only then starts the runs they name: progress is in the
store before it is acted on. A run is started with the fire's idempotency key
(``schedule:<id>:<fire time, RFC 3339 UTC>``), so starting it twice, after a crash between
the append and the start or on two nodes, gives one run. A node that becomes the scheduler
(and every round, for fires it has not seen started) checks the recent fires of each schedule
and starts any whose run is missing.

Exactly one node decides: the one holding the scheduler lease (:data:`LEASE`) from the
engine's leases. On PostgreSQL that is a session advisory lock, which lapses when its node
dies, so another node takes over within a round or two and catches up the fires missed in
the meantime (inside each schedule's catchupWindow). Should two nodes ever decide at once
(a lease lapsing mid-round), the registry's optimistic concurrency lets only one append, and
the key makes a second start of a run harmless.

The clock is a dependency: tests call :meth:`tick` after moving a fake clock; the thread
started by :meth:`start` only paces rounds with a real wait.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from flowweaver.domain.schedule import (
    FireRecord,
    ScheduleEntry,
    ScheduleEvent,
    ScheduleFireBuffered,
    ScheduleFired,
    ScheduleFireSkipped,
    decide_fires,
    is_due,
)
from flowweaver.errors import (
    EngineClosedError,
    FlowweaverError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from flowweaver.observability import metrics
from flowweaver.ports import Clock
from flowweaver.schedules import ScheduleRegistry

if TYPE_CHECKING:
    from flowweaver.engine.engine import Engine, RunHandle

log = structlog.get_logger("flowweaver.scheduler")

LEASE = "flowweaver-scheduler"
"""The lease whose holder fires every schedule of the store."""
DEFAULT_INTERVAL = 1.0
ATTEMPTS = 1000
"""Decisions about one schedule in one round at most (each decides up to 100 fires)."""
MAX_STARTED = 100_000
"""Run ids known started that a node keeps before it forgets them (it may check again)."""


class Scheduler:
    """Fires the schedules of the engine's store on time (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        registry: ScheduleRegistry | None = None,
        *,
        clock: Clock | None = None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        from flowweaver.ports import ScheduleLog  # noqa: PLC0415 - a runtime check only

        store = engine.store
        if registry is None:
            if not isinstance(store, ScheduleLog):
                raise TypeError(f"{type(store).__name__} keeps no schedules")
            registry = ScheduleRegistry(store, check_workflow=store.get_workflow, clock=clock)
        self.engine = engine
        self.registry = registry
        self.clock: Clock = clock or registry.clock
        self.interval = interval
        self.leader = False
        self._started: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()

    # --- one round ----------------------------------------------------------------------

    def tick(self) -> int:
        """Decide and act on every due fire now; return how many events were recorded.

        Not the leader (another node holds the lease): nothing, 0.

        Raises:
            StoreError: the store cannot be reached (the next round tries again).
        """
        with self._round:
            if not self._lead():
                return 0
            self.registry.refresh()
            entries = self.registry.entries()
            for entry in entries:
                self._start_missing(entry)
            now = self.clock.now()
            return sum(self._decide(entry.definition.id, now) for entry in entries)

    def _decide(self, schedule_id: str, now: datetime) -> int:
        """Decide the due fires of one schedule, store them and start their runs."""
        recorded = 0
        for _ in range(ATTEMPTS):
            version = self.registry.version
            try:
                entry = self.registry.get(schedule_id)
            except NotFoundError:
                return recorded  # deleted meanwhile
            if not is_due(entry, now):
                return recorded
            events = decide_fires(entry, now, previous_running=self._running(entry))
            if not events:
                return recorded
            if not self.registry.record(version, events):
                self.registry.refresh()  # another writer stored first: decide again on that
                continue
            recorded += len(events)
            for event in events:
                _count(schedule_id, event)
                if isinstance(event, ScheduleFired):
                    self._start(_record(event), schedule_id)
                else:
                    log.info(
                        "schedule_fire_decided",
                        schedule_id=schedule_id,
                        decision=type(event).__name__,
                        fire_time=str(getattr(event, "fire_time", "")),
                    )
        return recorded

    def _lead(self) -> bool:
        leases = self.engine.leases
        if self.leader and leases.holds(LEASE):
            metrics.scheduler_leader.set(1)
            return True
        was = self.leader
        self.leader = leases.acquire(LEASE)
        metrics.scheduler_leader.set(1 if self.leader else 0)
        if self.leader and not was:
            log.info("scheduler_leading", node=self.engine.node)
            self._started.clear()  # check every recent fire again: the last leader may have died
        elif was and not self.leader:
            log.warning("scheduler_lease_lost", node=self.engine.node)
        return self.leader

    def _running(self, entry: ScheduleEntry) -> bool:
        """Say whether the last run this schedule started has not ended."""
        run_id = entry.last_run_id
        if run_id is None:
            return False
        state = self.engine.store.run_state(run_id)
        return state is not None and not state.is_terminal

    def _start_missing(self, entry: ScheduleEntry) -> None:
        for fire in entry.recent:
            if fire.run_id in self._started:
                continue
            if self.engine.store.read_run(fire.run_id, upto=1):
                self._remember(fire.run_id)
                continue
            self._start(fire, entry.definition.id)

    def _start(self, fire: FireRecord, schedule_id: str) -> RunHandle | None:
        """Start the run of a recorded fire (idempotent); None when it cannot start."""
        try:
            handle = start_fire(self.engine, fire, schedule_id)
        except EngineClosedError:
            raise
        except (ValidationError, NotFoundError, IdempotencyConflictError) as e:
            # It never can (a handler or the workflow version is gone): say so once.
            log.error("schedule_run_not_started", schedule_id=schedule_id, error=str(e))
            metrics.schedule_runs_not_started.labels(schedule=schedule_id).inc()
            self._remember(fire.run_id)
            return None
        self._remember(fire.run_id)
        log.info(
            "schedule_fired",
            schedule_id=schedule_id,
            run_id=handle.run_id,
            fire_time=fire.fire_time.isoformat(),
            created=handle.created,
        )
        return handle

    def _remember(self, run_id: str) -> None:
        if len(self._started) >= MAX_STARTED:
            self._started.clear()
        self._started.add(run_id)

    # --- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Run rounds every ``interval`` seconds on a thread until :meth:`close`."""
        if self._thread is not None:
            return
        self.engine.add_finish_listener(self._run_finished)
        self._thread = threading.Thread(target=self._loop, name="flowweaver-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a round now rather than at the next interval."""
        self._wake.set()

    def _run_finished(self, run_id: str, state: object) -> None:
        # A buffered fire starts when its schedule's running run ends: look at once.
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except EngineClosedError:
                return
            except FlowweaverError as e:
                log.warning("scheduler_round_failed", error=str(e))
                metrics.scheduler_rounds_failed.inc()
            except Exception:  # a bug must not end the scheduler for the life of the process
                log.exception("scheduler_round_crashed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        """Stop the thread (a round in progress finishes) and give the lease back."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self.engine.remove_finish_listener(self._run_finished)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=10)
        if self.leader:
            self.engine.leases.release(LEASE)
            self.leader = False
            metrics.scheduler_leader.set(0)


def _count(schedule_id: str, event: ScheduleEvent) -> None:
    """Count a decided fire: ``fired``, ``buffered``, or a skip by its reason (each fire of
    an outage that one skipped event records counts)."""
    if isinstance(event, ScheduleFired):
        decision, count = "fired", 1
    elif isinstance(event, ScheduleFireSkipped):
        decision, count = event.reason, event.count
    elif isinstance(event, ScheduleFireBuffered):
        decision, count = "buffered", 1
    else:
        return
    metrics.schedule_fires.labels(schedule=schedule_id, decision=decision).inc(count)


def _record(event: ScheduleFired) -> FireRecord:
    return FireRecord(
        fire_time=event.fire_time,
        workflow_id=event.workflow_id,
        run_id=event.run_id,
        idempotency_key=event.idempotency_key,
        parameters=event.parameters,
    )


def start_fire(engine: Engine, fire: FireRecord | ScheduleFired, schedule_id: str) -> RunHandle:
    """Start (or find) the run of a recorded fire, by its idempotency key.

    Raises:
        NotFoundError: its workflow is gone.
        ValidationError: a handler it names is not registered here.
        IdempotencyConflictError: the key names a run of another request.
        EngineClosedError: the engine is closed.
    """
    record = _record(fire) if isinstance(fire, ScheduleFired) else fire
    return engine.start_run(
        record.workflow_id,
        parameters=record.parameters,
        idempotency_key=record.idempotency_key,
        submitted_by=f"schedule:{schedule_id}",
    )
