"""The PostgreSQL event store: the eventsourcing library's recorders, tailed by LISTEN/NOTIFY.

Open it by URL::

    postgresql://user[:password]@host[:port]/dbname?schema=NAME&pool_size=N

Options: ``schema`` (default ``public``, created if missing; every table lives in it),
``pool_size`` and ``max_overflow`` (pooled connections kept and added under load),
``connect_timeout`` (seconds to open a connection or wait for a pooled one), ``lock_timeout``
(seconds an append waits for the log's table lock), ``poll_interval`` (seconds between polls
of a tailer when no notification comes), ``max_leases`` (runs one node owns at most: each
lease takes a slot of the server's shared lock table; see docs/cluster.md).

The log is the library's ``PostgresApplicationRecorder``: each insert takes the table's
EXCLUSIVE lock so notification ids are issued in commit order (readers never pass a gap that
is filled later), and sends ``NOTIFY`` in the same transaction, so the notification is
delivered only once the events are visible. One :class:`PostgresLogListener` per store turns
those notifications into wake-ups of :meth:`PostgresEventStore.wait_for_log`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import structlog
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
)
from eventsourcing.postgres import (
    ConnectionPool,
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from flowweaver.backoff import Backoff
from flowweaver.errors import StoreConfigError, StoreError
from flowweaver.ports import Append
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL, RecorderEventStore
from flowweaver.store.sql import SQLRunIndex
from flowweaver_postgres.admission import PostgresAdmissionLocks
from flowweaver_postgres.leases import (
    HEARTBEAT_INTERVAL,
    SESSION_TIMEOUT,
    PostgresLeases,
    append_function_sql,
)
from flowweaver_postgres.relay import REQUESTS_TABLE, PostgresOperatorRelay, requests_table_sql

log = structlog.get_logger(__name__)

EVENTS_TABLE = "fw_events"
SNAPSHOTS_TABLE = "fw_snapshots"
# Advisory lock class for schema setup, so nodes starting together do not race on DDL
# ("CREATE TABLE IF NOT EXISTS" is not safe against a concurrent twin in PostgreSQL).
# The two-int4 key space is separate from the bigint one that run leases may use.
_DDL_LOCK_CLASS = 0x46570001
# A transaction left open by a stopped client (SIGSTOP between LOCK TABLE and COMMIT) would
# hold the log's table lock; the server ends such a session after this many seconds.
_IDLE_IN_TRANSACTION_TIMEOUT = 10.0
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MAX_IDENTIFIER = 63


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Where the store connects and how; :func:`parse_url` reads them from a store URL."""

    dbname: str
    host: str = "localhost"
    port: int = 5432
    user: str = ""
    password: str = ""
    schema: str = "public"
    pool_size: int = 5
    max_overflow: int = 5
    connect_timeout: int = 5
    lock_timeout: int = 5
    poll_interval: float = 0.25
    ping_timeout: int = 2
    max_leases: int = 1000

    def connection_kwargs(self, application_name: str = "flowweaver") -> dict[str, Any]:
        """Return psycopg.connect keyword arguments for one connection."""
        return {
            "dbname": self.dbname,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "application_name": application_name,
            **_socket_options(self.connect_timeout),
        }


