"""The Flowweaver store on Redis: the shared conformance suite, opening by URL, tailing, ping."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis.exceptions as rexc
from flowweaver_redis.store import (
    DEFAULT_PREFIX,
    RedisEventStore,
    RedisRunIndex,
    open_store,
    parse_url,
)

import flowweaver.store
from flowweaver.domain.events import ErrorInfo
from flowweaver.domain.ids import workflow_aggregate_id
from flowweaver.domain.run import record_failed, start_run
from flowweaver.errors import StoreConfigError, StoreError
from flowweaver.ports import Append, EventStore, RunRow
from flowweaver.store.base import IndexChanges
from flowweaver.store.codec import snapshot_originator
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import (
    WAIT,
    EventStoreSuite,
    completed_run,
    marker_event,
    new_run_id,
    wide_workflow,
)
from tests.adapters.redis.support import (
    REDIS_URL,
    Relay,
    closed_port,
    delete_keys,
    list_keys,
    new_key_prefix,
    wait_blocked,
)

pytestmark = pytest.mark.redis

OpenStore = Callable[..., RedisEventStore]


class TestRedisStore(EventStoreSuite):
    """Every EventStore test against the real server on 127.0.0.1:6379, each its own prefix."""

    def create_store(self) -> EventStore:
        return open_store(f"{REDIS_URL}?prefix={new_key_prefix()}")

    def dispose_store(self, store: EventStore) -> None:
        assert isinstance(store, RedisEventStore)
        store.close()
        delete_keys(store.prefix)


@pytest.fixture
def open_redis_store(key_prefix: str) -> Iterator[OpenStore]:
    """Open stores on the test's prefix (options as URL query items); all closed afterwards."""
    opened: list[RedisEventStore] = []

    def open_one(url: str = REDIS_URL, **options: object) -> RedisEventStore:
        query = "&".join(f"{k}={v}" for k, v in {"prefix": key_prefix, **options}.items())
        store = open_store(f"{url}?{query}")
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for calls that block."""
    with ThreadPoolExecutor(4) as executor:
        yield executor


def append_one(store: EventStore, n: int = 1) -> str:
    """Append a one-event run and return its id."""
    run_id = new_run_id()
    store.append([Append(run_id=run_id, expected_version=0, events=[marker_event(n)])])
    return run_id


# --- opening ------------------------------------------------------------------------------


def test_open_store_by_url_finds_the_adapter_and_keeps_keys_under_the_prefix(
    key_prefix: str,
) -> None:
    """flowweaver.store.open_store opens a redis:// URL; every key it writes is under prefix."""
    store = flowweaver.store.open_store(f"redis://127.0.0.1:6379/0?prefix={key_prefix}")
    try:
        assert isinstance(store, RedisEventStore)
        state, events = completed_run(new_run_id())
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
        store.save_snapshot(state)
        store.register_workflow(wide_workflow(), T0)
        assert [r.id for r in store.list_runs().runs] == [state.id]
    finally:
        store.close()
    assert list_keys(key_prefix) == {
        "events:log",
        "events:seq",
        f"events:v:{state.id}",
        f"events:v:{workflow_aggregate_id('wf')}",
        f"snapshots:e:{snapshot_originator(uuid.UUID(state.id))}",
        "index:position",
        "index:rows",
        "index:all",
        "index:workflows",
        "index:wf:wf",
        "index:status:completed",
        "index:ws:completed:wf",
    }


def test_url_options_are_read_and_checked() -> None:
    """parse_url reads prefix and timeouts, keeps credentials, and refuses what it cannot use."""
    default = parse_url("redis://127.0.0.1:6379/0")
    assert default.prefix == DEFAULT_PREFIX == "flowweaver"
    assert default.socket_timeout == 10.0
    settings = parse_url(
        "redis://:secret@10.0.0.5:6380/3?prefix={fw}&poll_interval=0.5&ping_timeout=1"
        "&socket_timeout=4&client_name=node1"
    )
    assert settings.prefix == "{fw}"
    assert (settings.poll_interval, settings.ping_timeout) == (0.5, 1.0)
    assert settings.connection_url().startswith("redis://:secret@10.0.0.5:6380/3?")
    assert "client_name=node1" in settings.connection_url()
    assert settings.where() == "10.0.0.5:6380/3 prefix {fw}"
    for bad in (
        "postgresql://127.0.0.1/0",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/0?prefix=",
        "redis://127.0.0.1:6379/0?prefix=a%20b",
        "redis://127.0.0.1:6379/0?poll_interval=0",
        "redis://127.0.0.1:6379/0?socket_timeout=soon",
        "redis://127.0.0.1:6379/0?ping_timeout=nan",
        "redis://127.0.0.1:6379/0?colour=blue",
    ):
        with pytest.raises(StoreConfigError):
            parse_url(bad)


