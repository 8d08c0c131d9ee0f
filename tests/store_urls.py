"""A store URL of every kind, each on its own file, PostgreSQL schema or Redis key prefix.

``store_url`` is a fixture parametrized over SQLite, PostgreSQL and Redis (marked
``postgres`` and ``redis``); what a test stored is removed after it. Import it into a test
module to use it there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.adapters.postgres.support import drop_schema, new_schema_name
from tests.adapters.postgres.support import store_url as postgres_url
from tests.adapters.redis.support import REDIS_URL, delete_keys, new_key_prefix

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


class StoreUrls:
    """Makes store URLs of any kind for one test, and removes what they hold afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cleanups: list[Callable[[], object]] = []

    def __call__(self, kind: str) -> str:
        """Return a new, empty store's URL of ``kind`` (sqlite, postgres or redis)."""
        count = len(self._cleanups)
        if kind == "sqlite":
            path = self.directory / f"store-{count}.db"
            self._cleanups.append(lambda: None)
            return f"sqlite:///{path}"
        if kind == "postgres":
            schema = new_schema_name()
            self._cleanups.append(lambda: drop_schema(schema))
            return postgres_url(schema, pool_size=4)
        if kind == "redis":
            prefix = new_key_prefix()
            self._cleanups.append(lambda: delete_keys(prefix))
            return f"{REDIS_URL}?prefix={prefix}"
        raise ValueError(f"no store kind {kind!r}")

    def close(self) -> None:
        """Remove what every URL made here holds."""
        for cleanup in reversed(self._cleanups):
            cleanup()


@pytest.fixture
def store_urls(tmp_path: Path) -> Iterator[StoreUrls]:
    """Make store URLs of any kind; each is emptied after the test."""
    made = StoreUrls(tmp_path)
    yield made
    made.close()


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store a test runs on: sqlite, postgres, redis."""
    kind: str = request.param
    return kind
