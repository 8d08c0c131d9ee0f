"""The shared store conformance suite, on PostgreSQL: each test in a schema of its own."""

from __future__ import annotations

import pytest
from flowweaver_postgres import PostgresEventStore, open_store

from flowweaver.ports import EventStore
from flowweaver.testing.store_suite import EventStoreSuite
from tests.adapters.postgres.support import drop_schema, new_schema_name, store_url

pytestmark = pytest.mark.postgres


class TestPostgresStore(EventStoreSuite):
    """Every EventStore test against the real server on 127.0.0.1:5432."""

    def create_store(self) -> EventStore:
        return open_store(store_url(new_schema_name(), pool_size=2))

    def dispose_store(self, store: EventStore) -> None:
        assert isinstance(store, PostgresEventStore)
        store.close()
        drop_schema(store.schema)
