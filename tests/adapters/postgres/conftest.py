"""Fixtures for the PostgreSQL adapter's tests: a fresh schema per test, dropped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flowweaver_postgres import PostgresEventStore, open_store

from tests.adapters.postgres.support import TcpProxy, drop_schema, new_schema_name, store_url

OpenStore = Callable[..., PostgresEventStore]


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of the test's own in database ``test``; dropped with all it holds afterwards."""
    name = new_schema_name()
    yield name
    drop_schema(name)


@pytest.fixture
def open_pg_store(schema: str) -> Iterator[OpenStore]:
    """Open stores on the test's schema (options as URL query items); all closed afterwards."""
    opened: list[PostgresEventStore] = []

    def open_one(*, port: int | None = None, **options: object) -> PostgresEventStore:
        options.setdefault("pool_size", 2)
        store = open_store(store_url(schema, port=port, **options))
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A loopback proxy to the server, to take it down and bring it back."""
    tcp_proxy = TcpProxy()
    tcp_proxy.start()
    yield tcp_proxy
    tcp_proxy.stop()
