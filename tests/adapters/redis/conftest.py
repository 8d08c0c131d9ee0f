"""Fixtures for the Redis adapter's tests, which need Redis on 127.0.0.1:6379."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flowweaver_redis import RedisDatastore

from tests.adapters.redis.support import REDIS_URL, delete_keys, new_key_prefix


@pytest.fixture
def key_prefix() -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    prefix = new_key_prefix()
    yield prefix
    delete_keys(prefix)


@pytest.fixture
def datastore(key_prefix: str) -> Iterator[RedisDatastore]:
    """A datastore on the test's own key prefix."""
    with RedisDatastore(REDIS_URL, key_prefix=key_prefix) as store:
        yield store
