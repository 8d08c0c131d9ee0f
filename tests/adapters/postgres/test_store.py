"""The PostgreSQL store on the real server: URLs, cross-process tailing, ordering, failures."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from flowweaver_postgres import PostgresEventStore, parse_url
from flowweaver_postgres.store import channel_name

from flowweaver.errors import ConcurrencyError, StoreConfigError, StoreError
from flowweaver.ports import Append, Checkpoints, DurabilityReport, EventStore, LeaseProvider
from flowweaver.store import open_store
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import (
    SERVER_URL,
    TcpProxy,
    drop_schema,
    new_run_id,
    new_schema_name,
    run_started,
    store_url,
    task_scheduled,
    terminate_backend,
)

pytestmark = pytest.mark.postgres

SLOW_POLL = 30.0  # far longer than any wake-up by NOTIFY may take


def assert_wakes_by_notify(
    reader: PostgresEventStore, writer: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> float:
    """Append through ``writer`` while ``reader`` waits; return how long the wake-up took."""
    assert reader.poll_interval >= SLOW_POLL
    after = reader.max_position()
    checked = threading.Event()
    read_position = reader.max_position

    def max_position() -> int:
        position = read_position()
        checked.set()
        return position

    monkeypatch.setattr(reader, "max_position", max_position)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(reader.wait_for_log, after, 20.0)
        # The reader has looked once and found nothing new: from here only a wake-up helps.
        assert checked.wait(10)
        appended = time.monotonic()
        writer.append([Append(run_id=new_run_id(), expected_version=0, events=[run_started()])])
        assert waiting.result(timeout=15) is True
        took = time.monotonic() - appended
    monkeypatch.undo()
    assert took < 2.0, f"woke after {took:.3f}s: by polling, not by NOTIFY"
    return took


# --- opening -----------------------------------------------------------------------------------


def test_open_store_finds_the_adapter_by_url_scheme(schema: str) -> None:
    """open_store on a postgresql:// URL opens this store, with every table in the schema."""
    store = open_store(store_url(schema, pool_size=1))
    try:
        assert isinstance(store, PostgresEventStore)
        assert store.schema == schema
        with psycopg.connect(SERVER_URL) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall()
        assert {r[0] for r in rows} == {
            "fw_events",
            "fw_snapshots",
            "fw_runs",
            "fw_workflows",
            "fw_position",
            "fw_operator_requests",
        }
    finally:
        store.close()


def test_postgres_scheme_is_an_alias(schema: str) -> None:
    """postgres:// URLs open the same store."""
    store = open_store(store_url(schema, pool_size=1).replace("postgresql://", "postgres://"))
    try:
        assert isinstance(store, PostgresEventStore)
        store.ping()
    finally:
        store.close()


def test_url_options_are_read() -> None:
    """Every URL option reaches the settings; user, password and database are decoded."""
    settings = parse_url(
        "postgresql://fw%40user:p%2Fw@db.local:6543/flow?schema=tenant_1&pool_size=3"
        "&max_overflow=0&connect_timeout=7&lock_timeout=2&poll_interval=0.5"
    )
    assert (settings.user, settings.password, settings.host, settings.port) == (
        "fw@user",
        "p/w",
        "db.local",
        6543,
    )
    assert (settings.dbname, settings.schema, settings.pool_size, settings.max_overflow) == (
        "flow",
        "tenant_1",
        3,
        0,
    )
    assert (settings.connect_timeout, settings.lock_timeout, settings.poll_interval) == (7, 2, 0.5)
    assert parse_url("postgresql://u@h/db").schema == "public"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h:5432/",
        "postgresql://u@h/db?schema=Bad-Name",
        "postgresql://u@h/db?pool_size=0",
        "postgresql://u@h/db?pool_size=many",
        "postgresql://u@h/db?poll_interval=0",
        "postgresql://u@h/db?colour=blue",
        "postgresql://u@h:99999/db",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    """A URL without a database, with a bad schema name or unknown options is refused."""
    with pytest.raises(StoreConfigError):
        parse_url(url)


def test_open_store_fails_fast_when_nothing_listens() -> None:
    """Opening a store on a closed port raises StoreError at once."""
    started = time.monotonic()
    with pytest.raises(StoreError):
        open_store("postgresql://postgres@127.0.0.1:1/test?schema=nowhere")
    assert time.monotonic() - started < 3