def _socket_options(connect_timeout: int) -> dict[str, Any]:
    # Keepalives notice a server host that vanished without closing the socket; without them
    # a pooled or listening connection waits on a dead peer for the OS default (hours).
    return {
        "connect_timeout": connect_timeout,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


_INT_OPTIONS = ("pool_size", "max_overflow", "connect_timeout", "lock_timeout", "max_leases")


def parse_url(url: str) -> PostgresSettings:
    """Read the settings of a ``postgresql://`` (or ``postgres://``) store URL.

    Raises:
        StoreConfigError: the URL is not a PostgreSQL URL or has bad options.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise StoreConfigError(f"not a PostgreSQL URL: {url!r}")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise StoreConfigError(f"no database name in {url!r}: postgresql://user@host:5432/db")
    try:
        port = parts.port or 5432
    except ValueError as e:
        raise StoreConfigError(f"bad port in {url!r}") from e
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    settings = PostgresSettings(
        dbname=dbname,
        host=parts.hostname or "localhost",
        port=port,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )
    schema = options.pop("schema", settings.schema)
    if not _SCHEMA_NAME.match(schema):
        raise StoreConfigError(
            f"schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63), not {schema!r}"
        )
    changes: dict[str, Any] = {"schema": schema}
    for name in _INT_OPTIONS:
        if name in options:
            changes[name] = _number(name, options.pop(name), int, minimum=0)
    if "poll_interval" in options:
        changes["poll_interval"] = _number("poll_interval", options.pop("poll_interval"), float)
    if options:
        raise StoreConfigError(f"unknown PostgreSQL store option(s): {', '.join(sorted(options))}")
    settings = replace(settings, **changes)
    if settings.pool_size < 1:
        raise StoreConfigError("pool_size must be at least 1")
    if settings.connect_timeout < 1:
        raise StoreConfigError("connect_timeout must be at least 1 (second)")
    if settings.poll_interval <= 0:
        raise StoreConfigError("poll_interval must be positive (seconds)")
    return settings


def _number(name: str, text: str, kind: type[int] | type[float], minimum: float = 0) -> Any:
    try:
        value = kind(text)
    except ValueError as e:
        raise StoreConfigError(f"{name} must be a number, not {text!r}") from e
    if value < minimum:
        raise StoreConfigError(f"{name} must be at least {minimum}")
    return value


def channel_name(schema: str, table: str = EVENTS_TABLE) -> str:
    """Return the NOTIFY channel of a schema's log, unique per schema and at most 63 bytes."""
    name = f"{table}_{schema}"
    if len(name) <= _MAX_IDENTIFIER:
        return name
    return f"{table}_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"


# --- the library's pieces, tuned --------------------------------------------------------------


class _SteadyAttempt(AttemptWithBackoff):
    """Reconnection attempts every second at most, and forever.

    psycopg_pool doubles its delay from 1 s without a bound and gives up after 5 minutes:
    after a 30 s outage its next attempt can be 30 s after the server is back.
    """

    INITIAL_DELAY = 0.1
    MAX_DELAY = 1.0

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.MAX_DELAY)


class _Pool(ConnectionPool[psycopg.Connection[DictRow]]):
    """The library's pool, reconnecting at a steady pace after the server went away."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _SteadyAttempt(timeout=self.reconnect_timeout), growing)


class _Datastore(PostgresDatastore):
    """The library's datastore; its connections also resolve names in our schema first."""

    def __init__(self, settings: PostgresSettings) -> None:
        super().__init__(
            dbname=settings.dbname,
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            idle_in_transaction_session_timeout=_IDLE_IN_TRANSACTION_TIMEOUT,
            lock_timeout=settings.lock_timeout,
            schema=settings.schema,
        )
        self.pool.close()  # never opened: replaced by one with our options
        self.pool = _Pool(
            connection_class=psycopg.Connection[DictRow],
            kwargs={**settings.connection_kwargs(), "row_factory": dict_row},
            min_size=settings.pool_size,
            max_size=settings.pool_size + settings.max_overflow,
            open=False,
            configure=self.after_connect_func(),
            timeout=float(settings.connect_timeout),
            reconnect_timeout=math.inf,
        )

    def after_connect_func(self) -> Callable[[psycopg.Connection[Any]], None]:
        library_setup = super().after_connect_func()
        # The run index's tables are named without a schema; the search path puts them in ours.
        set_search_path = SQL("SET search_path TO {0}").format(Identifier(self.schema))

        def after_connect(conn: psycopg.Connection[Any]) -> None:
            library_setup(conn)
            conn.execute(set_search_path)

        return after_connect


