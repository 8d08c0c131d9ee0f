"""The run list read model in SQL tables, shared by the SQLite store and SQL adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from flowweaver.ports import RunRow
from flowweaver.store.base import ACTIVE_STATUSES, IndexChanges, RunIndex

_COLUMNS = (
    "seq, run_id, workflow_id, workflow_version, status, created_at, updated_at, "
    "parent_run_id, parent_version, submitted_by"
)
# Columns added after the first release, created on open when a table lacks them.
_ADDED_COLUMNS = (
    ("parent_run_id", "TEXT"),
    ("parent_version", "BIGINT"),
    ("submitted_by", "TEXT"),
)


class SQLCursor(Protocol):
    """The part of a DB-API cursor the index uses; rows must allow access by column name."""

    def execute(self, statement: Any, params: Any = ...) -> Any: ...

    def fetchall(self) -> Any: ...

    def fetchone(self) -> Any: ...

    @property
    def description(self) -> Any: ...


Transaction = Callable[[bool], AbstractContextManager[SQLCursor]]


class _Moved(Exception):  # noqa: N818 - control flow inside a transaction, never escapes
    """Another process advanced the index first; roll back."""


class SQLRunIndex(RunIndex):
    """Tables ``<prefix>runs``, ``<prefix>workflows`` and ``<prefix>position``.

    ``transaction(commit)`` opens a transaction and yields a cursor; ``placeholder`` is the
    driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg).
    """

    def __init__(self, transaction: Transaction, *, placeholder: str = "?", prefix: str = "fw_"):
        self._transaction = transaction
        self._p = placeholder
        self._runs = f"{prefix}runs"
        self._workflows = f"{prefix}workflows"
        self._position = f"{prefix}position"

    def create_tables(self) -> None:
        """Create the tables and indexes when they do not exist yet."""
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self._runs} ("
            "seq BIGINT PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, workflow_id TEXT NOT NULL, "
            "workflow_version INTEGER NOT NULL, status TEXT NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL, "
            "parent_run_id TEXT, parent_version BIGINT, submitted_by TEXT)",
            f"CREATE INDEX IF NOT EXISTS {self._runs}_by_workflow "
            f"ON {self._runs} (workflow_id, seq)",
            f"CREATE INDEX IF NOT EXISTS {self._runs}_by_status ON {self._runs} (status, seq)",
            f"CREATE TABLE IF NOT EXISTS {self._workflows} ("
            "workflow_id TEXT PRIMARY KEY, version INTEGER NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self._position} ("
            "name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            f"INSERT INTO {self._position} (name, position) VALUES ('runs', 0) "
            "ON CONFLICT (name) DO NOTHING",
        ]
        with self._transaction(True) as cursor:
            for statement in statements:
                cursor.execute(statement)
            # A table made by an earlier release lacks the newer columns: add them. Its rows
            # are runs that were started, not forked, so NULL is their parent.
            cursor.execute(f"SELECT * FROM {self._runs} WHERE 1 = 0")
            have = {column[0] for column in cursor.description}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    cursor.execute(f"ALTER TABLE {self._runs} ADD COLUMN {name} {kind}")
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {self._runs}_by_parent "
                f"ON {self._runs} (parent_run_id, seq)"
            )
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {self._runs}_by_submitter "
                f"ON {self._runs} (submitted_by, seq)"
            )

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._p) if self._p != "?" else statement

    def position(self) -> int:
        with self._transaction(False) as cursor:
            cursor.execute(self._sql(f"SELECT position FROM {self._position} WHERE name = 'runs'"))
            row = cursor.fetchone()
        return int(row["position"]) if row else 0

    def advance(self, expected: int, new: int, changes: IndexChanges) -> bool:
        try:
            with self._transaction(True) as cursor:
                # Update first: it takes the write lock, so the check below cannot go stale.
                cursor.execute(
                    self._sql(
                        f"UPDATE {self._position} SET position = ? "
                        "WHERE name = 'runs' AND position = ?"
                    ),
                    (new, expected),
                )
                cursor.execute(
                    self._sql(f"SELECT position FROM {self._position} WHERE name = 'runs'")
                )
                row = cursor.fetchone()
                if row is None or int(row["position"]) != new:
                    raise _Moved
                for statement, params in self._statements(changes):
                    cursor.execute(self._sql(statement), params)
        except _Moved:
            return False
        return True

    def _statements(self, changes: IndexChanges) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for seq, row in changes.started:
            yield (
                f"INSERT INTO {self._runs} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO NOTHING",
                (
                    seq,
                    row.id,
                    row.workflow_id,
                    row.workflow_version,
                    row.status,
                    row.created_at.isoformat(),
                    row.updated_at.isoformat(),
                    row.parent_run_id,
                    row.parent_version,
                    row.submitted_by,
                ),
            )
        for run_id, status, at in changes.changed:
            yield (
                f"UPDATE {self._runs} SET status = ?, updated_at = ? WHERE run_id = ?",
                (status, at.isoformat(), run_id),
            )
        for workflow_id, version in changes.workflows.items():
            yield (
                f"INSERT INTO {self._workflows} (workflow_id, version) VALUES (?, ?) "
                "ON CONFLICT (workflow_id) DO UPDATE SET version = excluded.version",
                (workflow_id, version),
            )

    def runs(
        self,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
        submitted_by: str | None = None,
    ) -> list[tuple[int, RunRow]]:
        clauses: list[str] = []
        params: list[Any] = []
        if submitted_by is not None:
            clauses.append("submitted_by = ?")
            params.append(submitted_by)
        if workflow_id is not None:
            clauses.append("workflow_id = ?")
            params.append(workflow_id)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        return self._select(clauses, params, limit)

    def children(
        self, parent_run_id: str, limit: int, before: int | None
    ) -> list[tuple[int, RunRow]]:
        clauses = ["parent_run_id = ?"]
        params: list[Any] = [parent_run_id]
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        return self._select(clauses, params, limit)

    def _select(
        self, clauses: list[str], params: list[Any], limit: int
    ) -> list[tuple[int, RunRow]]:
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        statement = f"SELECT {_COLUMNS} FROM {self._runs} {where}ORDER BY seq DESC LIMIT ?"
        with self._transaction(False) as cursor:
            cursor.execute(self._sql(statement), (*params, limit))
            rows = cursor.fetchall()
        return [
            (
                int(r["seq"]),
                RunRow(
                    id=r["run_id"],
                    workflow_id=r["workflow_id"],
                    workflow_version=int(r["workflow_version"]),
                    status=r["status"],
                    created_at=datetime.fromisoformat(r["created_at"]),
                    updated_at=datetime.fromisoformat(r["updated_at"]),
                    parent_run_id=r["parent_run_id"],
                    parent_version=(
                        int(r["parent_version"]) if r["parent_version"] is not None else None
                    ),
                    submitted_by=r["submitted_by"],
                ),
            )
            for r in rows
        ]

    def active(self) -> list[str]:
        with self._transaction(False) as cursor:
            marks = ", ".join("?" * len(ACTIVE_STATUSES))
            cursor.execute(
                self._sql(
                    f"SELECT run_id FROM {self._runs} WHERE status IN ({marks}) ORDER BY seq"
                ),
                ACTIVE_STATUSES,
            )
            return [r["run_id"] for r in cursor.fetchall()]

    def workflow_ids(self) -> list[str]:
        with self._transaction(False) as cursor:
            cursor.execute(f"SELECT workflow_id FROM {self._workflows} ORDER BY workflow_id")
            return [r["workflow_id"] for r in cursor.fetchall()]
