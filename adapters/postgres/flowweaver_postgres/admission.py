"""Cluster-wide admission locks: one node at a time decides which runs of a group begin.

A workflow's concurrency limit holds across nodes because every decision that lets a run of a
group (workflow id and key value) begin, or queues it, is made holding the group's lock (see
:mod:`flowweaver.engine.admission`). Here that lock is a session-level advisory lock, in the
two-int4 key space (class ADMISSION_LOCK_CLASS, then the hash of the schema and the group), so
it meets neither the run leases (bigint keys) nor the schema setup lock (another class). It is
taken on a connection of its own, one group at a time per process. A killed process's session
ends with its socket, and the lock with it; a lock wait is bounded by LOCK_WAIT_MS.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import structlog

from flowweaver.errors import StoreError

log = structlog.get_logger(__name__)

ADMISSION_LOCK_CLASS = 0x46570002
LOCK_WAIT_MS = 10_000
"""How long a node waits for another to finish its admission decision (a few ms, usually)."""


class PostgresAdmissionLocks:
    """Advisory locks that make the nodes of a cluster take turns to admit runs."""

    def __init__(self, connection_kwargs: dict[str, Any], schema: str) -> None:
        self._kwargs = {**connection_kwargs, "autocommit": True}
        self._kwargs["options"] = f"-c statement_timeout={LOCK_WAIT_MS}"
        self._schema = schema
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False

    @contextlib.contextmanager
    def hold(self, group: str) -> Iterator[None]:
        """Hold the lock of ``group`` on every node while the block runs.

        Raises:
            StoreError: the database does not answer, or another node held the lock too long.
        """
        key = f"{self._schema}\n{group}"
        with self._lock:
            conn = self._lock_on_a_session(key)
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_CLASS, key))
                except psycopg.Error:
                    self._drop()  # the session's end lets the lock go

    def _lock_on_a_session(self, key: str) -> psycopg.Connection[Any]:
        for attempt in (1, 2):  # a session the server ended while idle: one new one
            try:
                conn = self._connection()
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_CLASS, key))
            except psycopg.Error as e:
                self._drop()
                if attempt == 2 or isinstance(e, psycopg.errors.QueryCanceled):
                    raise StoreError(f"cannot take the admission lock: {e}") from e
            else:
                return conn
        raise AssertionError("unreachable")

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(**self._kwargs)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def close(self) -> None:
        """Close the lock session (any lock held goes with it)."""
        with self._lock:
            self._closed = True
            self._drop()


_CLASS = ADMISSION_LOCK_CLASS
