"""Operator actions relayed to the node that owns the run, over PostgreSQL.

A node that gets an action for a run it does not own writes it as a row of the schema's
``fw_operator_requests`` table and sends ``NOTIFY`` on the table's own channel (not the log's:
the log's listeners never wake for it). Every node's relay listens there; a node that owns
the row's run (its lease session holds the run's lock) *claims* the row (``UPDATE ... WHERE
claimed_by IS NULL``, so one node at most), hands the action to its run actor, writes the
answer in the row and notifies again. The sender reads the answer and deletes the row.

Why a table and not the notification's payload: a payload is at most 8000 bytes, and a task
completed by hand carries its output (up to the task data limit, 1 MiB by default); the row
also survives a listener's reconnection, which a notification does not (each node scans the
table whenever its listener (re)connects, and every second as a fallback).

Bounds: a request body of at most ``MAX_BODY_BYTES``; a sender waits at most its
``claim_timeout`` for a claim (none comes while the owner is dead and its leases have not
lapsed: the sender withdraws the row, which a claim and a withdrawal decide atomically, so an
unclaimed action is never done) and its ``timeout`` for the answer; rows older than
``STALE_AFTER_S`` (their sender gave up) are deleted by the next scan.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from flowweaver.errors import StoreError

log = structlog.get_logger(__name__)

REQUESTS_TABLE = "fw_operator_requests"
MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest action a node relays (a hand-given output under the task data limit fits)."""
MAX_ANSWER_BYTES = 64 * 1024
"""The largest answer stored; a longer one is cut to an error the sender reports."""
SCAN_INTERVAL_S = 1.0
"""How often a node looks for requests it owns when no notification woke it."""
STALE_AFTER_S = 60.0
"""Rows older than this were given up by their sender; a scan deletes them."""
HANDLER_THREADS = 4


def requests_table_sql(schema: str) -> Composed:
    """Return the DDL of the requests table."""
    return SQL(
        "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
        "id uuid PRIMARY KEY, run_id text NOT NULL, body bytea NOT NULL, "
        "created_at timestamptz NOT NULL DEFAULT now(), claimed_by text, answer bytea)"
    ).format(schema=Identifier(schema), table=Identifier(REQUESTS_TABLE))


class Listener(Protocol):
    """A LISTEN session that calls back on each notification (store.PostgresLogListener)."""

    def start(self) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


Transaction = Callable[[bool], contextlib.AbstractContextManager[psycopg.Cursor[DictRow]]]


