"""An event store on any eventsourcing recorder pair, plus the run list read model.

Every backend (memory, SQLite, PostgreSQL, Redis) provides an ``ApplicationRecorder`` for the
log, an ``AggregateRecorder`` for snapshots and a :class:`RunIndex` for the read model; all
the rest (mapping, time travel, snapshots, workflows, waiting for new events) lives here.

Every record is stored under a topic that names its type and schema version (see
:mod:`flowweaver.store.codec`); reads split it into ``RecordedEvent.name`` and ``.schema``.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from abc import ABC, abstractmethod
from binascii import hexlify
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import msgspec
import structlog
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    PersistenceError,
    StoredEvent,
)

from flowweaver.domain.events import (
    RUN_EVENT_NAMES,
    TERMINAL_EVENT_NAMES,
    RunForked,
    RunStarted,
)
from flowweaver.domain.ids import SCHEDULES_AGGREGATE, TOKENS_AGGREGATE, workflow_aggregate_id
from flowweaver.domain.run import RunState, apply, new_state
from flowweaver.domain.schedule import AnyScheduleEvent
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.domain.tokens import AnyTokenEvent
from flowweaver.domain.workflow import WorkflowRegistered, WorkflowVersions, register
from flowweaver.errors import (
    ConcurrencyError,
    EventSchemaError,
    FieldError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from flowweaver.ports import Append, RecordedEvent, RunPage, RunRow
from flowweaver.store.chain import chain_on, genesis, stored_hash
from flowweaver.store.codec import (
    CURRENT_NAMES,
    SNAPSHOT_TOPIC,
    WORKFLOW_NAME,
    WORKFLOW_TOPIC,
    decode_event,
    decode_registration,
    decode_schedule_event,
    decode_snapshot,
    decode_token_event,
    encode,
    event_topic,
    readable_topics,
    schedule_topic,
    snapshot_originator,
    split_topic,
    token_topic,
)

log = structlog.get_logger("flowweaver.store")

DEFAULT_SNAPSHOT_INTERVAL = 1000
INDEX_TYPES = (
    "RunStarted",
    "RunForked",
    "RunQueued",
    "RunDequeued",
    "RunPaused",
    "RunResumed",
    *sorted(TERMINAL_EVENT_NAMES),
    WORKFLOW_NAME,
)
ACTIVE_STATUSES = ("running", "paused")
"""Statuses of runs that have not ended: recovery resumes them (a paused run waits, resumed).
A queued run is not among them: it has nothing to resume until a slot frees (admission.py)."""
INDEX_PAGE = 2000
MAX_PAGE = 1000
REGISTRATION_CACHE = 1024
CHAIN_HEAD_CACHE = 16384
"""Runs whose last hash a store remembers (about 150 bytes each)."""
CHAIN_PAGE = 5000
"""Events read at a time when a run's chain is walked (verify, export)."""


class IndexChanges(msgspec.Struct):
    """What one stretch of the log changes in the read model.

    ``started`` holds a row for each RunStarted or RunForked (the latter with its parent);
    ``changed`` holds (run id, new status, when) in log order: pauses, resumes and ends.
    """

    started: list[tuple[int, RunRow]] = []
    changed: list[tuple[str, str, datetime]] = []
    workflows: dict[str, int] = {}


class RunIndex(ABC):
    """Storage of the read model: runs by workflow and status, and workflow ids.

    ``advance`` applies the changes read from the log between two positions atomically with
    the position itself, so the model may lag the log but never skips any of it.
    """

    @abstractmethod
    def position(self) -> int:
        """Return the log position the model has caught up to."""

    @abstractmethod
    def advance(self, expected: int, new: int, changes: IndexChanges) -> bool:
        """Apply ``changes`` and move from ``expected`` to ``new``; False if another moved it."""

    @abstractmethod
    def runs(
        self,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
        submitted_by: str | None = None,
    ) -> list[tuple[int, RunRow]]:
        """Return up to ``limit`` (sequence, row) pairs, newest first, older than ``before``."""

    @abstractmethod
    def active(self) -> list[str]:
        """Return the ids of runs without a terminal event (running or paused)."""

    @abstractmethod
    def children(
        self, parent_run_id: str, limit: int, before: int | None
    ) -> list[tuple[int, RunRow]]:
        """Return up to ``limit`` runs forked from ``parent_run_id``, newest first."""

    @abstractmethod
    def workflow_ids(self) -> list[str]:
        """Return every registered workflow id, sorted."""

    def close(self) -> None:  # noqa: B027 - most indexes share the store's connections
        """Release what the index holds."""


