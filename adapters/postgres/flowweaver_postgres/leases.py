"""Run leases on PostgreSQL: session-level advisory locks on one connection per node.

A node owns a run while its *lease session* holds the advisory lock keyed from the run id
(``pg_try_advisory_lock(bigint)``; the store's setup lock uses the two-int4 key space, so
the two never meet). The lock lives as long as the session: a killed process's socket is
closed by its kernel and the server ends the session at once; a frozen process (SIGSTOP, a
VM paused, a partition) stops sending heartbeats and the server ends its session after
``idle_session_timeout``. Either way every lease of that node lapses together, and another
node's takeover scan acquires them.

Fencing: once leases are open, every run append of the process goes through the lease
session (see :meth:`PostgresLeases.append`), as one call of the schema's ``fw_append``
function: it takes each run's lock at transaction level (``pg_try_advisory_xact_lock``,
which a session holding the session-level lock always gets and no other session can get),
then does what the library's recorder does for an insert (the log's EXCLUSIVE table lock,
NOTIFY, the rows). So an append commits only on a live session that no other session's
lease contradicts at commit time: a node whose session was ended, and whose runs another
node took, cannot commit anything to them, however long it was frozen and whatever its own
clock or heartbeat says.

Why a function and not the recorder's pipelined insert on this connection: after a
pipeline, psycopg's last message is a Flush, and PostgreSQL arms ``idle_session_timeout``
only when it sends ReadyForQuery; a node frozen right after a pipelined append kept its
session, and its leases, for ever. One statement per append ends with Sync like any other.
Its events go as plain arrays (ids, versions, topics, JSON), which psycopg dumps in C, not
as the recorder's composite type, dumped in Python: 0.72 against 0.83 ms per single-event
append on the development machine (the recorder's pipelined path: 1.7 ms).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import psycopg
import structlog
from eventsourcing.persistence import StoredEvent
from psycopg.rows import DictRow, dict_row
from psycopg.sql import SQL, Composed, Identifier

from flowweaver.backoff import Backoff
from flowweaver.errors import ConcurrencyError, StoreError
from flowweaver.ports import Append

if TYPE_CHECKING:
    from flowweaver_postgres.store import PostgresSettings

log = structlog.get_logger(__name__)

APPEND_FUNCTION = "fw_append"
# The SQLSTATE fw_append raises when another session holds one of the runs.
FENCE_SQLSTATE = "FW001"
HEARTBEAT_INTERVAL = 0.5
SESSION_TIMEOUT = 2.5
_RECONNECT = Backoff(base=0.05, cap=1.0)
"""Waits between failed connections of the lease session: 0.1 s, doubling to 1 s."""


def lease_key(schema: str, run_id: str) -> int:
    """Return the bigint advisory-lock key of a run: schemas on one database never share one."""
    digest = hashlib.blake2b(f"{schema}/{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def append_function_sql(schema: str, table: str, channel: str) -> Composed:
    """Return the DDL of ``fw_append``: the fenced insert, and the leases of new runs.

    ``fw_append(keys, new_keys, ids, versions, topics, states, lock_timeout_s)`` takes each
    of ``keys``' advisory locks for the transaction, raising FW001 with the refused keys in
    its detail when another session holds any; then, like the library's
    ``PostgresApplicationRecorder``, it takes the log's EXCLUSIVE lock (waiting at most
    ``lock_timeout_s`` seconds), sends NOTIFY and inserts the rows. It returns their
    notification ids in order, as ``(appended, NULL)`` rows. Once the rows are in, it takes
    the session-level locks of ``new_keys`` (the runs it creates), and returns each one it
    could not take as a ``(NULL, refused)`` row.
    """
    return SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{name}("
        "keys bigint[], new_keys bigint[], ids uuid[], versions bigint[], topics text[], "
        "states bytea[], lock_timeout_s integer) "
        "RETURNS TABLE (appended bigint, refused bigint) LANGUAGE plpgsql AS $body$ "
        "DECLARE taken bigint[]; "
        "BEGIN "
        "  SELECT array_agg(k) INTO taken FROM unnest(keys) AS k "
        "   WHERE NOT pg_try_advisory_xact_lock(k); "
        "  IF taken IS NOT NULL THEN "
        "    RAISE EXCEPTION USING ERRCODE = {code}, "
        "      MESSAGE = 'run lease held by another session', "
        "      DETAIL = array_to_string(taken, ','); "
        "  END IF; "
        "  PERFORM set_config('lock_timeout', lock_timeout_s || 's', true); "
        "  LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
        "  NOTIFY {channel}; "
        "  RETURN QUERY WITH rows AS ("
        "    INSERT INTO {schema}.{table} AS t (originator_id, originator_version, topic, state) "
        "    SELECT * FROM unnest(ids, versions, topics, states) RETURNING t.notification_id) "
        "    SELECT rows.notification_id, NULL::bigint FROM rows; "
        "  RETURN QUERY SELECT NULL::bigint, k FROM unnest(new_keys) AS k "
        "    WHERE NOT pg_try_advisory_lock(k); "
        "END $body$"
    ).format(
        schema=Identifier(schema),
        name=Identifier(APPEND_FUNCTION),
        table=Identifier(table),
        channel=Identifier(channel),
        code=FENCE_SQLSTATE,
    )


class PostgresLeases:
    """The :class:`flowweaver.ports.Leases` of one node, on its own lease session.

    One connection, not pooled, opened with ``idle_session_timeout`` and
    ``idle_in_transaction_session_timeout`` of ``session_timeout`` seconds and short TCP
    keepalives. A heartbeat thread runs ``SELECT 1`` every ``heartbeat_interval`` seconds
    (and gives back released leases in the same round trip). When the session dies (a failed
    heartbeat, append or acquire), every lease is gone: the callbacks given to
    :meth:`on_lost` are called from the heartbeat thread, then it opens a new session, on
    which runs can be acquired again.
    """

    shared = True

    def __init__(
        self,
        settings: PostgresSettings,
        node: str,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        session_timeout: float = SESSION_TIMEOUT,
        on_close: Callable[[PostgresLeases], None] | None = None,
    ) -> None:
        if session_timeout < 2 * heartbeat_interval:
            raise ValueError("session_timeout must be at least twice the heartbeat interval")
        self.settings = settings
        self.schema = settings.schema
        self.node = node
        self.heartbeat_interval = heartbeat_interval
        self.session_timeout = session_timeout
        # holds() asks the server when the last sign of life of the session is older.
        self.stale_after = heartbeat_interval * 1.5
        # Each lease is a slot of the server's lock table, which every session shares: when
        # it is full, any lock of any session fails ("out of shared memory").
        self.max_leases = settings.max_leases
        self._on_close = on_close
        self._append = SQL("SELECT * FROM {0}.{1}(%s, %s, %s, %s, %s, %b, %s)").format(
            Identifier(self.schema), Identifier(APPEND_FUNCTION)
        )
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[DictRow] | None = None
        self._session = 0  # how many sessions were opened; 0 before the first
        self._backend_pid: int | None = None
        self._last_ok = 0.0
        self._held: dict[str, int] = {}  # run id -> key, on the current session
        self._key_holds: Counter[int] = Counter()
        self._unlocks: list[int] = []  # keys released, still to be given back to the server
        self._callbacks: list[Callable[[], None]] = []
        self._lost = threading.Event()  # set by whoever saw the session die; the thread acts
        self._stopping = threading.Event()
        self.closed = False
        self._connect_once()
        self._thread = threading.Thread(
            target=self._run, name=f"flowweaver-leases-{node}", daemon=True
        )
        self._thread.start()

    # --- the Leases port -----------------------------------------------------------------

    def acquire(self, run_id: str) -> bool:
        """Own ``run_id`` unless another session does; never waits for it."""
        with self._lock:
            conn = self._conn
            if conn is None or self.closed:
                return False
            if run_id in self._held:
                return True
            if len(self._held) >= self.max_leases:
                return False  # full: another node, or this one later, takes the run
            key = lease_key(self.schema, run_id)
            if self._ours_on_server(key):
                self._take(run_id, key)
                return True
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
            except psycopg.Error as e:
                # The session died, or the server refused (its lock table is full: see
                # max_locks_per_transaction in docs/cluster.md); either way not ours now.
                if not self._session_died_if_broken(conn, e):
                    log.warning("lease_acquire_failed", node=self.node, run_id=run_id, error=str(e))
                return False
            self._last_ok = time.monotonic()
            if row is None or not row["ok"]:
                return False
            self._take(run_id, key)
            return True

    def release(self, run_id: str) -> None:
        """Give up ``run_id``; the server is told with the next heartbeat (within a second)."""
        with self._lock:
            key = self._held.pop(run_id, None)
            if key is None:
                return
            self._key_holds[key] -= 1
            if self._key_holds[key] <= 0:
                del self._key_holds[key]
                self._unlocks.append(key)

    def holds(self, run_id: str) -> bool:
        """Say whether this node owns ``run_id``, asking the server if the session was quiet.

        When nothing went over the session for ``stale_after`` seconds (this process was
        frozen, or its heartbeat starved) the answer comes from a round trip, so a node
        that wakes up after losing its session learns it before deciding anything. The
        fence in :meth:`append` does not depend on this answer.
        """
        # Without the lock: run actors ask before every append, and an append holds the lock
        # for its round trip. Reads of a dict and a float are atomic.
        if self._conn is None or run_id not in self._held:
            return False
        if time.monotonic() - self._last_ok <= self.stale_after:
            return True
        with self._lock:
            conn = self._conn
            if conn is None or run_id not in self._held:
                return False
            try:
                conn.execute("SELECT 1")
            except psycopg.Error as e:
                self._session_died_if_broken(conn, e)
                return False
            self._last_ok = time.monotonic()
            return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the lease thread) whenever the session and its leases die."""
        self._callbacks.append(callback)

    def close(self) -> None:
        """End the session, releasing every lease at once, and stop the heartbeat thread."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._stopping.set()
            self._lost.set()  # wake the thread
            conn, self._conn = self._conn, None
            self._held.clear()
            self._key_holds.clear()
            self._unlocks.clear()
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                # The server frees a closed session's locks only once its backend has
                # ended, a moment after the socket closes: unlocking first frees them before
                # close() returns, so another node can take the runs at once.
                conn.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                conn.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self._on_close is not None:
            self._on_close(self)

    # --- state for tests and operators ---------------------------------------------------

    @property
    def backend_pid(self) -> int | None:
        """Return the server process id of the live lease session, None while there is none."""
        with self._lock:
            return self._backend_pid if self._conn is not None else None

    @property
    def sessions(self) -> int:
        """Return how many lease sessions were opened so far."""
        with self._lock:
            return self._session

    def held(self) -> list[str]:
        """Return the runs this node owns now."""
        with self._lock:
            return list(self._held)

    def wait_connected(self, timeout: float, *, after_session: int = 0) -> bool:
        """Block until a session later than ``after_session`` is live (False on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._conn is not None and self._session > after_session:
                    return True
            self._stopping.wait(0.02)
        return False

    # --- the fenced append ---------------------------------------------------------------

    def append(self, stored: Sequence[StoredEvent], appends: Sequence[Append]) -> list[int]:
        """Insert run events through the lease session, fenced by each run's lease.

        A run with ``expected_version`` above 0 must be held by this node, and the
        statement takes its lock too, which no other session can hold at the same time.
        A new run (version 1) needs no lease: its first version is unique; once its first
        events are in, the same call takes its lease, so the engine's acquire that follows
        needs no round trip. One call of ``fw_append``, one round trip, its own transaction.

        Raises:
            ConcurrencyError: a version is taken, or a run is not (or no longer) ours;
                nothing of the batch was stored.
            StoreError: the lease session is gone or the insert failed; nothing was stored.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError("the lease session is down: appends wait for a new one")
            held = self._held
            not_ours = [a.run_id for a in appends if a.expected_version and a.run_id not in held]
            if not_ours:
                raise ConcurrencyError(not_ours)
            # New runs are not fenced: the key (run, version 1) is unique, so a run is created
            # once, and a node that creates one owns nobody else's events by doing so. Their
            # leases are taken in the same call, once their first events are in.
            keys: dict[int, str] = {}
            created: dict[int, str] = {}
            for a in appends:
                key = lease_key(self.schema, a.run_id)
                if a.expected_version:
                    keys[key] = a.run_id
                else:
                    created[key] = a.run_id
            # A key this session holds already (a twin run, a release not given back) is not
            # locked again: each key is locked once, so one unlock gives it back.
            room = max(0, self.max_leases - len(self._held))
            new_keys = [k for k in created if not self._ours_on_server(k)][:room]
            try:
                rows = self._insert(conn, stored, list(keys), new_keys)
            except psycopg.Error as e:
                ids = [a.run_id for a in appends]
                if e.sqlstate == FENCE_SQLSTATE:
                    refused = [keys[int(k)] for k in (e.diag.message_detail or "").split(",") if k]
                    raise ConcurrencyError(refused or ids) from e
                if isinstance(e, psycopg.errors.UniqueViolation):
                    raise ConcurrencyError(ids) from e
                if isinstance(e, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
                    raise StoreError(f"append timed out waiting for the log: {e}") from e
                self._session_died_if_broken(conn, e)
                raise StoreError(f"append through the lease session failed: {e}") from e
            self._last_ok = time.monotonic()
            not_leased = {row["refused"] for row in rows if row["refused"] is not None}
            taken = set(new_keys) - not_leased
            for key, run_id in created.items():
                if run_id not in self._held and (key in taken or self._ours_on_server(key)):
                    self._take(run_id, key)
            return [row["appended"] for row in rows if row["appended"] is not None]

    def _insert(
        self,
        conn: psycopg.Connection[DictRow],
        stored: Sequence[StoredEvent],
        keys: list[int],
        new_keys: list[int],
    ) -> list[DictRow]:
        # Plain arrays, not the recorder's composite type: psycopg dumps these in C.
        params = (
            keys,
            new_keys,
            [e.originator_id for e in stored],
            [e.originator_version for e in stored],
            [e.topic for e in stored],
            [e.state for e in stored],
            self.settings.lock_timeout,
        )
        return conn.execute(self._append, params, prepare=True).fetchall()

    # --- the session ---------------------------------------------------------------------

    def _ours_on_server(self, key: int) -> bool:
        """Say whether this session holds ``key`` (for a held run, or a pending release)."""
        return bool(self._key_holds[key]) or key in self._unlocks

    def _take(self, run_id: str, key: int) -> None:
        """Record ``run_id`` as held; its key's lock is this session's. Lock held."""
        with contextlib.suppress(ValueError):
            self._unlocks.remove(key)  # a pending release of the same key is called off
        self._held[run_id] = key
        self._key_holds[key] += 1

    def _connect_once(self, failures: int = 0) -> bool:
        timeout_ms = int(self.session_timeout * 1000)
        kwargs = self.settings.connection_kwargs(f"flowweaver-leases {self.node}"[:63])
        kwargs.update(
            # A frozen node's session ends on the server, taking its leases with it.
            options=(
                f"-c idle_session_timeout={timeout_ms} "
                f"-c idle_in_transaction_session_timeout={timeout_ms} "
                f"-c statement_timeout={max(timeout_ms, self.settings.lock_timeout * 2000)}"
            ),
            # A vanished server is noticed within seconds, not the OS default of hours.
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=2,
            tcp_user_timeout=timeout_ms,
        )
        try:
            conn = psycopg.connect(**kwargs, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            self._connect_failed(e, failures)
            return False
        with self._lock:
            if self.closed:
                conn.close()
                return False
            self._conn = conn
            self._session += 1
            self._backend_pid = conn.info.backend_pid
            self._last_ok = time.monotonic()
        log.info(
            "lease_session_opened", node=self.node, session=self._session, pid=self._backend_pid
        )
        return True

    def _connect_failed(self, error: psycopg.Error, failures: int) -> None:
        if failures & (failures + 1) == 0:  # 1st, 2nd, 4th, 8th... try: a line, not a flood
            log.warning(
                "lease_session_connect_failed", node=self.node, error=str(error), tries=failures + 1
            )

    def _session_died_if_broken(self, conn: psycopg.Connection[DictRow], error: Exception) -> bool:
        """Treat the session as dead if ``error`` ended the connection; say whether it did.

        An error of one statement on a live session (a full lock table, a timeout) leaves
        every lease in place. Lock held.
        """
        if conn.closed or conn.broken:
            self._session_died(error)
            return True
        return False

    def _session_died(self, error: BaseException) -> None:
        """Forget the session and every lease on it; the thread tells the engine. Lock held."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        lost = len(self._held)
        self._held.clear()
        self._key_holds.clear()
        self._unlocks.clear()
        with contextlib.suppress(psycopg.Error):
            conn.close()
        if not self.closed:
            log.warning("lease_session_lost", node=self.node, error=str(error), leases=lost)
            self._lost.set()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._lost.wait(self.heartbeat_interval if self._conn is not None else 0):
                self._lost.clear()
                if self._stopping.is_set():
                    return
                for callback in list(self._callbacks):
                    try:
                        callback()
                    except Exception:  # one bad callback must not stop the leases
                        log.exception("lease_lost_callback_failed", node=self.node)
            if self._conn is None:
                if self._connect_once(failures):
                    failures = 0
                else:
                    failures += 1
                    self._stopping.wait(_RECONNECT.delay(failures))
                continue
            self._beat()

    def _beat(self) -> None:
        with self._lock:
            conn = self._conn
            if conn is None:
                return
            if not self._unlocks and time.monotonic() - self._last_ok < self.heartbeat_interval / 2:
                return  # an append or acquire just went over the session
            # Releases are given back here only, never inside an append's transaction: an
            # unlock that may or may not have run would leave us unsure what we hold.
            unlocks, self._unlocks = self._unlocks, []
            try:
                if unlocks:
                    conn.execute(_UNLOCK, (unlocks,))
                else:
                    conn.execute("SELECT 1")
            except psycopg.Error as e:
                if not self._session_died_if_broken(conn, e):
                    self._unlocks.extend(unlocks)  # refused, not run: still ours, try again
                    log.warning("lease_heartbeat_failed", node=self.node, error=str(e))
                return
            self._last_ok = time.monotonic()


_UNLOCK = "SELECT count(*) FILTER (WHERE pg_advisory_unlock(k)) FROM unnest(%s::bigint[]) AS k"

__all__ = ["APPEND_FUNCTION", "PostgresLeases", "append_function_sql", "lease_key"]