class PostgresOperatorRelay:
    """One node's relay: sends actions for runs it does not own, answers those it owns.

    Threads: the listener's (wake-ups), a scanner (claims requests for runs this node owns),
    and up to ``HANDLER_THREADS`` that wait for the run actors' answers.
    """

    def __init__(
        self,
        transaction: Transaction,
        schema: str,
        channel: str,
        node: str,
        *,
        owns: Callable[[str], bool],
        handle: Callable[[str, bytes], bytes],
        listener: Callable[[Callable[[], None]], Listener],
    ) -> None:
        self._transaction = transaction
        self._node = node
        self._owns = owns
        self._handle = handle
        self._channel = channel
        self._table = SQL("{0}.{1}").format(Identifier(schema), Identifier(REQUESTS_TABLE))
        self._wakeups = threading.Condition()
        self._generation = 0
        self._closing = threading.Event()
        self._handlers = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="flowweaver-relay")
        self._claimed: set[uuid.UUID] = set()
        self._last_cleanup = 0.0
        self._listener = listener(self._wake)
        self._listener.start()
        self._scanner = threading.Thread(
            target=self._scan_loop, name="flowweaver-relay-scan", daemon=True
        )
        self._scanner.start()

    # --- sending ----------------------------------------------------------------------------

    def request(
        self, run_id: str, body: bytes, *, claim_timeout: float, timeout: float
    ) -> bytes | None:
        """Send ``body`` to the node that owns ``run_id``; return its answer (see
        :class:`flowweaver.ports.OperatorRelay`).

        Raises:
            ValueError: ``body`` is larger than ``MAX_BODY_BYTES``.
            TimeoutError: a node took it and did not answer within ``timeout`` seconds.
            StoreError: the database failed.
        """
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"an action of {len(body)} bytes is over {MAX_BODY_BYTES}")
        request_id = uuid.uuid4()
        started = time.monotonic()
        claim_deadline, deadline = started + claim_timeout, started + timeout
        with self._database():
            with self._transaction(True) as cursor:
                cursor.execute(
                    SQL("INSERT INTO {0} (id, run_id, body) VALUES (%s, %s, %s)").format(
                        self._table
                    ),
                    (request_id, run_id, body),
                )
                cursor.execute("SELECT pg_notify(%s, '')", (self._channel,))
            while True:
                seen = self._generation
                row = self._fetch("SELECT claimed_by, answer FROM {0} WHERE id = %s", request_id)
                if row is None:
                    return None  # deleted as stale: nobody took it
                if row["answer"] is not None:
                    self._fetch("DELETE FROM {0} WHERE id = %s RETURNING id", request_id)
                    return bytes(row["answer"])
                now = time.monotonic()
                if row["claimed_by"] is None and now >= min(claim_deadline, deadline):
                    withdrawn = self._fetch(
                        "DELETE FROM {0} WHERE id = %s AND claimed_by IS NULL RETURNING id",
                        request_id,
                    )
                    if withdrawn is not None:
                        return None
                    continue  # claimed just now: wait for its answer
                if now >= deadline:
                    self._fetch("DELETE FROM {0} WHERE id = %s RETURNING id", request_id)
                    raise TimeoutError(
                        f"node {row['claimed_by']} took the action and did not answer in time"
                    )
                until = deadline if row["claimed_by"] is not None else claim_deadline
                self._wait(seen, min(until - now, SCAN_INTERVAL_S))

    # --- answering -------------------------------------------------------------------------

    def _scan_loop(self) -> None:
        failures = 0
        while not self._closing.is_set():
            seen = self._generation
            try:
                self._scan()
                failures = 0
            except (psycopg.Error, PersistenceError, StoreError) as e:
                failures += 1
                if failures & (failures - 1) == 0:
                    log.warning("relay_scan_failed", error=str(e), failures=failures)
            except Exception:  # a bug must not end answering for the life of the process
                log.exception("relay_scan_crashed")
            self._wait(seen, SCAN_INTERVAL_S)

    def _scan(self) -> None:
        """Claim the unclaimed requests for runs this node owns and answer each on a thread."""
        with self._transaction(False) as cursor:
            cursor.execute(
                SQL(
                    "SELECT id, run_id FROM {0} WHERE claimed_by IS NULL AND answer IS NULL"
                ).format(self._table)
            )
            waiting = [(row["id"], row["run_id"]) for row in cursor.fetchall()]
        for request_id, run_id in waiting:
            if self._closing.is_set() or request_id in self._claimed or not self._owns(run_id):
                continue
            with self._transaction(True) as cursor:
                cursor.execute(
                    SQL(
                        "UPDATE {0} SET claimed_by = %s WHERE id = %s AND claimed_by IS NULL "
                        "RETURNING body"
                    ).format(self._table),
                    (self._node, request_id),
                )
                claimed = cursor.fetchone()
            if claimed is None:
                continue  # withdrawn, or another node claimed it
            self._claimed.add(request_id)
            self._handlers.submit(self._answer, request_id, run_id, bytes(claimed["body"]))
        now = time.monotonic()
        if now - self._last_cleanup > STALE_AFTER_S / 2:
            self._last_cleanup = now
            with self._transaction(True) as cursor:
                cursor.execute(
                    SQL(
                        "DELETE FROM {0} WHERE created_at < now() - make_interval(secs => %s)"
                    ).format(self._table),
                    (STALE_AFTER_S,),
                )

    def _answer(self, request_id: uuid.UUID, run_id: str, body: bytes) -> None:
        try:
            answer = self._handle(run_id, body)
            if len(answer) > MAX_ANSWER_BYTES:
                log.error("relay_answer_too_large", run_id=run_id, size=len(answer))
                return  # the sender times out and says so
            with self._database(), self._transaction(True) as cursor:
                cursor.execute(
                    SQL("UPDATE {0} SET answer = %s WHERE id = %s").format(self._table),
                    (answer, request_id),
                )
                cursor.execute("SELECT pg_notify(%s, '')", (self._channel,))
        except StoreError as e:
            log.warning("relay_answer_failed", run_id=run_id, error=str(e))
        except Exception:
            log.exception("relay_answer_crashed", run_id=run_id)
        finally:
            self._claimed.discard(request_id)

    # --- plumbing --------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._wakeups:
            self._generation += 1
            self._wakeups.notify_all()

    def _wait(self, seen: int, timeout: float) -> None:
        with self._wakeups:
            self._wakeups.wait_for(
                lambda: self._generation != seen or self._closing.is_set(), max(0.0, timeout)
            )

    def _fetch(self, statement: str, request_id: uuid.UUID) -> dict[str, Any] | None:
        with self._transaction(True) as cursor:
            cursor.execute(SQL(statement).format(self._table), (request_id,))
            row = cursor.fetchone()
        return dict(row) if row is not None else None

    @contextlib.contextmanager
    def _database(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.Error, PersistenceError) as e:
            raise StoreError(f"the operator relay failed: {e}") from e

    def close(self) -> None:
        """Stop answering: the listener, the scanner, and the threads waiting for answers."""
        self._closing.set()
        self._wake()
        self._listener.close()
        self._scanner.join(timeout=5)
        self._handlers.shutdown(wait=True, cancel_futures=True)
