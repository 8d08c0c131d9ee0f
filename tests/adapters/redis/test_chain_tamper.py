"""One byte changed in one stored event in Redis is caught by verify at that version."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from flowweaver_redis.store import RedisEventStore, open_store

from flowweaver.ports import Append
from flowweaver.store.audit import verify_run
from flowweaver.testing.store_suite import completed_run
from tests.adapters.redis.support import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
def store(key_prefix: str) -> Iterator[RedisEventStore]:
    made = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    yield made
    made.close()


def _rewrite(prefix: str, run_id: str, version: int, old: bytes, new: bytes) -> None:
    """Rewrite the log stream with one byte of one event's stored value changed.

    A stream entry cannot be edited in place: the stream is written again, entry ids and
    fields as they were, but for that value.
    """
    client = redis.Redis.from_url(REDIS_URL)
    log = f"{prefix}:events:log"
    try:
        entries = client.xrange(log)
        found = 0
        rewritten = []
        for entry_id, fields in entries:
            values = dict(fields)
            if values[b"i"] == run_id.encode() and int(values[b"v"]) == version:
                state = values[b"s"]
                changed = state.replace(old, new, 1)
                assert sum(a != b for a, b in zip(state, changed, strict=True)) == 1
                values[b"s"] = changed
                found += 1
            rewritten.append((entry_id, values))
        assert found == 1
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(log)
            for entry_id, fields in rewritten:
                pipe.xadd(log, fields, id=entry_id)
            pipe.execute()
    finally:
        client.close()


def test_one_changed_byte_is_caught_at_that_version(
    store: RedisEventStore, key_prefix: str
) -> None:
    """One byte of version 4 (of 10) rewritten in the log fails verify at 4; the other run
    stays ok."""
    state, events = completed_run(str(uuid.uuid4()))
    other, other_events = completed_run(str(uuid.uuid4()))
    for start, stop in ((0, 3), (3, 7), (7, len(events))):
        store.append(
            [
                Append(run_id=state.id, expected_version=start, events=events[start:stop]),
                Append(run_id=other.id, expected_version=start, events=other_events[start:stop]),
            ]
        )
    assert verify_run(store, state.id).ok
    _rewrite(key_prefix, state.id, 4, b'"timestamp":"2', b'"timestamp":"3')
    check = verify_run(store, state.id)
    assert (check.ok, check.first_bad_version) == (False, 4)
    assert check.reason == "the stored hash does not match the event and the chain"
    assert verify_run(store, other.id).ok
