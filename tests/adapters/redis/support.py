"""Helpers for the Redis adapter's tests: a key prefix of their own, and cleaning it up."""

from __future__ import annotations

import os
from typing import Any
from uuid import uuid4

import redis
from flowweaver_redis import RedisDatastore
from flowweaver_redis.datastore import OriginatorIDType

REDIS_URL = os.environ.get("FLOWWEAVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Nothing listens on port 1 of the loopback: connections are refused at once.
UNREACHABLE_URL = "redis://127.0.0.1:1/0"


def new_key_prefix() -> str:
    """Return a key prefix no other test uses."""
    return f"fwtest:{uuid4().hex}"


def delete_keys(key_prefix: str) -> int:
    """Delete every key under the prefix and return how many there were."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted
    finally:
        client.close()


def list_keys(key_prefix: str) -> set[str]:
    """Return the names of the keys under the prefix, without the prefix."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {
            key.removeprefix(key_prefix + ":")
            for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)
        }
    finally:
        client.close()


class RedisKeys:
    """Gives each unittest test its own key prefix, and deletes its keys afterwards."""

    key_prefix: str
    originator_id_type: OriginatorIDType = "uuid"

    def setUp(self) -> None:
        self.key_prefix = new_key_prefix()
        self._datastores: list[RedisDatastore] = []
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        try:
            super().tearDown()  # type: ignore[misc]
        finally:
            for datastore in self._datastores:
                datastore.close()
            delete_keys(self.key_prefix)

    def new_datastore(self, **kwargs: Any) -> RedisDatastore:
        """Return a datastore on the test's prefix, closed after the test."""
        kwargs.setdefault("originator_id_type", self.originator_id_type)
        datastore = RedisDatastore(REDIS_URL, key_prefix=self.key_prefix, **kwargs)
        self._datastores.append(datastore)
        return datastore