def test_opening_a_store_where_nothing_listens_raises_store_error_quickly() -> None:
    """open_store on a closed port raises StoreError at once, not after retries."""
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot open the Redis store"):
        open_store(f"redis://127.0.0.1:{closed_port()}/0?prefix={new_key_prefix()}")
    assert time.monotonic() - started < 2.0


# --- waiting for the log ------------------------------------------------------------------


def test_an_append_through_one_store_wakes_a_waiter_on_another(
    open_redis_store: OpenStore, pool: ThreadPoolExecutor
) -> None:
    """A second store on the prefix, blocked in wait_for_log, wakes on the first's append.

    Both poll only every minute: waking within seconds shows the wait blocks on the log.
    """
    writer = open_redis_store(poll_interval=60)
    reader = open_redis_store(poll_interval=60)
    top = writer.max_position()
    waiting: Future[bool] = pool.submit(reader.wait_for_log, top, WAIT)
    wait_blocked(reader.waiter_name)
    started = time.monotonic()
    append_one(writer)
    assert waiting.result(timeout=WAIT) is True
    assert time.monotonic() - started < 2.0
    assert reader.max_position() == top + 1


def test_a_waiter_sees_registrations_too(
    open_redis_store: OpenStore, pool: ThreadPoolExecutor
) -> None:
    """wait_for_log wakes on any entry of the log, as max_position counts them all."""
    writer = open_redis_store(poll_interval=60)
    reader = open_redis_store(poll_interval=60)
    waiting = pool.submit(reader.wait_for_log, 0, WAIT)
    wait_blocked(reader.waiter_name)
    writer.register_workflow(wide_workflow(), T0)
    assert waiting.result(timeout=WAIT) is True


