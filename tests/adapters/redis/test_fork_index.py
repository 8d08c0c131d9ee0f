"""Redis run list rows written by an earlier release (no parent fields) keep working."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import msgspec
import pytest
from flowweaver_redis.store import RedisEventStore, RedisRunIndex, open_store

from flowweaver.domain.run import fork_run, pause_run, start_run
from flowweaver.ports import Append
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import completed_run, new_run_id, wide_workflow
from tests.adapters.redis.support import REDIS_URL


@pytest.fixture
def store(key_prefix: str) -> Iterator[RedisEventStore]:
    """A Redis store on the test's own key prefix."""
    opened = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    yield opened
    opened.close()


def test_an_old_row_without_parent_fields_reads_and_changes_status(
    store: RedisEventStore,
) -> None:
    """A row as the release before forks wrote it decodes with no parent, takes a pause, and
    its forks are listed under it."""
    parent, events = completed_run(new_run_id())
    store.append([Append(parent.id, 0, events)])
    assert [r.id for r in store.list_runs().runs] == [parent.id]
    index = store._index
    assert isinstance(index, RedisRunIndex)
    client = index._client
    seq, row = msgspec.json.decode(client.hget(index.rows_key, parent.id))
    del row["parentRunId"], row["parentVersion"]
    client.hset(index.rows_key, parent.id, msgspec.json.encode([seq, row]))

    fork, forked = fork_run(new_run_id(), parent, T0 + timedelta(minutes=1))
    store.append([Append(fork.id, 0, forked)])
    rows = {r.id: r for r in store.list_runs().runs}
    assert rows[parent.id].parent_run_id is None
    assert rows[fork.id].parent_run_id == parent.id
    assert [r.id for r in store.child_runs(parent.id).runs] == [fork.id]


def test_a_paused_run_moves_between_the_status_sets_and_stays_active(
    store: RedisEventStore,
) -> None:
    """RunPaused moves a run from the running set to the paused one; both are active."""
    a, first = start_run(new_run_id(), wide_workflow(1), 1, {}, T0)
    b, second = start_run(new_run_id(), wide_workflow(1), 1, {}, T0 + timedelta(seconds=1))
    second += pause_run(b, T0 + timedelta(seconds=2), by="op")
    store.append([Append(a.id, 0, first), Append(b.id, 0, second)])
    assert [r.id for r in store.list_runs(status="paused").runs] == [b.id]
    assert [r.id for r in store.list_runs(status="running").runs] == [a.id]
    assert store.active_run_ids() == [a.id, b.id]
