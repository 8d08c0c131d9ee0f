"""The in-memory store: the library's POPO recorders and a dict read model. Lost on exit."""

from __future__ import annotations

import threading

import msgspec
from eventsourcing.popo import POPOAggregateRecorder, POPOApplicationRecorder

from flowweaver.ports import RunRow
from flowweaver.store.base import ACTIVE_STATUSES, IndexChanges, RecorderEventStore, RunIndex


class MemoryRunIndex(RunIndex):
    """The read model in dicts, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._position = 0
        self._runs: dict[str, tuple[int, RunRow]] = {}
        self._children: dict[str, list[tuple[int, RunRow]]] = {}
        self._workflows: dict[str, int] = {}

    def position(self) -> int:
        return self._position

    def advance(self, expected: int, new: int, changes: IndexChanges) -> bool:
        with self._lock:
            if self._position != expected:
                return False
            for seq, row in changes.started:
                if row.id in self._runs:
                    continue
                self._runs[row.id] = (seq, row)
                if row.parent_run_id is not None:
                    self._children.setdefault(row.parent_run_id, []).append((seq, row))
            for run_id, status, at in changes.changed:
                if run_id not in self._runs:
                    continue  # the log never started it: nothing to update, as in SQL
                seq, row = self._runs[run_id]
                self._runs[run_id] = (
                    seq,
                    msgspec.structs.replace(row, status=status, updated_at=at),
                )
            self._workflows.update(changes.workflows)
            self._position = new
            return True

    def runs(
        self,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
        submitted_by: str | None = None,
    ) -> list[tuple[int, RunRow]]:
        with self._lock:
            rows = sorted(self._runs.values(), key=lambda pair: pair[0], reverse=True)
        found = [
            (seq, row)
            for seq, row in rows
            if (before is None or seq < before)
            and (workflow_id is None or row.workflow_id == workflow_id)
            and (status is None or row.status == status)
            and (submitted_by is None or row.submitted_by == submitted_by)
        ]
        return found[:limit]

    def active(self) -> list[str]:
        with self._lock:
            return [
                run_id for run_id, (_, row) in self._runs.items() if row.status in ACTIVE_STATUSES
            ]

    def children(
        self, parent_run_id: str, limit: int, before: int | None
    ) -> list[tuple[int, RunRow]]:
        with self._lock:
            # Rows of children are kept by id in _runs; look each up for its current status.
            found = [
                self._runs[row.id]
                for seq, row in reversed(self._children.get(parent_run_id, []))
                if before is None or seq < before
            ]
        return found[:limit]

    def workflow_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._workflows)


class MemoryEventStore(RecorderEventStore):
    """Everything in process memory: for tests and throwaway runs."""

    def __init__(self, *, snapshot_interval: int = 1000) -> None:
        super().__init__(
            POPOApplicationRecorder(),
            POPOAggregateRecorder(),
            MemoryRunIndex(),
            snapshot_interval=snapshot_interval,
        )
