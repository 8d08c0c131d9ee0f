"""Admission: which runs of a workflow with a concurrency limit may begin, and when.

A new run of such a workflow is admitted (its first events stored as usual) while fewer than
``limit`` runs of its group (workflow id and key value) are under way; otherwise it is stored
queued (RunStarted, RunQueued). When a run of the group ends, the group's queued runs begin
(RunDequeued and what their start owes, appended to their own log) by priority, then in
submission order, as many as there are free slots; their run actors start here.

Every decision is made with the group's lock held: on a store several processes share
(PostgreSQL) the store's cluster-wide lock (:class:`~flowweaver.ports.AdmissionLockProvider`),
else an in-process lock (one engine drives an embedded store). Under the lock the decision reads
the read model, which is caught up to the log first, so it sees every run the previous holder
admitted: appends return once committed, before the lock is let go.

What is under way is read from the store, not remembered: a node that died between a run's end
and the pass that should follow leaves queued runs behind, and the sweep (at start, and every
``sweep_interval`` seconds) finds them. Workflows without a limit never come here.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from flowweaver.domain.concurrency import (
    UNDER_WAY,
    Waiting,
    admission_order,
    dequeue_run,
    free_slots,
    queue_run,
)
from flowweaver.domain.events import RunEvent, RunForked, RunStarted
from flowweaver.domain.run import RunState
from flowweaver.domain.spec import concurrency_group
from flowweaver.engine.stamps import stamp_time
from flowweaver.errors import ConcurrencyError, FlowweaverError
from flowweaver.observability import metrics
from flowweaver.ports import AdmissionLockProvider, Append, Clock, EventStore, Leases

log = structlog.get_logger("flowweaver.engine")

SWEEP_INTERVAL_S = 2.0
"""How often queued runs are looked for when no run's end brought their group here."""
RETRY_BUSY_S = 0.25
"""How soon a group is looked at again when its best queued run could not be written to."""
PAGE = 1000
_META_CACHE = 65536
_SWEEP = object()

Launch = Callable[[RunState, list[RunEvent]], Any]