def test_wait_for_log_blocks_longer_than_one_read(open_redis_store: OpenStore) -> None:
    """A timeout longer than one blocking read is kept whole, and nothing came: False."""
    store = open_redis_store(poll_interval=60)
    store.max_block = 0.05
    started = time.monotonic()
    assert store.wait_for_log(store.max_position(), timeout=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0


def test_wait_for_log_with_no_time_left_answers_from_the_log(open_redis_store: OpenStore) -> None:
    """A zero timeout does not block: True when the log is past ``after``, else False."""
    store = open_redis_store()
    append_one(store)
    assert store.wait_for_log(0, timeout=0) is True
    assert store.wait_for_log(1, timeout=0) is False


def test_close_wakes_a_waiter_at_once(
    open_redis_store: OpenStore, pool: ThreadPoolExecutor
) -> None:
    """close() ends a wait_for_log blocked in another thread, which answers False."""
    store = open_redis_store(poll_interval=60)
    waiting = pool.submit(store.wait_for_log, store.max_position(), WAIT)
    wait_blocked(store.waiter_name)
    started = time.monotonic()
    store.close()
    assert waiting.result(timeout=WAIT) is False
    assert time.monotonic() - started < 1.0
    assert store.wait_for_log(0, timeout=WAIT) is False


def test_where_blocking_reads_are_refused_wait_for_log_polls(
    open_redis_store: OpenStore, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that refuses XREAD (an ACL) makes wait_for_log fall back to polling the log."""
    writer = open_redis_store()
    reader = open_redis_store(poll_interval=0.02)
    execute = reader._datastore.execute
    refused: list[str] = []

    def no_xread(*args: Any, **kwargs: Any) -> Any:
        if args[0] == "XREAD":
            refused.append("XREAD")
            raise rexc.NoPermissionError("NOPERM this user has no permissions to run 'xread'")
        return execute(*args, **kwargs)

    monkeypatch.setattr(reader._datastore, "execute", no_xread)
    assert reader.wait_for_log(reader.max_position(), timeout=0.05) is False
    waiting = pool.submit(reader.wait_for_log, reader.max_position(), WAIT)
    append_one(writer)
    assert waiting.result(timeout=WAIT) is True
    assert refused == ["XREAD"]  # asked once, then polled


# --- failures -----------------------------------------------------------------------------


def test_ping_where_redis_went_away_raises_store_error_quickly(key_prefix: str) -> None:
    """ping raises StoreError within moments once the server's port is closed."""
    relay = Relay()
    store = open_store(relay.url(prefix=key_prefix))
    try:
        store.ping()
        relay.close()
        started = time.monotonic()
        with pytest.raises(StoreError, match="does not answer"):
            store.ping()
        assert time.monotonic() - started < 1.0
    finally:
        relay.close()
        store.close()


def test_ping_of_a_server_that_never_answers_gives_up_after_ping_timeout(
    key_prefix: str,
) -> None:
    """A port that accepts connections but never answers fails ping after ping_timeout."""
    relay = Relay()
    store = open_store(relay.url(prefix=key_prefix, ping_timeout=0.3))
    relay.close()
    try:
        with socket_that_never_answers(relay.port):
            started = time.monotonic()
            with pytest.raises(StoreError, match="does not answer"):
                store.ping()
            assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        store.close()


@contextmanager
def socket_that_never_answers(port: int) -> Iterator[None]:
    """Listen on ``port`` and accept nothing: connects succeed, replies never come."""
    with socket.create_server(("127.0.0.1", port)):
        yield


@pytest.mark.parametrize(
    "call",
    [
        append_one,
        lambda s: s.read_log(),
        lambda s: s.list_runs(),
        lambda s: s.list_workflows(),
        lambda s: s.active_run_ids(),
        lambda s: s.run_state(new_run_id()),
        lambda s: s.wait_for_log(10**9, 1.0),
    ],
    ids=["append", "read_log", "list_runs", "list_workflows", "active", "run_state", "wait"],
)
def test_every_call_where_redis_went_away_raises_store_error(
    key_prefix: str, call: Callable[[RedisEventStore], object]
) -> None:
    """Once Redis is gone, store calls raise StoreError, not redis-py or library errors."""
    relay = Relay()
    store = open_store(relay.url(prefix=key_prefix))
    try:
        store.wait_for_log(0, 0)  # a waiting connection that the outage will break
        relay.close()
        with pytest.raises(StoreError):
            call(store)
    finally:
        store.close()


# --- the run index ------------------------------------------------------------------------


def test_index_refuses_to_advance_from_a_position_it_is_not_at(
    open_redis_store: OpenStore,
) -> None:
    """advance with a stale expected position changes nothing and answers False."""
    store = open_redis_store()
    index = RedisRunIndex(store._datastore)
    row = RunRow(
        id=new_run_id(),
        workflow_id="wf",
        workflow_version=1,
        status="running",
        created_at=T0,
        updated_at=T0,
    )
    assert index.advance(0, 5, IndexChanges(started=[(3, row)], workflows={"wf": 1})) is True
    late = IndexChanges(changed=[(row.id, "failed", T0)], workflows={"other": 1})
    assert index.advance(0, 9, late) is False
    assert index.position() == 5
    assert index.runs(None, None, 10, None) == [(3, row)]
    assert index.workflow_ids() == ["wf"]
    assert index.active() == [row.id]


def test_two_stores_catching_up_at_once_list_every_run_once(
    open_redis_store: OpenStore, pool: ThreadPoolExecutor
) -> None:
    """Stores racing to bring one index up to date apply each stretch of the log once."""
    stores = [open_redis_store() for _ in range(3)]
    runs: list[str] = []
    for i in range(30):
        run_id = new_run_id()
        state, events = start_run(run_id, wide_workflow(1, f"wf{i % 3}"), 1, {}, T0)
        if i % 2:
            error = ErrorInfo(type="Boom", message="no", retryable=False)
            events += record_failed(state, "t0", 1, error, T0 + timedelta(seconds=i))
        stores[i % 3].append([Append(run_id=run_id, expected_version=0, events=events)])
        runs.append(run_id)
    listed = [pool.submit(s.list_runs, limit=1000) for s in stores]
    for future in listed:
        assert [r.id for r in future.result(timeout=WAIT).runs] == runs[::-1]
    assert set(stores[0].active_run_ids()) == set(runs[::2])
    failed = stores[1].list_runs(workflow_id="wf1", status="failed", limit=1000).runs
    assert [r.id for r in failed] == [r for i, r in enumerate(runs) if i % 6 == 1][::-1]