def test_schemas_are_separate_stores(open_pg_store: OpenStore) -> None:
    """Stores on two schemas of one database share neither events nor a NOTIFY channel."""
    mine = open_pg_store()
    other_schema = new_schema_name()
    other = open_store(store_url(other_schema, pool_size=1))
    try:
        mine.append([Append(run_id=new_run_id(), expected_version=0, events=[run_started()])])
        assert mine.max_position() == 1
        assert other.max_position() == 0
        assert mine.channel != other.channel
    finally:
        other.close()
        drop_schema(other_schema)


def test_channel_names_fit_in_an_identifier() -> None:
    """A long schema name still gives a channel name PostgreSQL keeps whole, and its own."""
    long_a, long_b = "a" * 63, "a" * 62 + "b"
    assert len(channel_name(long_a)) <= 63
    assert channel_name(long_a) != channel_name(long_b)


# --- two processes on one schema -------------------------------------------------------------


def test_append_on_one_store_wakes_a_waiter_on_another_by_notify(
    open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append through one store wakes wait_for_log on another long before its poll."""
    writer = open_pg_store()
    reader = open_pg_store(poll_interval=SLOW_POLL)
    assert reader.listener.wait_listening(10)
    assert_wakes_by_notify(reader, writer, monkeypatch)


def test_listener_reconnects_after_its_connection_drops(
    open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server ends the LISTEN session, the listener opens a new one and wakes again."""
    writer = open_pg_store()
    reader = open_pg_store(poll_interval=SLOW_POLL)
    assert reader.listener.wait_listening(10)
    pid, sessions = reader.listener.backend_pid, reader.listener.sessions
    assert pid is not None
    terminate_backend(pid)
    assert reader.listener.wait_listening(10, after_session=sessions)
    assert reader.listener.backend_pid != pid
    assert_wakes_by_notify(reader, writer, monkeypatch)


def test_wait_for_log_polls_when_no_notification_comes(open_pg_store: OpenStore) -> None:
    """Without a listener, a waiter still sees another store's append by polling."""
    writer = open_pg_store()
    reader = open_pg_store(poll_interval=0.05)
    reader.listener.close()
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(reader.wait_for_log, 0, 20.0)
        writer.append([Append(run_id=new_run_id(), expected_version=0, events=[run_started()])])
        assert waiting.result(timeout=15) is True


def test_wait_for_log_returns_false_at_the_timeout(open_pg_store: OpenStore) -> None:
    """With nothing new, wait_for_log returns False once the timeout has passed."""
    store = open_pg_store()
    started = time.monotonic()
    assert store.wait_for_log(0, 0.2) is False
    assert 0.2 <= time.monotonic() - started < 5


def test_a_run_has_one_writer_across_stores(open_pg_store: OpenStore) -> None:
    """Two stores appending the same version of a run at once: exactly one succeeds."""
    stores = [open_pg_store(), open_pg_store()]
    run_id = new_run_id()
    stores[0].append([Append(run_id=run_id, expected_version=0, events=[run_started()])])
    barrier = threading.Barrier(2)

    def append_version_2(store: PostgresEventStore) -> str:
        barrier.wait(10)
        try:
            store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled()])])
        except ConcurrencyError:
            return "conflict"
        return "stored"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(append_version_2, stores))
    assert outcomes == ["conflict", "stored"]
    assert [e.version for e in stores[1].read_run(run_id)] == [1, 2]


def test_the_read_model_is_shared(open_pg_store: OpenStore) -> None:
    """A run started through one store is listed and active through another."""
    writer, reader = open_pg_store(), open_pg_store()
    run_id = new_run_id()
    writer.append([Append(run_id=run_id, expected_version=0, events=[run_started("shared")])])
    assert [r.id for r in reader.list_runs(workflow_id="shared").runs] == [run_id]
    assert reader.active_run_ids() == [run_id]
    assert writer.list_runs().runs[0].id == run_id


