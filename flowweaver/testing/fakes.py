"""Fakes for tests: in-process stand-ins for the parts that cross processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class LeaseTable:
    """What a database's lock table does for :class:`FakeLeases`: one owner per run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.owners: dict[str, str] = {}


class FakeLeases:
    """Shared leases between engines of one test process, over a :class:`LeaseTable`.

    ``expire()`` plays a process whose lease session was cut off: its leases go to nobody,
    its engine is told they are lost, and it can acquire none until ``reconnect()``.
    """

    shared = True

    def __init__(self, table: LeaseTable, node: str) -> None:
        self.table = table
        self.node = node
        self._callbacks: list[Callable[[], None]] = []
        self.down = False

    def acquire(self, run_id: str) -> bool:
        """Own ``run_id`` unless another node does (or this one is cut off)."""
        if self.down:
            return False
        with self.table.lock:
            owner = self.table.owners.setdefault(run_id, self.node)
        return owner == self.node

    def release(self, run_id: str) -> None:
        """Give up ``run_id`` if this node owns it."""
        with self.table.lock:
            if self.table.owners.get(run_id) == self.node:
                del self.table.owners[run_id]

    def holds(self, run_id: str) -> bool:
        """Say whether this node owns ``run_id``."""
        if self.down:
            return False
        with self.table.lock:
            return self.table.owners.get(run_id) == self.node

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Remember whom to tell when the leases expire."""
        self._callbacks.append(callback)

    def expire(self) -> None:
        """Cut this node off: drop every lease of it, then tell its engine."""
        self.down = True
        with self.table.lock:
            for run_id in [r for r, n in self.table.owners.items() if n == self.node]:
                del self.table.owners[run_id]
        for callback in self._callbacks:
            callback()

    def reconnect(self) -> None:
        """End the cut-off: leases can be acquired again."""
        self.down = False

    def close(self) -> None:
        """Release every lease of this node."""
        with self.table.lock:
            for run_id in [r for r, n in self.table.owners.items() if n == self.node]:
                del self.table.owners[run_id]


class FakeClock:
    """A :class:`flowweaver.ports.Clock` that stands still until a test moves it."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the time the test set."""
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        """Move the clock to ``now`` (timezone-aware)."""
        with self._lock:
            self._now = now.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` on; return the new time."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
