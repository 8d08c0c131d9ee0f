"""The embedded SQLite store (a file, WAL) on the eventsourcing library's SQLite recorders."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from eventsourcing.persistence import PersistenceError
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
)

from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import StoreError, StoreLockedError
from flowweaver.ports import Append, Leases, LocalLeases
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL, RecorderEventStore
from flowweaver.store.sql import SQLRunIndex

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
EVENTS_TABLE = "fw_events"
_CREATE_PROBE = "CREATE TABLE IF NOT EXISTS fw_probe (data BLOB)"
_PROBE = "INSERT INTO fw_probe (data) VALUES (zeroblob(?))"
# What a write probe asks room for: more than most appends (a RunStarted carries the pinned
# definition), so a store that passes it takes ordinary work again.
PROBE_BYTES = 64 * 1024
_SELECT_RUN = (  # the table is EVENTS_TABLE
    "SELECT originator_version, topic, state FROM fw_events "
    "WHERE originator_id=? AND originator_version>? "
)


class _TunedPool(SQLiteConnectionPool):
    """The library's pool, with the synchronous level and mmap chosen per store."""

    def __init__(self, *, synchronous: Synchronous, **kwargs: object) -> None:
        self._synchronous = synchronous
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        cursor = connection.cursor()
        cursor.execute(f"PRAGMA synchronous={self._synchronous}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        return connection


class _Datastore(SQLiteDatastore):
    def __init__(self, db_name: str, *, synchronous: Synchronous, lock_timeout: int) -> None:
        super().__init__(db_name, lock_timeout=lock_timeout)
        self.pool.close()
        self.pool = _TunedPool(
            synchronous=synchronous,
            db_name=db_name,
            lock_timeout=lock_timeout,
            pool_size=5,
            max_overflow=10,
            pool_timeout=5.0,
            max_age=None,
            pre_ping=False,
        )


class SQLiteLeases(LocalLeases):
    """Every run is ours, for as long as this process holds the store's lock file.

    The lock is ``flock`` on ``<database>.lock``, which holds the holder's pid for the error
    others see. The kernel drops it when the holder's file is closed, so a killed process
    never leaves the store locked; ``O_CLOEXEC`` keeps handlers' subprocesses from inheriting
    it. The file itself stays: removing it would let a newcomer lock a fresh file while an
    older process still held the removed one.

    Raises:
        StoreLockedError: another engine (in this process or another) holds the lock.
    """

    def __init__(self, database: str) -> None:
        self.path = f"{database}.lock"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StoreLockedError(database, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def close(self) -> None:
        """Give the store up to the next engine."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # before unlocking: the next holder writes its own pid
        os.close(fd)  # closing the only descriptor of the open file releases the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class SQLiteEventStore(RecorderEventStore):
    """Runs and workflows in one SQLite file.

    ``synchronous="NORMAL"`` (the default) in WAL mode keeps every committed event through a
    crash of the process; only a power loss or OS crash can lose the last commits. Choose
    ``"FULL"`` to survive those too, at about ten times the cost of a commit.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "NORMAL",
        lock_timeout: int = 30,
        snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL,
    ) -> None:
        self.path = path
        self._datastore = _Datastore(path, synchronous=synchronous, lock_timeout=lock_timeout)
        events = SQLiteApplicationRecorder(self._datastore, events_table_name=EVENTS_TABLE)
        snapshots = SQLiteAggregateRecorder(self._datastore, events_table_name="fw_snapshots")
        index = SQLRunIndex(self._transaction)
        events.create_table()
        snapshots.create_table()
        index.create_tables()
        with self._datastore.transaction(commit=True) as cursor:
            cursor.execute(_CREATE_PROBE)
        super().__init__(events, snapshots, index, snapshot_interval=snapshot_interval)
        # Readiness: the last write that failed, until a write or a probe succeeds after it.
        self._health = threading.Lock()
        self._write_error: str | None = None
        self._write_failures = 0

    # --- writes and readiness --------------------------------------------------------------

    def append(self, appends: Sequence[Append]) -> list[int]:
        with self._writing():
            return super().append(appends)

    def register_workflow(self, spec: WorkflowSpec, now: datetime) -> tuple[int, bool]:
        with self._writing():
            return super().register_workflow(spec, now)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except StoreError as e:
            with self._health:
                self._write_error = str(e)
                self._write_failures += 1
            raise
        if self._write_error is not None:
            with self._health:
                self._write_error = None

    def ping(self) -> None:
        """Return when the store answers reads and takes writes.

        Reads are checked every time. Writes are checked by the real ones: after one failed
        (a full disk, the page limit), the store stays unready until a later write or a
        :meth:`probe_write` succeeds.

        Raises:
            StoreError: it does not answer, or it refuses writes.
        """
        super().ping()
        with self._health:
            failed, seen = self._write_error, self._write_failures
        if failed is None:
            return
        try:
            self.probe_write()
        except StoreError as e:
            raise StoreError(f"the event store refuses writes: {e}") from e
        with self._health:
            if self._write_failures == seen:  # no write failed while the probe ran
                self._write_error = None

    def probe_write(self) -> None:
        """Check that an append of :data:`PROBE_BYTES` would fit now, storing nothing.

        The probe allocates the pages in a transaction it rolls back (so the page budget is
        checked), and asks the file system for the room that committing it would take.

        Raises:
            StoreError: it would not.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            room = os.statvfs(directory)
        except OSError as e:
            raise StoreError(f"cannot inspect the file system of {self.path}: {e}") from e
        if room.f_bavail * room.f_frsize < 2 * PROBE_BYTES:
            raise StoreError(f"the file system of {self.path} is full")
        try:
            with self._datastore.transaction(commit=False) as cursor:
                cursor.execute(_PROBE, (PROBE_BYTES,))
        except PersistenceError as e:
            raise StoreError(str(e)) from e

    def open_leases(self, node: str) -> Leases:
        """Take the store for one engine (the engine calls this as it starts).

        An in-memory database (``:memory:``) belongs to this process alone and needs no lock.

        Raises:
            StoreLockedError: another engine drives this store.
        """
        if self._datastore.pool.is_sqlite_memory_mode:
            return LocalLeases()
        return SQLiteLeases(self.path)

    def _select_run(
        self, originator: uuid.UUID, after: int, upto: int | None, limit: int | None
    ) -> Sequence[tuple[int, str, bytes]]:
        # The recorder's select_events builds a UUID and a StoredEvent per row, which took
        # over a third of a replay; the rows (sqlite3.Row) unpack like the tuples asked for.
        statement = _SELECT_RUN
        params: list[Any] = [originator.hex, after]
        if upto is not None:
            statement += "AND originator_version<=? "
            params.append(upto)
        statement += "ORDER BY originator_version"
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows: Sequence[tuple[int, str, bytes]] = cursor.fetchall()
        return rows

    @contextmanager
    def _transaction(self, commit: bool) -> Iterator[SQLiteCursor]:
        with self._datastore.transaction(commit=commit) as cursor:
            yield cursor