def test_concurrent_appenders_make_a_gap_free_commit_ordered_log(
    open_pg_store: OpenStore,
) -> None:
    """Appends from many threads of two stores: positions 1..N, and a tailer misses none."""
    writers = [open_pg_store(pool_size=4), open_pg_store(pool_size=4)]
    tailer_store = open_pg_store()
    threads, appends = 8, 25
    total = threads * appends
    barrier = threading.Barrier(threads + 1)

    def append_run(n: int) -> list[int]:
        store = writers[n % 2]
        run_id = new_run_id()
        positions: list[int] = []
        barrier.wait(10)
        for version in range(appends):
            event = run_started() if version == 0 else task_scheduled(0, version)
            positions += store.append(
                [Append(run_id=run_id, expected_version=version, events=[event])]
            )
        assert [e.version for e in store.read_run(run_id)] == list(range(1, appends + 1))
        return positions

    def tail() -> list[int]:
        seen: list[int] = []
        barrier.wait(10)
        while len(seen) < total and tailer_store.wait_for_log(seen[-1] if seen else 0, 10):
            seen += [e.position or 0 for e in tailer_store.read_log(after=seen[-1] if seen else 0)]
        return seen

    with ThreadPoolExecutor(threads + 1) as pool:
        tailed = pool.submit(tail)
        appended = list(pool.map(append_run, range(threads)))
        seen = tailed.result(timeout=30)
    for positions in appended:
        assert positions == sorted(positions)
    assert sorted(p for positions in appended for p in positions) == list(range(1, total + 1))
    # A tailer that read past a position before its transaction committed would miss it.
    assert seen == list(range(1, total + 1))


# --- failures --------------------------------------------------------------------------------


def test_ping_fails_fast_when_the_server_goes_away(
    proxy: TcpProxy, open_pg_store: OpenStore
) -> None:
    """With the server gone, ping raises StoreError at once instead of hanging."""
    store = open_pg_store(port=proxy.port, connect_timeout=2)
    store.ping()
    proxy.stop()
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.ping()
    assert time.monotonic() - started < 3


def test_ping_fails_fast_when_the_server_never_answers(
    proxy: TcpProxy, open_pg_store: OpenStore
) -> None:
    """A server that accepts connections and never answers makes ping fail in seconds."""
    store = open_pg_store(port=proxy.port, connect_timeout=2)
    proxy.stop()
    proxy.start(mode="hang")
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.ping()
    assert time.monotonic() - started < store.settings.ping_timeout + 2


def test_the_store_recovers_after_the_server_comes_back(
    proxy: TcpProxy, open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the server is away calls fail fast; once it is back, the next call works."""
    writer = open_pg_store()
    reader = open_pg_store(port=proxy.port, poll_interval=SLOW_POLL, connect_timeout=2)
    assert reader.listener.wait_listening(10)
    sessions = reader.listener.sessions
    proxy.stop()
    # Two failed calls: an outage of about 4 s, by when psycopg_pool's own backoff would
    # wait 4 s more before its next attempt.
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(StoreError):
            reader.max_position()
        assert time.monotonic() - started < reader.settings.connect_timeout + 1
    proxy.start()
    assert reader.max_position() == 0
    assert reader.listener.wait_listening(10, after_session=sessions)
    reader.ping()
    assert_wakes_by_notify(reader, writer, monkeypatch)
    assert reader.max_position() == writer.max_position()


def test_closing_the_store_ends_a_wait(
    open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait_for_log in progress returns False as soon as the store is closed."""
    store = open_pg_store(poll_interval=SLOW_POLL)
    checked = threading.Event()
    read_position = store.max_position

    def max_position() -> int:
        position = read_position()
        checked.set()
        return position

    monkeypatch.setattr(store, "max_position", max_position)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(store.wait_for_log, 0, 20.0)
        assert checked.wait(10)
        store.close()
        assert waiting.result(timeout=5) is False


def test_close_stops_the_listener_promptly(open_pg_store: OpenStore) -> None:
    """Closing the store ends the listener's thread and connection within a second."""
    store = open_pg_store()
    assert store.listener.wait_listening(10)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 1
    assert not store.listener.alive
    assert store.listener.backend_pid is None


def test_the_store_is_an_event_store_that_offers_leases(open_pg_store: OpenStore) -> None:
    """A PostgreSQL store is an EventStore and a LeaseProvider, with no other capability."""
    store = open_pg_store()
    assert isinstance(store, EventStore)
    assert isinstance(store, LeaseProvider)
    assert not isinstance(store, Checkpoints)
    assert not isinstance(store, DurabilityReport)
