"""The memory store passes the store conformance suite."""

from __future__ import annotations

from flowweaver.ports import EventStore
from flowweaver.store import MemoryEventStore
from flowweaver.testing.store_suite import EventStoreSuite


class TestMemoryEventStore(EventStoreSuite):
    """Every conformance test against a fresh in-memory store."""

    def create_store(self) -> EventStore:
        return MemoryEventStore()
