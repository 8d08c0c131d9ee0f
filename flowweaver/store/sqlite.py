"""The embedded SQLite store (a file, WAL) on the eventsourcing library's SQLite recorders."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import structlog
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
)

from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import StoreError, StoreLockedError
from flowweaver.ports import Append, Leases, LocalLeases
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL, RecorderEventStore
from flowweaver.store.sql import SQLRunIndex

log = structlog.get_logger("flowweaver.store")

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
EVENTS_TABLE = "fw_events"
_CREATE_PROBE = "CREATE TABLE IF NOT EXISTS fw_probe (data BLOB)"
_PROBE = "INSERT INTO fw_probe (data) VALUES (zeroblob(?))"
# What a write probe asks room for: more than most appends (a RunStarted carries the pinned
# definition), so a store that passes it takes ordinary work again.
PROBE_BYTES = 64 * 1024
# SQLite checkpoints on its own each time the WAL reaches 1000 pages (about 4 MiB), and then
# writes it over from the start, unless a reader still uses it. Under steady reads that is
# rare, and the WAL grew without bound: past 27 MiB in 6,000 appends with three busy readers.
# So after an append (looking at most every WAL_CHECK_S) the store restarts a WAL that
# outgrew WAL_RESTART_BYTES: RESTART waits for the readers of the moment, which take
# milliseconds (RESTART_WAIT_MS at most), holding appends back meanwhile; and SQLite cuts the
# file back to WAL_SIZE_LIMIT when it starts over. Checkpointing more often (every 256
# pages) or cutting the file back further (1 MiB) cost 15-25% of append throughput, measured.
WAL_SIZE_LIMIT = 4 * 1024 * 1024
WAL_RESTART_BYTES = 6 * 1024 * 1024
WAL_CHECK_S = 0.05
RESTART_WAIT_MS = 100
_INSERT = "INSERT INTO fw_events (originator_id, originator_version, topic, state) VALUES "
_ROW = "(?, ?, ?, ?)"  # the table is EVENTS_TABLE, the columns the recorder's
_CACHED_INSERTS = 64  # prepared INSERTs the appends' connection keeps (one per row count)


@functools.lru_cache(maxsize=_CACHED_INSERTS)
def _inserts(rows: int) -> str:
    """The INSERT of ``rows`` events."""
    return _INSERT + ", ".join([_ROW] * rows)


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
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
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
        self._lock_timeout = lock_timeout
        self._synchronous = synchronous
        self._datastore = _Datastore(path, synchronous=synchronous, lock_timeout=lock_timeout)
        events = SQLiteApplicationRecorder(self._datastore, events_table_name=EVENTS_TABLE)
        snapshots = SQLiteAggregateRecorder(self._datastore, events_table_name="fw_snapshots")
        index = SQLRunIndex(self._transaction)
        try:
            events.create_table()
            snapshots.create_table()
            index.create_tables()
            with self._datastore.transaction(commit=True) as cursor:
                cursor.execute(_CREATE_PROBE)
        except (sqlite3.DatabaseError, PersistenceError) as e:
            # A file that is not a SQLite database (or a damaged one): one clear error.
            self._datastore.close()
            raise StoreError(f"cannot open the SQLite store at {path}: {e}") from e
        super().__init__(events, snapshots, index, snapshot_interval=snapshot_interval)
        # Rows one INSERT may carry: four parameters each, within SQLite's limit (32,766
        # since 3.32, 999 before).
        with self._datastore.get_connection(commit=False) as connection:
            limit = connection.cursor().sqlite_cursor.connection.getlimit(
                sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
            )
        self._max_rows = limit // 4
        # Appends go through a connection of their own (see _insert_events), opened on first use.
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        # Readiness: the last write that failed, until a write or a probe succeeds after it.
        self._health = threading.Lock()
        self._write_error: str | None = None
        self._write_failures = 0
        self._next_wal_check = 0.0

    # --- writes and readiness --------------------------------------------------------------

    def append(self, appends: Sequence[Append]) -> list[int]:
        # What _writing does, spelled out: this is the hottest path of the engine, and a
        # generator-based context manager costs a few microseconds a call.
        try:
            positions = super().append(appends)
        except StoreError as e:
            self._write_failed(e)
            raise
        self._write_succeeded()
        return positions

    def register_workflow(self, spec: WorkflowSpec, now: datetime) -> tuple[int, bool]:
        with self._writing():
            return super().register_workflow(spec, now)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except StoreError as e:
            self._write_failed(e)
            raise
        self._write_succeeded()

    def _write_failed(self, error: StoreError) -> None:
        with self._health:
            self._write_error = str(error)
            self._write_failures += 1

    def _write_succeeded(self) -> None:
        if self._write_error is not None:
            with self._health:
                self._write_error = None
        now = time.monotonic()
        if now >= self._next_wal_check:
            self._next_wal_check = now + WAL_CHECK_S
            self._restart_oversized_wal()

    def _restart_oversized_wal(self) -> None:
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return  # no WAL file (an in-memory database): nothing to restart
        if size > WAL_RESTART_BYTES:
            try:
                self.checkpoint(restart=True)
            except StoreError as e:  # the append succeeded; the next look tries again
                log.warning("sqlite_checkpoint_failed", error=str(e))

    def checkpoint(self, *, restart: bool = False) -> tuple[int, int]:
        """Copy committed pages from the WAL into the database file, blocking nobody.

        With ``restart``, also wait (at most RESTART_WAIT_MS) for the readers of the moment
        so that the next write starts the WAL over; appends wait meanwhile. Returns (frames
        in the WAL, frames copied), -1 each when another checkpoint was running.

        Raises:
            StoreError: the checkpoint failed.
        """
        mode = "RESTART" if restart else "PASSIVE"
        try:
            with self._datastore.get_connection(commit=False) as connection:
                cursor = connection.cursor()
                if restart:
                    cursor.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                try:
                    for _ in range(5):
                        cursor.execute(f"PRAGMA wal_checkpoint({mode})")
                        busy, frames, copied = cursor.fetchone()
                        if not busy or not restart:
                            break
                        time.sleep(0.005)  # SQLite's own checkpoint was running
                finally:
                    if restart:
                        cursor.execute(f"PRAGMA busy_timeout={self._lock_timeout * 1000}")
        except (PersistenceError, sqlite3.Error) as e:
            raise StoreError(f"checkpoint of {self.path} failed: {e}") from e
        return int(frames), int(copied)

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

    def _insert_events(self, stored: Sequence[StoredEvent]) -> list[int]:
        # The driver lets go of the GIL for each step of a statement, and while the engine's
        # threads are busy, taking it back costs CPU time: in W3 the recorder's transaction
        # (BEGIN, an INSERT per row, COMMIT) cost several times what SQLite spends on the
        # rows. So the rows go in one INSERT, which SQLite runs atomically on its own.
        # Their positions follow from the last one's: holding the write lock, SQLite gives
        # each new row the largest rowid so far plus one.
        rows = len(stored)
        if rows > self._max_rows:
            return super()._insert_events(stored)  # one transaction, a row at a time
        if self._datastore.pool.is_sqlite_memory_mode:
            return super()._insert_events(stored)  # shared cache: its pool takes turns
        params: list[Any] = []
        for event in stored:
            originator = event.originator_id
            run = originator.hex if isinstance(originator, uuid.UUID) else originator
            params += (run, event.originator_version, event.topic, event.state)
        statement = _inserts(rows)
        with self._writer_lock:
            try:
                last = self._writing_connection().execute(statement, params).lastrowid
            except sqlite3.IntegrityError as e:
                raise IntegrityError(e) from e
            except sqlite3.Error as e:
                raise PersistenceError(e) from e
        assert last is not None  # an INSERT sets it
        return list(range(last - rows + 1, last + 1))

    def _writing_connection(self) -> sqlite3.Connection:
        """The appends' own connection (the caller holds ``_writer_lock``), opened once.

        Taking a pooled connection and giving it back cost more CPU time than SQLite's own
        work on a small append; and the pool's connections keep one prepared statement,
        where this one keeps the INSERTs of the batch sizes that come up.

        Raises:
            sqlite3.Error: the store is closed, or the database cannot be opened.
        """
        if self._writer is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the store is closed")
            connection = sqlite3.connect(
                self.path,
                uri=True,  # as the pool's: a file: URI names the same database
                check_same_thread=False,  # used by one thread at a time, under the lock
                isolation_level=None,  # autocommit: each INSERT is its own transaction
                cached_statements=_CACHED_INSERTS,
                timeout=self._lock_timeout,
            )
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._writer = connection
        return self._writer

    def close(self) -> None:
        with self._writer_lock:
            writer, self._writer = self._writer, None
            self._closed = True
        if writer is not None:
            writer.close()
        super().close()

    def _select_run(
        self, originator: uuid.UUID, after: int, upto: int | None, limit: int | None
    ) -> Sequence[tuple[int, str, bytes]]:
        # The recorder's select_events builds a UUID and a StoredEvent per row, which took
        # over a third of a replay. The connection makes sqlite3.Row rows, which unpack like
        # tuples but do not compare equal to them: this cursor makes the plain tuples that
        # read_stored promises (and the driver builds them with less work).
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
            raw = cursor.sqlite_cursor
            raw.row_factory = None
            raw.execute(statement, params)
            rows: Sequence[tuple[int, str, bytes]] = raw.fetchall()
        return rows

    @contextmanager
    def _transaction(self, commit: bool) -> Iterator[sqlite3.Cursor]:
        # The driver's own cursor: the library's wrapper has no ``description``, which the
        # index reads to see which columns an existing table has.
        with self._datastore.transaction(commit=commit) as cursor:
            yield cursor.sqlite_cursor