class RecorderEventStore:
    """The :class:`flowweaver.ports.EventStore` on eventsourcing recorders."""

    def __init__(
        self,
        events: ApplicationRecorder,
        snapshots: AggregateRecorder,
        index: RunIndex,
        *,
        snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL,
        poll_interval: float = 0.25,
    ) -> None:
        self._events = events
        self._snapshots = snapshots
        self._index = index
        self.snapshot_interval = snapshot_interval
        self.poll_interval = poll_interval
        self._appended = threading.Condition()
        self._wakeups = 0  # counts appends, so a waiter sees one that came before it waited
        self._index_lock = threading.Lock()
        self._registrations: OrderedDict[tuple[str, int], WorkflowRegistered] = OrderedDict()
        # Which version is the latest, remembered briefly: a version registered through this
        # store object is seen at once, one registered by another process within latest_ttl.
        self._latest: dict[str, tuple[float, WorkflowRegistered]] = {}
        self.latest_ttl = 1.0
        self.snapshots_ignored = 0
        """Snapshots :meth:`run_state` could not use (another schema version, undecodable)."""
        self._closed = False
        # The last (version, hash) of recently written or read runs, so an append need not
        # read its run's previous event to chain on it.
        self._heads: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self._heads_lock = threading.Lock()
        self.chain_head_cache = CHAIN_HEAD_CACHE

    # --- writing -------------------------------------------------------------------------

    def append(self, appends: Sequence[Append]) -> list[int]:
        stored, heads = self._chained_events(appends)
        if not stored:
            return []
        try:
            with self._translate_errors([a.run_id for a in appends]):
                positions = self._insert_events(stored)
        except BaseException:
            self._forget_heads(heads)
            raise
        self._remember_heads(heads)
        self._wake_waiters()
        return positions

    def _insert_events(self, stored: Sequence[StoredEvent]) -> list[int]:
        """Insert ``stored``, all or none; return their log positions, in order.

        Raises the recorder's errors (IntegrityError for a version taken), which ``append``
        translates. A store may write more leanly than its recorder (SQLite does).
        """
        return list(self._events.insert_events(stored) or [])

    def _chained_events(
        self, appends: Sequence[Append]
    ) -> tuple[list[StoredEvent], dict[str, tuple[int, bytes]]]:
        """Map appends to stored events, each sealed with its hash on its run's chain.

        Returns them and each run's new head (version, hash), for :meth:`_remember_heads`.
        Several appends of one run in a batch chain in order.

        Raises:
            StoreError: the previous event of a run cannot be read.
        """
        stored: list[StoredEvent] = []
        heads: dict[str, tuple[int, bytes]] = {}
        sha256, topic_of, add = hashlib.sha256, event_topic, stored.append
        for append in appends:
            if not append.events:
                continue
            run_id = append.run_id
            originator = uuid.UUID(run_id)
            version = append.expected_version
            known = heads.get(run_id)
            previous = (
                known[1]
                if known is not None and known[0] == version
                else self._chain_head(originator, run_id, version)
            )
            for event in append.events:
                version += 1
                canonical = encode(event)
                previous = sha256(previous + canonical).digest()
                # The hash goes in last, so a check cuts it off the exact stored bytes.
                data = b'%b,"hash":"%b"}' % (canonical[:-1], hexlify(previous))
                add(StoredEvent(originator, version, topic_of(event), data))
            heads[run_id] = (version, previous)
        return stored, heads

    def _chain_head(self, originator: uuid.UUID, run_id: str, version: int) -> bytes:
        """Return the hash of a run's event ``version`` (h_0 for 0): remembered, or read."""
        if version == 0:
            return genesis(run_id)
        known = self._heads.get(run_id)  # a lone read of a dict needs no lock
        if known is not None and known[0] == version:
            return known[1]
        with self._translate_errors([run_id]):
            rows = self._select_run(originator, version - 1, version, 1)
        if rows:
            found = stored_hash(rows[0][2])
            if found is not None:
                return found
        # No hash (stored before chains) or no such event (the insert will refuse the
        # version): chain on from what the run holds, read page by page.
        return self._walk_head(originator, run_id, version)

    def _walk_head(self, originator: uuid.UUID, run_id: str, upto: int) -> bytes:
        head, after = genesis(run_id), 0
        while after < upto:
            with self._translate_errors([run_id]):
                rows = self._select_run(originator, after, upto, CHAIN_PAGE)
            if not rows:
                break
            for version, _, data in rows:
                head = chain_on(head, data)
                after = version
        return head

    def _forget_heads(self, heads: dict[str, tuple[int, bytes]]) -> None:
        """Forget the heads of an append that failed.

        It may still have been stored (a lost connection after the commit): the next
        append of each run then reads its head from the store.
        """
        with self._heads_lock:
            for run_id in heads:
                self._heads.pop(run_id, None)

    def _remember_heads(self, heads: dict[str, tuple[int, bytes]]) -> None:
        """Remember the runs' new heads (version, hash) once their events are stored."""
        with self._heads_lock:
            for run_id, head in heads.items():
                self._heads[run_id] = head
                self._heads.move_to_end(run_id)
            while len(self._heads) > self.chain_head_cache:
                self._heads.popitem(last=False)

    def save_snapshot(self, state: RunState) -> None:
        originator = snapshot_originator(uuid.UUID(state.id))
        snapshot = StoredEvent(originator, state.version, SNAPSHOT_TOPIC, encode(state))
        try:
            self._snapshots.insert_events([snapshot])
        except IntegrityError:
            pass  # someone recorded the same version's snapshot first; it is the same state
        except PersistenceError as e:
            raise StoreError(f"could not save snapshot of run {state.id}: {e}") from e

    # --- reading runs --------------------------------------------------------------------

    def read_run(
        self, run_id: str, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        originator = _run_uuid(run_id)
        if originator is None:
            return []
        with self._translate_errors([run_id]):
            rows = self._select_run(originator, after, upto, limit)
        current = CURRENT_NAMES.get  # a topic at its type's current version: no upcasting
        return [
            RecordedEvent(run_id, version, None, name, data)
            if (name := current(topic)) is not None
            else recorded_event(run_id, version, None, topic, data)
            for version, topic, data in rows
        ]

    def _select_run(
        self, originator: uuid.UUID, after: int, upto: int | None, limit: int | None
    ) -> Sequence[tuple[int, str, bytes]]:
        """Return (version, topic, JSON) of a run's events with ``after < version <= upto``.

        Replay spends most of its time here; a backend may override it with a leaner query
        than the recorder's, which builds a UUID and a StoredEvent for every row.
        """
        rows = self._events.select_events(originator, gt=after, lte=upto, limit=limit)
        return [(row.originator_version, row.topic, row.state) for row in rows]

    def read_log(self, *, after: int = 0, limit: int = MAX_PAGE) -> list[RecordedEvent]:
        with self._translate_errors([]):
            rows = self._events.select_notifications(
                start=after,
                limit=limit,
                topics=readable_topics(RUN_EVENT_NAMES),
                inclusive_of_start=False,
            )
        current = CURRENT_NAMES.get
        return [
            RecordedEvent(str(row.originator_id), row.originator_version, row.id, name, row.state)
            if (name := current(row.topic)) is not None
            else recorded_event(
                str(row.originator_id), row.originator_version, row.id, row.topic, row.state
            )
            for row in rows
        ]

    def max_position(self) -> int:
        with self._translate_errors([]):
            return self._events.max_notification_id() or 0

    def wait_for_log(self, after: int, timeout: float) -> bool:
        """Block until the log holds a position > ``after`` (True) or ``timeout`` passes (False).

        The one loop of every backend: look at the end of the log, then block in
        :meth:`_await_append` until an append may have moved it, and look again. A closed
        store answers False before it touches its connections.

        Raises:
            StoreError: the store cannot be reached.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._appended:
                if self._closed:
                    return False
                seen = self._wakeups
            if self.max_position() > after:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._await_append(after, seen, remaining)

    def _await_append(self, after: int, seen: int, timeout: float) -> None:
        """Block until an append may have moved the log past ``after``, at most ``timeout`` s.

        Wakes on this store's appends (and on a backend's :meth:`_wake_waiters`, such as
        PostgreSQL's NOTIFY listener), and polls every ``poll_interval`` seconds for other
        processes' appends. ``seen`` counts the wake-ups when the log was looked at: one that
        came since returns at once, so no append between looking and waiting is slept through.
        A backend that can block on the log itself overrides this (Redis, XREAD BLOCK).
        """
        with self._appended:
            if self._wakeups == seen and not self._closed:
                self._appended.wait(min(timeout, self.poll_interval))

    def run_state(self, run_id: str, *, at: int | None = None) -> RunState | None:
        originator = _run_uuid(run_id)
        if originator is None:
            return None
        with self._translate_errors([run_id]):
            snapshots = self._snapshots.select_events(
                snapshot_originator(originator), lte=at, desc=True, limit=1
            )
            state = self._snapshot_state(run_id, snapshots[0]) if snapshots else None
            if state is None:
                state = new_state(run_id)
            rows = self._select_run(originator, state.version, at, None)
        interval = self.snapshot_interval
        for _, topic, data in rows:
            apply(state, decode_event(data, topic))
            if interval and state.version % interval == 0:
                self.save_snapshot(state)
        if at is None and rows:
            # The run's last event as of now: the engine replays a run before it appends,
            # so its next append chains on this without reading it again.
            last = stored_hash(rows[-1][2])
            if last is not None:
                self._remember_heads({run_id: (rows[-1][0], last)})
        return state if state.version else None

    def _snapshot_state(self, run_id: str, snapshot: StoredEvent) -> RunState | None:
        """Decode a snapshot, or count and log it and return None to replay the events."""
        try:
            state = decode_snapshot(snapshot.state, snapshot.topic)
        except EventSchemaError as e:
            reason = str(e)
        else:
            if state.id == run_id and state.version == snapshot.originator_version:
                return state
            reason = f"snapshot holds run {state.id} at version {state.version}"
        self.snapshots_ignored += 1
        log.warning(
            "snapshot_ignored",
            run_id=run_id,
            version=snapshot.originator_version,
            topic=snapshot.topic,
            reason=reason,
        )
        return None

    # --- stored records, as they are (hash chains, export and import) -----------------------

    def read_stored(
        self, run_id: str, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> Sequence[tuple[int, str, bytes]]:
        originator = _run_uuid(run_id)
        if originator is None:
            return []
        with self._translate_errors([run_id]):
            return self._select_run(originator, after, upto, limit)

    def last_version(self, run_id: str) -> int:
        originator = _run_uuid(run_id)
        if originator is None:
            return 0
        with self._translate_errors([run_id]):
            rows = self._events.select_events(originator, desc=True, limit=1)
        return rows[0].originator_version if rows else 0

    def insert_stored(self, run_id: str, rows: Sequence[tuple[int, str, bytes]]) -> None:
        originator = uuid.UUID(run_id)
        if originator in (TOKENS_AGGREGATE, SCHEDULES_AGGREGATE):
            raise ValidationError([FieldError("$.runId", "is a registry's id, no run's")])
        stored = [StoredEvent(originator, version, topic, data) for version, topic, data in rows]
        if not stored:
            return
        self._forget_heads({run_id: (0, b"")})
        with self._translate_errors([run_id]):
            self._events.insert_events(stored)
        self._wake_waiters()

    # --- workflows -----------------------------------------------------------------------

    def register_workflow(self, spec: WorkflowSpec, now: datetime) -> tuple[int, bool]:
        for _ in range(5):
            versions = WorkflowVersions(
                workflow_id=spec.id, versions=self.workflow_versions(spec.id)
            )
            decided = register(versions, spec, now)
            if not decided:
                latest = versions.latest
                assert latest is not None
                return latest.version, False
            event = decided[0]
            stored = StoredEvent(
                workflow_aggregate_id(spec.id), event.version, WORKFLOW_TOPIC, encode(event)
            )
            try:
                with self._translate_errors([spec.id]):
                    self._events.insert_events([stored])
            except ConcurrencyError:
                continue  # another writer registered first: decide again on what it wrote
            self._latest.pop(spec.id, None)
            self._wake_waiters()
            return event.version, True
        raise ConcurrencyError([spec.id])

    def workflow_versions(self, workflow_id: str) -> list[WorkflowRegistered]:
        with self._translate_errors([workflow_id]):
            rows = self._events.select_events(workflow_aggregate_id(workflow_id))
        return [decode_registration(row.state, row.topic) for row in rows]

    def get_workflow(self, workflow_id: str, version: int | None = None) -> WorkflowRegistered:
        if version is None:
            latest = self._latest.get(workflow_id)
            if latest is not None and time.monotonic() - latest[0] < self.latest_ttl:
                return latest[1]
        else:
            known = self._registrations.get((workflow_id, version))
            if known is not None:
                return known
        originator = workflow_aggregate_id(workflow_id)
        with self._translate_errors([workflow_id]):
            if version is None:
                rows = self._events.select_events(originator, desc=True, limit=1)
            else:
                rows = self._events.select_events(originator, gt=version - 1, lte=version)
        if not rows:
            what = workflow_id if version is None else f"{workflow_id} version {version}"
            raise NotFoundError("workflow", what)
        row = rows[0]
        registered = self._registration(workflow_id, row.originator_version, row.state, row.topic)
        if version is None:
            self._latest[workflow_id] = (time.monotonic(), registered)
        return registered

    def _registration(
        self, workflow_id: str, version: int, data: bytes, topic: str
    ) -> WorkflowRegistered:
        """Decode a registration once: versions never change, and sharing one definition
        object across runs lets them share its DAG too."""
        key = (workflow_id, version)
        cached = self._registrations.get(key)
        if cached is None:
            cached = self._registrations.setdefault(key, decode_registration(data, topic))
            if len(self._registrations) > REGISTRATION_CACHE:
                with contextlib.suppress(KeyError):  # another thread evicted first
                    self._registrations.popitem(last=False)
        return cached

    def list_workflows(self) -> list[WorkflowRegistered]:
        self.catch_up()
        return [self.get_workflow(workflow_id) for workflow_id in self._index.workflow_ids()]

    # --- tokens --------------------------------------------------------------------------

    def token_events(self, *, after: int = 0) -> list[AnyTokenEvent]:
        """Return the token registry's events after version ``after``, oldest first.

        Raises:
            StoreError: the store cannot be reached.
        """
        with self._translate_errors(["tokens"]):
            rows = self._events.select_events(TOKENS_AGGREGATE, gt=after)
        return [decode_token_event(row.state, row.topic) for row in rows]

    def append_token_event(self, expected_version: int, event: AnyTokenEvent) -> None:
        """Store ``event`` as the registry's version ``expected_version + 1``.

        Raises:
            ConcurrencyError: another writer stored that version first; nothing was stored.
            StoreError: the store failed; nothing was stored.
        """
        stored = StoredEvent(
            TOKENS_AGGREGATE, expected_version + 1, token_topic(event), encode(event)
        )
        with self._translate_errors(["tokens"]):
            self._events.insert_events([stored])

    # --- schedules -----------------------------------------------------------------------

    def schedule_events(self, *, after: int = 0) -> list[AnyScheduleEvent]:
        """Return the schedule registry's events after version ``after``, oldest first.

        Raises:
            StoreError: the store cannot be reached.
        """
        with self._translate_errors(["schedules"]):
            rows = self._events.select_events(SCHEDULES_AGGREGATE, gt=after)
        return [decode_schedule_event(row.state, row.topic) for row in rows]

    def append_schedule_events(
        self, expected_version: int, events: Sequence[AnyScheduleEvent]
    ) -> None:
        """Store ``events`` as the registry's versions after ``expected_version``, all or none.

        Raises:
            ConcurrencyError: another writer stored one of those versions first; nothing was
                stored.
            StoreError: the store failed; nothing was stored.
        """
        stored = [
            StoredEvent(SCHEDULES_AGGREGATE, expected_version + n, schedule_topic(e), encode(e))
            for n, e in enumerate(events, start=1)
        ]
        if not stored:
            return
        with self._translate_errors(["schedules"]):
            self._events.insert_events(stored)

    # --- the read model ------------------------------------------------------------------

    def catch_up(self) -> None:
        """Bring the read model up to the end of the log."""
        with self._index_lock, self._translate_errors([]):
            while True:
                start = self._index.position()
                rows = self._events.select_notifications(
                    start=start,
                    limit=INDEX_PAGE,
                    topics=readable_topics(INDEX_TYPES),
                    inclusive_of_start=False,
                )
                if not rows:
                    return
                changes = IndexChanges()
                for row in rows:
                    name, _ = split_topic(row.topic)
                    if name in ("RunStarted", "RunForked"):
                        first = decode_event(row.state, row.topic)
                        assert isinstance(first, RunStarted | RunForked)
                        changes.started.append((row.id, _row_of(str(row.originator_id), first)))
                    elif name == WORKFLOW_NAME:
                        registered = decode_registration(row.state, row.topic)
                        changes.workflows[registered.workflow_id] = registered.version
                    else:
                        event = decode_event(row.state, row.topic)
                        status = _STATUS_AFTER[name]
                        changes.changed.append((str(row.originator_id), status, event.timestamp))
                self._index.advance(start, rows[-1].id, changes)

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        submitted_by: str | None = None,
    ) -> RunPage:
        before = _page_start(limit, cursor)
        self.catch_up()
        with self._translate_errors([]):
            found = self._index.runs(workflow_id, status, limit + 1, before, submitted_by)
        return _page(found, limit)

    def child_runs(self, run_id: str, *, limit: int = 50, cursor: str | None = None) -> RunPage:
        before = _page_start(limit, cursor)
        self.catch_up()
        with self._translate_errors([]):
            found = self._index.children(run_id, limit + 1, before)
        return _page(found, limit)

    def active_run_ids(self) -> list[str]:
        self.catch_up()
        with self._translate_errors([]):
            return self._index.active()

    # --- lifecycle -----------------------------------------------------------------------

    def ping(self) -> None:
        self.max_position()

    def close(self) -> None:
        self._closed = True
        self._wake_waiters()
        self._index.close()
        for recorder in (self._events, self._snapshots):
            datastore = getattr(recorder, "datastore", None)
            if datastore is not None:
                datastore.close()

    def _wake_waiters(self) -> None:
        with self._appended:
            self._wakeups += 1
            self._appended.notify_all()

    @contextmanager
    def _translate_errors(self, ids: Sequence[str]) -> Iterator[None]:
        try:
            yield
        except IntegrityError as e:
            raise ConcurrencyError(ids) from e
        except PersistenceError as e:
            raise StoreError(f"event store failed: {e}") from e


def recorded_event(
    run_id: str, version: int, position: int | None, topic: str, data: bytes
) -> RecordedEvent:
    """Return a stored run event whose topic may carry a schema version.

    Reads build events at their type's current version directly, the name looked up by
    topic in ``CURRENT_NAMES``; this is the way for the others, upcast once here.
    """
    name, schema = split_topic(topic)
    return RecordedEvent(run_id, version, position, name, data, schema=schema)


_STATUS_AFTER = {
    "RunCompleted": "completed",
    "RunFailed": "failed",
    "RunCancelled": "cancelled",
    "RunPaused": "paused",
    "RunResumed": "running",
    "RunQueued": "queued",
    "RunDequeued": "running",
}


def _row_of(run_id: str, first: RunStarted | RunForked) -> RunRow:
    """Return the run list row a run's first event starts."""
    parent: tuple[str, int | None] | None = None
    if isinstance(first, RunForked):
        parent = (first.parent_run_id, first.parent_version)
    elif first.parent is not None:  # a sub-workflow's child run: no version of the parent
        parent = (first.parent.run_id, None)
    by = first.by if isinstance(first, RunForked) else first.submitted_by
    return RunRow(
        id=run_id,
        workflow_id=first.workflow_id,
        workflow_version=first.workflow_version,
        status="running",
        created_at=first.timestamp,
        updated_at=first.timestamp,
        parent_run_id=parent[0] if parent else None,
        parent_version=parent[1] if parent else None,
        submitted_by=by,
    )


def _page_start(limit: int, cursor: str | None) -> int | None:
    """Check a page request; return the sequence the page starts below (None: the newest).

    Raises:
        ValidationError: ``limit`` is below 1, or the cursor is not one this store issued.
    """
    if limit < 1:
        raise ValidationError([FieldError("$.limit", "must be at least 1")])
    if cursor is None:
        return None
    # isdigit() alone also accepts digits int() refuses, such as "²".
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19:
        raise ValidationError([FieldError("$.cursor", "not a cursor this server issued")])
    return int(cursor)


def _page(found: list[tuple[int, RunRow]], limit: int) -> RunPage:
    """Return the first ``limit`` rows of ``found`` (asked for one more) as a page."""
    page = found[:limit]
    next_cursor = str(page[-1][0]) if len(found) > limit else None
    return RunPage(runs=[row for _, row in page], next_cursor=next_cursor)


def _run_uuid(run_id: str) -> uuid.UUID | None:
    """Return the run's aggregate id, or None for a string no run can have as its id."""
    try:
        originator = uuid.UUID(run_id)
    except ValueError:
        return None
    # The token and schedule registries are no runs: not served as a run's history.
    return None if originator in (TOKENS_AGGREGATE, SCHEDULES_AGGREGATE) else originator
