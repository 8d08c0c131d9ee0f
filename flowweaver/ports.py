"""The small Protocols the core needs from the outside: the event store and the clock.

The store is split by what its users call (:class:`LogWriter`, :class:`LogReader`,
:class:`LogFeed`, :class:`RunReader`, :class:`SnapshotWriter`, :class:`WorkflowRegistry`,
:class:`RunQueries`, :class:`StoreLifecycle`); :class:`EventStore` is all of them. What only
some stores can do (:class:`LeaseProvider`, :class:`RelayProvider`, :class:`DurabilityReport`,
:class:`Checkpoints`, :class:`TokenLog`)
is asked with ``isinstance``. Every store implementation passes
:mod:`flowweaver.testing.store_suite`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import msgspec

from flowweaver.domain.events import EVENT_SCHEMA_VERSIONS, RunEvent
from flowweaver.domain.run import RunState
from flowweaver.domain.schedule import AnyScheduleEvent
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.domain.tokens import AnyTokenEvent
from flowweaver.domain.workflow import WorkflowRegistered


class Append(msgspec.Struct, frozen=True):
    """Events for one run, to be stored right after ``expected_version``."""

    run_id: str
    expected_version: int
    events: Sequence[RunEvent]


class RecordedEvent:
    """A stored run event: where it sits (run version, global position) and its JSON.

    ``name`` is the event's type, ``raw`` its JSON as stored and ``schema`` the schema version
    it was stored at (None given: its type's current version, the common case). An event at
    the current version is served as stored (``current_raw`` is ``raw``) and decoded only when
    ``event`` is first read, so streaming stored events to clients costs no decoding. One
    stored at an older version is upcast here, once: ``current_raw`` is then its JSON re-encoded
    in the current shape.

    Raises:
        EventSchemaError: (on construction) stored at a version this code cannot upcast.
    """

    __slots__ = (
        "_event",
        "_schema",
        "current_raw",
        "name",
        "position",
        "raw",
        "run_id",
        "version",
    )

    def __init__(
        self,
        run_id: str,
        version: int,
        position: int | None,
        name: str,
        raw: bytes,
        event: RunEvent | None = None,
        schema: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.version = version
        self.position = position
        self.name = name
        self.raw = raw
        self._event = event
        if schema is None or schema == EVENT_SCHEMA_VERSIONS.get(name):
            self._schema: int | None = None
            self.current_raw = raw
        else:
            from flowweaver.store.codec import topic, upcast  # noqa: PLC0415 - port stays light

            self._schema = schema
            self.current_raw = upcast(topic(name, schema), raw)

    @property
    def schema(self) -> int:
        """Return the schema version the event's JSON was stored at."""
        return EVENT_SCHEMA_VERSIONS.get(self.name, 1) if self._schema is None else self._schema

    @property
    def event(self) -> RunEvent:
        """Return the decoded domain event, in its type's current schema."""
        if self._event is None:
            from flowweaver.store.codec import decode_event  # noqa: PLC0415 - port stays light

            self._event = decode_event(self.current_raw)
        return self._event

    def __repr__(self) -> str:
        schema = "" if self._schema is None else f"@{self._schema}"
        return (
            f"RecordedEvent({self.run_id!r}, v{self.version}, #{self.position}, "
            f"{self.name}{schema})"
        )


class RunRow(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One run in the run list (the read model kept from the log)."""

    id: str
    workflow_id: str
    workflow_version: int
    status: str
    created_at: datetime
    updated_at: datetime
    parent_run_id: str | None = None
    """The run this one was forked from (RunForked), None for a run that was started."""
    parent_version: int | None = None
    """The parent's version the fork was taken at."""
    submitted_by: str | None = None
    """Who started the run (RunStarted.submittedBy) or forked it (RunForked.by); None for
    runs indexed before this column existed, or started before principals were recorded."""


class RunPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of runs, newest first, and the cursor of the next page (None at the end)."""

    runs: list[RunRow]
    next_cursor: str | None


# --- the store, as the small Protocols its users need -----------------------------------------
#
# Each user of the store asks only for what it calls: the engine's writer appends
# (LogWriter), the API's tailer waits on the log and reads it (LogFeed, LogReader), the run
# actor folds and snapshots runs (RunReader, SnapshotWriter). EventStore is all of them:
# what a store implements, and what the conformance suite (flowweaver.testing.store_suite)
# checks. Optional capabilities, which only some stores have, are separate Protocols
# further down, checked with isinstance.


@runtime_checkable
class LogWriter(Protocol):
    """Appends run events to the log."""

    def append(self, appends: Sequence[Append]) -> list[int]:
        """Store every event of every append atomically, and return their global positions.

        Raises:
            ConcurrencyError: some run already has an event at one of the versions; nothing
                of the batch was stored.
            StoreError: the store failed; nothing of the batch was stored.
        """
        ...


@runtime_checkable
class LogReader(Protocol):
    """Reads the log: one run's events, or every run's in log order."""

    def read_run(
        self, run_id: str, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return the run's events with ``after < version <= upto``, oldest first."""
        ...

    def read_log(self, *, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Return run events of every run with global position > ``after``, in log order."""
        ...

    def max_position(self) -> int:
        """Return the highest global position, 0 when the log is empty."""
        ...


@runtime_checkable
class LogFeed(Protocol):
    """Says when the log grows, so tailers wait instead of polling."""

    def wait_for_log(self, after: int, timeout: float) -> bool:
        """Block until the log holds a position > ``after`` (True) or ``timeout`` passes (False).

        A closed store answers False.
        """
        ...


@runtime_checkable
class RunReader(Protocol):
    """Folds a run's events into its state."""

    def run_state(self, run_id: str, *, at: int | None = None) -> RunState | None:
        """Return the run's state as of version ``at`` (latest when None), None if unknown."""
        ...


@runtime_checkable
class SnapshotWriter(Protocol):
    """Records folded states, so that later folds start from them."""

    def save_snapshot(self, state: RunState) -> None:
        """Record ``state`` so that later reads of this version or after start from it."""
        ...


@runtime_checkable
class WorkflowRegistry(Protocol):
    """The versioned workflow definitions."""

    def register_workflow(self, spec: WorkflowSpec, now: datetime) -> tuple[int, bool]:
        """Record ``spec`` as a new version unless it equals the latest: (version, created).

        Raises:
            ConcurrencyError: another writer registered a version at the same moment.
        """
        ...

    def get_workflow(self, workflow_id: str, version: int | None = None) -> WorkflowRegistered:
        """Return one version of a workflow (the latest when ``version`` is None).

        Raises:
            NotFoundError: no such workflow or version.
        """
        ...

    def workflow_versions(self, workflow_id: str) -> list[WorkflowRegistered]:
        """Return every version of a workflow, oldest first (empty when unknown)."""
        ...

    def list_workflows(self) -> list[WorkflowRegistered]:
        """Return the latest version of every workflow, by id."""
        ...


@runtime_checkable
class RunQueries(Protocol):
    """The run list, a read model kept from the log."""

    def list_runs(
        self,
        *,
        workflow_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        submitted_by: str | None = None,
    ) -> RunPage:
        """Return a page of runs, newest first, from the read model.

        ``submitted_by`` keeps the runs that principal started or forked.

        Raises:
            ValidationError: the cursor is not one this store issued.
        """
        ...

    def active_run_ids(self) -> list[str]:
        """Return the ids of every run that has not reached a terminal event (paused included)."""
        ...

    def child_runs(self, run_id: str, *, limit: int = 50, cursor: str | None = None) -> RunPage:
        """Return a page of the runs forked from ``run_id``, newest first, from the read model.

        Raises:
            ValidationError: the cursor is not one this store issued, or ``limit`` < 1.
        """
        ...


@runtime_checkable
class StoreLifecycle(Protocol):
    """Whether the store answers, and its end."""

    def ping(self) -> None:
        """Return when the store answers.

        Raises:
            StoreError: it does not.
        """
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


@runtime_checkable
class StoreReader(
    LogReader, LogFeed, RunReader, WorkflowRegistry, RunQueries, StoreLifecycle, Protocol
):
    """What the readers of a store use (the API and the CLI): everything but appends."""


@runtime_checkable
class EventStore(
    LogWriter,
    LogReader,
    LogFeed,
    RunReader,
    SnapshotWriter,
    WorkflowRegistry,
    RunQueries,
    StoreLifecycle,
    Protocol,
):
    """Where runs and workflow definitions are recorded, and read back: every part above.

    Every store implementation passes :mod:`flowweaver.testing.store_suite`.
    """


class Leases(Protocol):
    """Which process owns which run: one writer per run, even across processes.

    ``shared`` is False for stores only one process uses (memory, SQLite): every run is
    then owned locally and nothing scans for orphans. A shared implementation (PostgreSQL)
    holds a lease per run it owns; when its process dies the leases lapse, and another
    process's takeover scan acquires them and resumes those runs by replay.
    """

    shared: bool

    def acquire(self, run_id: str) -> bool:
        """Try to own ``run_id`` without waiting; True when this process now owns it."""
        ...

    def release(self, run_id: str) -> None:
        """Give up ``run_id`` (its run ended or this process stops)."""
        ...

    def holds(self, run_id: str) -> bool:
        """Say whether this process still owns ``run_id``."""
        ...

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) when every lease was lost at once."""
        ...

    def close(self) -> None:
        """Release every lease."""
        ...


class LocalLeases:
    """Leases for a store that one process uses: every run is always ours."""

    shared = False

    def acquire(self, run_id: str) -> bool:
        """Own ``run_id``: always granted."""
        return True

    def release(self, run_id: str) -> None:
        """Nothing to give up."""

    def holds(self, run_id: str) -> bool:
        """Every run is ours."""
        return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Local leases are never lost."""

    def close(self) -> None:
        """Nothing to release."""


# --- optional capabilities: only some stores have them; ask with isinstance -----------------


@runtime_checkable
class LeaseProvider(Protocol):
    """A store that says which process owns which run.

    SQLite's file lock, PostgreSQL's advisory locks. The engine opens its leases here as it
    starts; on a store without this capability every run is the engine's (:class:`LocalLeases`).
    """

    def open_leases(self, node: str) -> Leases:
        """Open this node's leases; one engine per store.

        Raises:
            StoreLockedError: (SQLite) another engine drives the store.
            StoreConfigError: this store already has open leases.
            StoreError: the leases cannot be opened.
        """
        ...


@runtime_checkable
class AdmissionLockProvider(Protocol):
    """A store shared by several processes, which must take turns to admit runs.

    A concurrency limit holds across nodes only if one node at a time counts a workflow's
    runs under way and lets more begin (engine/admission.py). PostgreSQL: an advisory lock.
    A store without this capability has one engine, which takes turns in-process.
    """

    def admission_lock(self, group: str) -> AbstractContextManager[None]:
        """Hold the lock of ``group`` (a workflow id and key) across every process.

        Raises:
            StoreError: the lock cannot be taken (the database is down).
        """
        ...


class OperatorRelay(Protocol):
    """Carries an operator action to the node that owns its run, and the owner's answer back.

    Opened by :class:`RelayProvider`; the engine sends actions for runs it does not own and
    answers those relayed to it for runs it owns.
    """

    def request(
        self, run_id: str, body: bytes, *, claim_timeout: float, timeout: float
    ) -> bytes | None:
        """Send ``body`` to the owner of ``run_id`` and return its answer.

        None when no node took the request within ``claim_timeout`` seconds (nothing was
        done; the run may have no owner right now). A node that took it answers within
        ``timeout`` seconds of the send.

        Raises:
            TimeoutError: a node took the request and did not answer in time (it may have
                acted on it).
            StoreError: the relay cannot be reached.
        """
        ...

    def close(self) -> None:
        """Stop answering and sending."""
        ...


@runtime_checkable
class RelayProvider(Protocol):
    """A store shared by several engines that relays operator actions between them.

    PostgreSQL (a table of requests and LISTEN/NOTIFY wake-ups). An engine on a store
    without it acts only on runs it owns.
    """

    def open_operator_relay(
        self,
        node: str,
        *,
        owns: Callable[[str], bool],
        handle: Callable[[str, bytes], bytes],
    ) -> OperatorRelay:
        """Open this node's relay: ``handle(run_id, body)`` answers requests for the runs
        ``owns(run_id)`` says are this node's, on a thread of the relay.

        Raises:
            StoreError: the relay cannot be opened.
        """
        ...


@runtime_checkable
class DurabilityReport(Protocol):
    """A store that says how its server's settings may lose acknowledged events.

    Redis, depending on its persistence settings; ``serve`` logs each warning as it starts.
    """

    def durability_warnings(self) -> list[str]:
        """Return how the server's settings can lose acknowledged events; never raises."""
        ...


@runtime_checkable
class Checkpoints(Protocol):
    """A store with a write-ahead log to copy into its main file.

    SQLite's WAL; ``serve`` checkpoints once the log has been quiet for a while.
    """

    def checkpoint(self) -> tuple[int, int]:
        """Copy committed pages into the main file: (frames in the WAL, frames copied).

        Raises:
            StoreError: the checkpoint failed.
        """
        ...


@runtime_checkable
class StoredRuns(Protocol):
    """A store that reads and writes run events as the exact records it keeps.

    Hash chains are checked on these bytes (:mod:`flowweaver.store.audit`), and runs are
    moved between stores with them, byte for byte. Every store of this package has it.
    """

    def read_stored(
        self, run_id: str, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> Sequence[tuple[int, str, bytes]]:
        """Return (version, topic, stored bytes) of a run's events, ``after < version <= upto``.

        Raises:
            StoreError: the store cannot be reached.
        """
        ...

    def last_version(self, run_id: str) -> int:
        """Return the run's last version, 0 when the store holds none of it.

        Raises:
            StoreError: the store cannot be reached.
        """
        ...

    def insert_stored(self, run_id: str, rows: Sequence[tuple[int, str, bytes]]) -> None:
        """Store records of one run as they are (versions, topics, bytes), all or nothing.

        Raises:
            ConcurrencyError: a version is taken; nothing was stored.
            StoreError: the store failed; nothing was stored.
        """
        ...


@runtime_checkable
class TokenLog(Protocol):
    """A store that keeps the API's tokens as events (every store of this package does).

    All of them are one aggregate: a reader keeps the version it has folded to and asks for
    what came after, so a revocation on one node reaches the others at their next read.
    """

    def token_events(self, *, after: int = 0) -> list[AnyTokenEvent]:
        """Return the token registry's events after version ``after``, oldest first.

        Raises:
            StoreError: the store cannot be reached.
        """
        ...

    def append_token_event(self, expected_version: int, event: AnyTokenEvent) -> None:
        """Store ``event`` as the registry's version ``expected_version + 1``.

        Raises:
            ConcurrencyError: another writer stored that version first; nothing was stored.
            StoreError: the store failed; nothing was stored.
        """
        ...


@runtime_checkable
class ScheduleLog(Protocol):
    """A store that keeps schedules as events (every store of this package does).

    All of them are one aggregate, like the tokens: a reader keeps the version it has folded
    to and asks for what came after; a writer appends at the version it decided on, so two
    nodes never both record a decision about one fire.
    """

    def schedule_events(self, *, after: int = 0) -> list[AnyScheduleEvent]:
        """Return the schedule registry's events after version ``after``, oldest first.

        Raises:
            StoreError: the store cannot be reached.
        """
        ...

    def append_schedule_events(
        self, expected_version: int, events: Sequence[AnyScheduleEvent]
    ) -> None:
        """Store ``events`` as the registry's versions after ``expected_version``, all or none.

        Raises:
            ConcurrencyError: another writer stored one of those versions first.
            StoreError: the store failed; nothing was stored.
        """
        ...


class Clock(Protocol):
    """Where the engine gets the time; tests pass a fake."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        return datetime.now(UTC)