def _retry_once(method: Any) -> Any:
    """Call a library recorder method without its own retry loop, retrying once at most.

    The library retries connection errors ten times, each waiting up to the pool timeout:
    close to a minute before a caller hears the server is down. One retry, after the pool
    has dropped its broken connections, is enough to get past a server restart.
    """
    inner = method.__wrapped__

    @functools.wraps(inner)
    def call(self: PostgresAggregateRecorder, *args: Any, **kwargs: Any) -> Any:
        try:
            return inner(self, *args, **kwargs)
        except (InterfaceError, OperationalError) as e:
            if isinstance(e.__cause__, PoolTimeout):
                raise  # no connection came within the timeout: the next wait would be as long
            self.datastore.pool.check()
            return inner(self, *args, **kwargs)

    return call


class _EventRecorder(PostgresApplicationRecorder):
    """The library's log recorder, notifying on a channel of its own schema."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        # The library names the channel after the table only; schemas would share it.
        self.channel_name = channel_name(datastore.schema, events_table_name)

    insert_events = _retry_once(PostgresApplicationRecorder.insert_events)
    select_events = _retry_once(PostgresApplicationRecorder.select_events)
    select_notifications = _retry_once(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _retry_once(PostgresApplicationRecorder.max_notification_id)


class _SnapshotRecorder(PostgresAggregateRecorder):
    insert_events = _retry_once(PostgresAggregateRecorder.insert_events)
    select_events = _retry_once(PostgresAggregateRecorder.select_events)


# --- the listener -----------------------------------------------------------------------------


class PostgresLogListener:
    """One LISTEN connection and its thread; calls ``on_notify`` whenever the log may have grown.

    ``on_notify`` runs on the listener's thread, for each batch of notifications and after
    every (re)connection too, since what was committed while the listener was away notified
    nobody. A lost connection is opened again, with a backoff up to ``max_backoff`` seconds,
    until :meth:`close`.
    """

    def __init__(
        self,
        connection_kwargs: dict[str, Any],
        channel: str,
        on_notify: Callable[[], None],
        *,
        max_backoff: float = 2.0,
    ) -> None:
        self._connection_kwargs = connection_kwargs
        self._listen = SQL("LISTEN {0}").format(Identifier(channel))
        self._on_notify = on_notify
        self._backoff = Backoff(base=0.05, cap=max_backoff)
        self._stopping = threading.Event()
        self._stop_receiver, self._stop_sender = socket.socketpair()
        self._state = threading.Condition()
        self._sessions = 0
        self._backend_pid: int | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"flowweaver-listen-{channel}", daemon=True
        )

    def start(self) -> None:
        """Start the thread; it connects in the background."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Return whether the listener's thread is running."""
        return self._thread.is_alive()

    @property
    def sessions(self) -> int:
        """Return how many LISTEN sessions were started so far (reconnections included)."""
        with self._state:
            return self._sessions

    @property
    def backend_pid(self) -> int | None:
        """Return the server process id of the live LISTEN session, None while disconnected."""
        with self._state:
            return self._backend_pid

    def wait_listening(self, timeout: float, *, after_session: int = 0) -> bool:
        """Block until a LISTEN session later than ``after_session`` is live (False on timeout)."""
        with self._state:
            return self._state.wait_for(
                lambda: self._backend_pid is not None and self._sessions > after_session,
                timeout,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connection; return within ``timeout`` seconds."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._stop_sender.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._stop_receiver.close()
            self._stop_sender.close()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                connection = psycopg.connect(**self._connection_kwargs, autocommit=True)
            except psycopg.Error as e:
                failures += 1
                if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th...: a line, not a flood
                    log.warning("log_listener_connect_failed", error=str(e), failures=failures)
                self._stopping.wait(self._backoff.delay(failures))
                continue
            try:
                with connection:
                    connection.execute(self._listen)
                    failures = 0
                    self._listening(connection.info.backend_pid)
                    self._on_notify()
                    self._receive(connection)
            except psycopg.Error as e:
                failures += 1
                log.warning("log_listener_lost", error=str(e))
                self._stopping.wait(self._backoff.delay(failures))
            finally:
                self._listening(None)

    def _listening(self, backend_pid: int | None) -> None:
        with self._state:
            if backend_pid is not None:
                self._sessions += 1
            self._backend_pid = backend_pid
            self._state.notify_all()

    def _receive(self, connection: psycopg.Connection[Any]) -> None:
        socket_fd, stop_fd = connection.fileno(), self._stop_receiver.fileno()
        while not self._stopping.is_set():
            readable, _, _ = select.select([socket_fd, stop_fd], [], [])
            if stop_fd in readable:
                return
            # Readable: notifications, or the end of the connection (then this raises).
            # Only the wake-up matters, not what the notifications say.
            for _ in connection.notifies(timeout=0):
                pass
            self._on_notify()


# --- the store --------------------------------------------------------------------------------


class PostgresEventStore(RecorderEventStore):
    """Runs and workflows in one PostgreSQL schema, shared by every process that opens it.

    Global positions are the log's notification ids: strictly increasing in commit order
    across processes, because each append holds the table's EXCLUSIVE lock until it commits,
    so no reader sees one appear below a position it has read. They may skip numbers: a
    refused append (a version taken, a repeated idempotency key) used up its ids. That
    lock also serializes every append of every process: batch several runs' events into
    one :meth:`append` where you can (see benchmarks/postgres_store.py).
    """

    def __init__(
        self,
        settings: PostgresSettings,
        *,
        snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL,
    ) -> None:
        self.settings = settings
        self.schema = settings.schema
        self.channel = channel_name(settings.schema)
        self._datastore = _Datastore(settings)
        try:
            with self._setup_lock():
                events = _EventRecorder(self._datastore, events_table_name=EVENTS_TABLE)
                snapshots = _SnapshotRecorder(self._datastore, events_table_name=SNAPSHOTS_TABLE)
                index = SQLRunIndex(self._transaction, placeholder="%s")
                events.create_table()
                snapshots.create_table()
                index.create_tables()
                with self._transaction(commit=True) as cursor:
                    cursor.execute(
                        append_function_sql(settings.schema, EVENTS_TABLE, events.channel_name)
                    )
                    cursor.execute(requests_table_sql(settings.schema))
        except (psycopg.Error, PersistenceError) as e:
            self._datastore.close()
            raise StoreError(f"cannot open the PostgreSQL store at {self._where()}: {e}") from e
        super().__init__(
            events,
            snapshots,
            index,
            snapshot_interval=snapshot_interval,
            poll_interval=settings.poll_interval,
        )
        self._ping_statement = SQL("SELECT 1 FROM {0}.{1} LIMIT 1").format(
            Identifier(self.schema), Identifier(EVENTS_TABLE)
        )
        self.listener = PostgresLogListener(
            settings.connection_kwargs("flowweaver-listener"), self.channel, self._wake_waiters
        )
        self.listener.start()
        self._leases: PostgresLeases | None = None
        self._leases_lock = threading.Lock()
        self._relays: list[PostgresOperatorRelay] = []
        self._admission = PostgresAdmissionLocks(
            settings.connection_kwargs("flowweaver-admission"), settings.schema
        )

    # --- leases and the fenced append ------------------------------------------------------

    def open_leases(
        self,
        node: str,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        session_timeout: float = SESSION_TIMEOUT,
    ) -> PostgresLeases:
        """Open this node's run leases; until they close, run appends go through them.

        The engine calls this when it starts on the store. From then on every
        :meth:`append` runs on the lease session, fenced by the leases (see
        :mod:`flowweaver_postgres.leases`). One engine per store object: a second
        ``open_leases`` while the first is open is refused.

        Raises:
            StoreConfigError: this store already has open leases.
            StoreError: the lease session cannot be opened.
        """
        with self._leases_lock:
            if self._leases is not None:
                raise StoreConfigError(
                    f"this store already has open leases (node {self._leases.node}): "
                    "open one store per engine"
                )
            leases = PostgresLeases(
                self.settings,
                node,
                heartbeat_interval=heartbeat_interval,
                session_timeout=session_timeout,
                on_close=self._leases_closed,
            )
            if leases.backend_pid is None:
                leases.close()
                raise StoreError(f"cannot open a lease session on {self._where()}")
            self._leases = leases
        return leases

    def open_operator_relay(
        self,
        node: str,
        *,
        owns: Callable[[str], bool],
        handle: Callable[[str, bytes], bytes],
    ) -> PostgresOperatorRelay:
        """Open this node's operator relay (see :mod:`flowweaver_postgres.relay`): it answers
        actions relayed for the runs ``owns`` says are this node's with ``handle``, and sends
        this node's actions for runs another node owns. It closes with the store.
        """
        channel = channel_name(self.schema, REQUESTS_TABLE)
        kwargs = self.settings.connection_kwargs("flowweaver-relay")
        relay = PostgresOperatorRelay(
            self._transaction,
            self.schema,
            channel,
            node,
            owns=owns,
            handle=handle,
            listener=lambda wake: PostgresLogListener(kwargs, channel, wake),
        )
        self._relays.append(relay)
        return relay

    def admission_lock(self, group: str) -> AbstractContextManager[None]:
        """Hold the cluster-wide admission lock of ``group`` (flowweaver_postgres.admission).

        Raises:
            StoreError: the lock cannot be taken.
        """
        return self._admission.hold(group)

    def _leases_closed(self, leases: PostgresLeases) -> None:
        with self._leases_lock:
            if self._leases is leases:
                self._leases = None

    def append(self, appends: Sequence[Append]) -> list[int]:
        """Store every event of every append atomically; fenced by the leases when open.

        Raises:
            ConcurrencyError: a version is taken, or (with leases) a run this node does not
                own; nothing of the batch was stored.
            StoreError: the database failed, or the lease session is down; nothing stored.
        """
        leases = self._leases
        if leases is None:
            return super().append(appends)
        stored, heads = self._chained_events(appends)
        if not stored:
            return []
        try:
            positions = leases.append(stored, appends)
        except BaseException:
            self._forget_heads(heads)
            raise
        self._remember_heads(heads)
        self._wake_waiters()
        return positions

    def _where(self) -> str:
        s = self.settings
        return f"{s.host}:{s.port}/{s.dbname} schema {s.schema}"

    @contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """Create the schema and hold the setup lock, so concurrent openers take turns."""
        with psycopg.connect(**self.settings.connection_kwargs(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (_DDL_LOCK_CLASS, self.schema)
            )
            conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(self.schema)))
            yield  # closing the session releases the lock

    @contextmanager
    def _transaction(self, commit: bool) -> Iterator[psycopg.Cursor[DictRow]]:
        with self._datastore.transaction(commit=commit) as cursor:
            yield cursor

    def ping(self) -> None:
        """Return when the database answers, within about ``ping_timeout`` seconds.

        A fresh connection, not a pooled one: its connect timeout bounds the wait even when
        the server accepts connections but never answers.

        Raises:
            StoreError: it does not answer in time, or the store's tables are gone.
        """
        timeout = self.settings.ping_timeout
        kwargs = self.settings.connection_kwargs("flowweaver-ping")
        kwargs.update(connect_timeout=timeout, options=f"-c statement_timeout={timeout * 1000}")
        try:
            with psycopg.connect(**kwargs, autocommit=True) as conn:
                conn.execute(self._ping_statement)
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self._where()} does not answer: {e}") from e

    def close(self) -> None:
        """Stop the listener and close every connection (and the leases, if open)."""
        for relay in self._relays:
            relay.close()
        self._admission.close()
        leases = self._leases
        if leases is not None:
            leases.close()
        self.listener.close()
        super().close()


def open_store(url: str) -> PostgresEventStore:
    """Open the store a ``postgresql://`` URL names (the ``flowweaver.stores`` entry point).

    Raises:
        StoreConfigError: the URL has bad options.
        StoreError: the database cannot be reached.
    """
    return PostgresEventStore(parse_url(url))


__all__ = [
    "PostgresEventStore",
    "PostgresLogListener",
    "PostgresSettings",
    "channel_name",
    "open_store",
    "parse_url",
]