class Admission:
    """Admits new runs of workflows with a concurrency limit, and begins queued ones."""

    def __init__(
        self,
        store: EventStore,
        append: Callable[[Append], None],
        spawn: Callable[[str, RunState | None], bool],
        leases: Leases,
        clock: Clock,
        *,
        max_io_bytes: int,
        sweep_interval: float = SWEEP_INTERVAL_S,
    ) -> None:
        self.store = store
        self._append = append
        self._spawn = spawn
        self._leases = leases
        self.clock = clock
        self.max_io_bytes = max_io_bytes
        self.sweep_interval = sweep_interval
        self._local = threading.RLock()
        self._shared = store if isinstance(store, AdmissionLockProvider) else None
        # run id -> (group key, priority): facts of a run's first event, which never change.
        self._meta: OrderedDict[str, tuple[str | None, int]] = OrderedDict()
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="flowweaver-admission", daemon=True)
        self._thread.start()

    # --- the engine's hooks ------------------------------------------------------------------

    def launch(self, state: RunState, events: list[RunEvent], launch: Launch) -> Any:
        """Store a new run of a limited workflow: as decided when a slot is free, else queued.

        ``state`` and ``events`` are the run's start as decided without a limit; ``launch``
        stores first events and starts the run's actor (Engine._launch) and returns its answer.
        """
        spec = state.spec
        limit = spec.concurrency
        assert limit is not None
        first = events[0]
        assert isinstance(first, RunStarted)
        key = state.concurrency_key
        with self._locked(spec.id, key):
            under_way, waiting = self._group(spec.id, key)
            queued = bool(waiting) or under_way >= limit.limit
            if queued:
                state, events = queue_run(state.id, first)
            answer = launch(state, events)
            if queued and under_way < limit.limit:
                self._begin_queued(spec.id, key, limit.limit)  # by priority, this one among them
        return answer

    def run_ended(self, run_id: str, state: RunState) -> None:
        """A run ended here (a finish listener, on its actor's thread): its slot may be free."""
        spec = state.definition
        if spec is None or spec.concurrency is None or self._closed:
            return
        self._work.put((spec.id, state.concurrency_key, spec.concurrency.limit))

    def close(self) -> None:
        """Stop the admission thread (a pass under way finishes first)."""
        self._closed = True
        self._work.put(None)
        self._thread.join(timeout=10)

    # --- passes --------------------------------------------------------------------------------

    def begin_queued(self, workflow_id: str, key: str | None, limit: int) -> int:
        """Begin as many queued runs of the group as there are free slots; return how many."""
        with self._locked(workflow_id, key):
            return self._begin_queued(workflow_id, key, limit)

    def sweep(self) -> int:
        """Look at every group that has queued runs and begin what may; return how many began."""
        groups: dict[tuple[str, str | None], str] = {}
        for row in self._rows(None, "queued"):
            key, _ = self._run_meta(row.id)
            groups.setdefault((row.workflow_id, key), row.id)
        begun = 0
        for (workflow_id, key), run_id in groups.items():
            state = self.store.run_state(run_id)
            spec = state.definition if state is not None else None
            if spec is None or spec.concurrency is None:
                continue
            begun += self.begin_queued(workflow_id, key, spec.concurrency.limit)
        return begun

    def _begin_queued(self, workflow_id: str, key: str | None, limit: int) -> int:
        under_way, waiting = self._group(workflow_id, key)
        free = free_slots(limit, under_way)
        begun = 0
        for candidate in admission_order(waiting):
            if begun >= free or self._closed:
                break
            outcome = self._begin(candidate.run_id)
            if outcome == "busy":
                # Another writer holds the best candidate for a moment (a node's actor that
                # answers an action, a lease not yet let go): try the group again shortly,
                # rather than let a lower priority pass it.
                retry = threading.Timer(RETRY_BUSY_S, self._work.put, ((workflow_id, key, limit),))
                retry.daemon = True
                retry.start()
                break
            if outcome == "begun":
                begun += 1
        return begun

    def _begin(self, run_id: str) -> str:
        """Begin a queued run: "begun", "gone" (not queued any more) or "busy" (try again).

        The run's lease comes first: in a cluster only the node that owns a run writes to it
        (a queued run is nobody's), and the node that begins it runs it.
        """
        had = self._leases.holds(run_id)
        if not had and not self._leases.acquire(run_id):
            log.info("run_dequeue_deferred", run_id=run_id, reason="another node owns it")
            return "busy"
        outcome = "busy"
        try:
            state = self.store.run_state(run_id)
            events = (
                dequeue_run(state, stamp_time(self.clock, state), max_io_bytes=self.max_io_bytes)
                if state is not None
                else []
            )
            if state is None or not events:
                outcome = "gone"
                return outcome
            try:
                self._append(Append(run_id, state.version - len(events), events))
            except ConcurrencyError:
                log.info("run_dequeue_deferred", run_id=run_id, reason="written meanwhile")
                return outcome
            outcome = "begun"
        finally:
            if outcome != "begun" and not had:
                self._leases.release(run_id)
        metrics.events_appended.inc(len(events))
        log.info("run_dequeued", run_id=run_id, workflow_id=state.workflow_id)
        self._spawn(run_id, state)
        return "begun"

    # --- reading the group ---------------------------------------------------------------------

    def _group(self, workflow_id: str, key: str | None) -> tuple[int, list[Waiting]]:
        """Return how many runs of the group are under way, and its queued runs."""
        under_way = 0
        for status in UNDER_WAY:
            for row in self._rows(workflow_id, status):
                if key is None or self._run_meta(row.id)[0] == key:
                    under_way += 1
        queued = list(self._rows(workflow_id, "queued"))
        waiting: list[Waiting] = []
        for sequence, row in enumerate(reversed(queued)):  # the list is newest first
            run_key, priority = self._run_meta(row.id)
            if run_key == key:
                waiting.append(Waiting(row.id, priority, sequence))
        return under_way, waiting

    def _rows(self, workflow_id: str | None, status: str) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            page = self.store.list_runs(
                workflow_id=workflow_id, status=status, limit=PAGE, cursor=cursor
            )
            yield from page.runs
            cursor = page.next_cursor
            if cursor is None:
                return

    def _run_meta(self, run_id: str) -> tuple[str | None, int]:
        meta = self._meta.get(run_id)
        if meta is not None:
            return meta
        first = self.store.read_run(run_id, upto=1)
        event = first[0].event if first else None
        if isinstance(event, RunStarted):
            meta = (concurrency_group(event.definition, event.parameters), event.priority)
        elif isinstance(event, RunForked):
            meta = (concurrency_group(event.definition, event.parameters), 0)
        else:
            meta = (None, 0)
        self._meta[run_id] = meta
        if len(self._meta) > _META_CACHE:
            self._meta.popitem(last=False)
        return meta

    @contextlib.contextmanager
    def _locked(self, workflow_id: str, key: str | None) -> Iterator[None]:
        with self._local:
            if self._shared is None:
                yield
            else:
                with self._shared.admission_lock(f"{workflow_id}\n{key}"):
                    yield

    # --- the admission thread ------------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = time.monotonic()  # once at start: runs left queued while nobody ran
        while True:
            try:
                item = self._work.get(timeout=max(0.0, next_sweep - time.monotonic()))
            except queue.Empty:
                item = _SWEEP
            if item is None:
                return
            try:
                if item is _SWEEP:
                    self.sweep()
                else:
                    self.begin_queued(*item)
            except FlowweaverError as e:  # the store is down: the next sweep tries again
                log.warning("admission_failed", error=str(e))
            except Exception:  # a bug must not end admission for the life of the process
                log.exception("admission_crashed")
            if item is _SWEEP:
                next_sweep = time.monotonic() + self.sweep_interval
