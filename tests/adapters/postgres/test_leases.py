"""Run leases on PostgreSQL: one owner per run, lapsing with the session, and the append fence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from flowweaver_postgres import PostgresEventStore, PostgresLeases
from flowweaver_postgres.leases import lease_key

from flowweaver.engine import Engine
from flowweaver.errors import ConcurrencyError, StoreConfigError, StoreError
from flowweaver.handlers import builtin_registry
from flowweaver.ports import Append, Leases
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import (
    SERVER_URL,
    new_run_id,
    run_started,
    task_scheduled,
    terminate_backend,
)

pytestmark = pytest.mark.postgres


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def start(store: PostgresEventStore, run_id: str) -> None:
    """Record a run's first event."""
    store.append([Append(run_id=run_id, expected_version=0, events=[run_started()])])


def test_postgres_leases_are_the_leases_port(open_pg_store: OpenStore) -> None:
    """open_leases returns shared leases that an Engine can use as they are."""
    leases = open_pg_store().open_leases("a")
    assert isinstance(leases, PostgresLeases)
    port: Leases = leases
    assert port.shared is True


def test_lease_keys_are_bigints_of_their_schema() -> None:
    """Keys fit a bigint, differ between runs, and between schemas for the same run."""
    run_id = new_run_id()
    key = lease_key("one", run_id)
    assert -(2**63) <= key < 2**63
    assert key == lease_key("one", run_id)
    assert key != lease_key("two", run_id)
    assert key != lease_key("one", new_run_id())


def test_a_run_has_one_owner_until_it_is_released(open_pg_store: OpenStore) -> None:
    """Only one node acquires a run; after its release the other one can."""
    a = open_pg_store().open_leases("a")
    b = open_pg_store().open_leases("b")
    run_id = new_run_id()
    assert a.acquire(run_id)
    assert a.acquire(run_id)  # again: still ours, and counted once
    assert not b.acquire(run_id)
    assert a.holds(run_id)
    assert not b.holds(run_id)
    a.release(run_id)
    assert not a.holds(run_id)
    assert wait_until(lambda: b.acquire(run_id))  # given back with A's next heartbeat
    assert not a.acquire(run_id)


def test_closing_the_leases_releases_every_run(open_pg_store: OpenStore) -> None:
    """close() ends the session: another node acquires at once."""
    a = open_pg_store().open_leases("a")
    b = open_pg_store().open_leases("b")
    runs = [new_run_id() for _ in range(3)]
    assert all(a.acquire(r) for r in runs)
    a.close()
    assert all(b.acquire(r) for r in runs)


def test_a_store_opens_one_set_of_leases_at_a_time(open_pg_store: OpenStore) -> None:
    """A second open_leases on the same store is refused until the first closes."""
    store = open_pg_store()
    first = store.open_leases("a")
    with pytest.raises(StoreConfigError):
        store.open_leases("b")
    first.close()
    store.open_leases("b").close()


def test_a_dropped_session_loses_every_lease_and_reconnects(open_pg_store: OpenStore) -> None:
    """When the lease session dies, on_lost fires, nothing is held, and a new session acquires."""
    a = open_pg_store().open_leases("a", heartbeat_interval=0.2, session_timeout=1.0)
    b = open_pg_store().open_leases("b")
    lost = threading.Event()
    a.on_lost(lost.set)
    run_id = new_run_id()
    assert a.acquire(run_id)
    pid, sessions = a.backend_pid, a.sessions
    assert pid is not None
    terminate_backend(pid)
    assert lost.wait(5)
    assert not a.holds(run_id)
    assert b.acquire(run_id)  # the server released it with the session
    assert a.wait_connected(5, after_session=sessions)
    assert a.backend_pid != pid
    other = new_run_id()
    assert a.acquire(other)
    assert not a.acquire(run_id)


def test_a_frozen_node_loses_its_leases_within_the_session_timeout(
    open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no heartbeat (a stopped process), the server ends the session after the timeout."""
    a = open_pg_store().open_leases("a", heartbeat_interval=0.2, session_timeout=1.0)
    b = open_pg_store().open_leases("b")
    run_id = new_run_id()
    assert a.acquire(run_id)
    monkeypatch.setattr(a, "_beat", lambda: None)  # the heartbeat stops, as in SIGSTOP
    started = time.monotonic()
    assert wait_until(lambda: b.acquire(run_id), timeout=5)
    took = time.monotonic() - started
    assert 0.8 < took < 3.0, took
    assert not a.holds(run_id)  # a quiet session is checked, found dead


def test_creating_a_run_takes_its_lease_in_the_same_call(open_pg_store: OpenStore) -> None:
    """A run's first append through the leases leaves the node holding the run."""
    a_store, b_store = open_pg_store(), open_pg_store()
    a = a_store.open_leases("a")
    b = b_store.open_leases("b")
    run_id = new_run_id()
    start(a_store, run_id)
    assert a.holds(run_id)
    assert a.acquire(run_id)  # no round trip: already held
    assert not b.acquire(run_id)


def test_appends_through_the_leases_need_the_run_held(open_pg_store: OpenStore) -> None:
    """Once a node gave a run up, its appends to the run are refused until it owns it again."""
    store = open_pg_store()
    leases = store.open_leases("a")
    run_id = new_run_id()
    start(store, run_id)
    leases.release(run_id)
    more = [Append(run_id=run_id, expected_version=1, events=[task_scheduled()])]
    with pytest.raises(ConcurrencyError):
        store.append(more)
    assert leases.acquire(run_id)
    assert store.append(more)
    assert [e.version for e in store.read_run(run_id)] == [1, 2]


def test_the_server_refuses_a_run_another_session_holds(open_pg_store: OpenStore) -> None:
    """Even a node that wrongly believes it owns a run cannot append while another holds it.

    A's own bookkeeping is bent to claim the run; the transaction's lock on the run, which
    B's session holds, is what refuses the append.
    """
    a_store, b_store = open_pg_store(), open_pg_store()
    a = a_store.open_leases("a")
    b = b_store.open_leases("b")
    run_id = new_run_id()
    start(b_store, run_id)
    assert b.holds(run_id)
    a._held[run_id] = lease_key(a_store.schema, run_id)
    with pytest.raises(ConcurrencyError) as refused:
        a_store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled()])])
    assert refused.value.aggregate_ids == (run_id,)
    assert [e.version for e in a_store.read_run(run_id)] == [1]
    b_store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled()])])


def test_a_new_run_needs_no_lease(open_pg_store: OpenStore) -> None:
    """A run's first event goes in without a lease; a second creation is a concurrency error."""
    a_store, b_store = open_pg_store(), open_pg_store()
    a_store.open_leases("a")
    b = b_store.open_leases("b")
    run_id = new_run_id()
    start(a_store, run_id)
    with pytest.raises(ConcurrencyError):
        start(b_store, run_id)
    assert len(a_store.read_run(run_id)) == 1
    assert not b.holds(run_id)  # the losing creation took no lease


def test_a_node_whose_session_ended_cannot_append(
    open_pg_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fence: a node that still believes it owns a run appends nothing once it lost it.

    A's session is ended behind its back (as the server does to a frozen node) and its
    heartbeat is stopped so it does not notice; B takes the run and appends. A's append,
    decided on what A knew, fails and stores nothing.
    """
    a_store, b_store = open_pg_store(), open_pg_store()
    a = a_store.open_leases("a")
    b = b_store.open_leases("b")
    run_id = new_run_id()
    start(a_store, run_id)
    assert a.acquire(run_id)
    monkeypatch.setattr(a, "_beat", lambda: None)
    monkeypatch.setattr(a, "stale_after", 3600.0)  # A's holds() keeps trusting itself
    pid = a.backend_pid
    assert pid is not None
    terminate_backend(pid)
    assert wait_until(lambda: b.acquire(run_id))
    assert a.holds(run_id)  # A has not noticed: only the fence stands in its way
    with pytest.raises(StoreError):
        a_store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled(0)])])
    b_store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled(1)])])
    recorded = b_store.read_run(run_id)
    assert [(e.version, e.event.task_id) for e in recorded[1:]] == [(2, "t1")]  # type: ignore[union-attr]


def test_a_version_taken_is_a_concurrency_error_through_the_leases(
    open_pg_store: OpenStore,
) -> None:
    """Optimistic concurrency still holds on the fenced path: nothing of the batch is stored."""
    store = open_pg_store()
    leases = store.open_leases("a")
    run_id, other = new_run_id(), new_run_id()
    start(store, run_id)
    assert leases.acquire(run_id)
    store.append([Append(run_id=run_id, expected_version=1, events=[task_scheduled()])])
    with pytest.raises(ConcurrencyError):
        store.append(
            [
                Append(run_id=other, expected_version=0, events=[run_started()]),
                Append(run_id=run_id, expected_version=1, events=[task_scheduled()]),
            ]
        )
    assert store.read_run(other) == []
    assert len(store.read_run(run_id)) == 2


def test_every_lease_of_a_node_is_one_session_on_the_server(open_pg_store: OpenStore) -> None:
    """The leases are session-level advisory locks (bigint keys) of the lease session."""
    store = open_pg_store()
    leases = store.open_leases("a")
    runs = [new_run_id() for _ in range(3)]
    assert all(leases.acquire(r) for r in runs)
    with psycopg.connect(SERVER_URL) as conn:
        rows = conn.execute(
            "SELECT pid, (classid::bigint << 32) | objid::bigint, objsubid FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid = %s",
            (leases.backend_pid,),
        ).fetchall()
    keys = {lease_key(store.schema, r) for r in runs}
    assert {row[1] for row in rows} == keys
    assert {row[2] for row in rows} == {1}  # objsubid 1: the single-bigint key space


def test_an_engine_takes_over_the_runs_of_an_engine_whose_session_died(
    open_pg_store: OpenStore,
) -> None:
    """Engine B resumes A's unfinished run within seconds of A's lease session dying."""
    registry = builtin_registry()
    entered = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def hold(inputs: dict[str, object], context: object) -> dict[str, object]:
        calls.append(threading.current_thread().name)
        entered.set()
        release.wait(20)
        return {}

    registry.register("hold", hold)
    a_store, b_store = open_pg_store(), open_pg_store()
    a = Engine(a_store, handlers=registry, node="a", workers=2, takeover_interval=0.2)
    b = Engine(b_store, handlers=registry, node="b", workers=2, takeover_interval=0.2)
    try:
        a.register_workflow(
            {
                "id": "held",
                "tasks": [
                    {"id": "h", "handler": "hold"},
                    {"id": "after", "handler": "noop", "dependencies": ["h"]},
                ],
            }
        )
        run = a.start_run("held")
        assert entered.wait(10)
        entered.clear()
        assert isinstance(a.leases, PostgresLeases)
        pid = a.leases.backend_pid
        assert pid is not None
        cut = time.monotonic()
        terminate_backend(pid)
        assert entered.wait(10)  # B reran the held attempt
        assert time.monotonic() - cut < 5.0
        release.set()
        state = b.wait_run_finished(run.run_id, timeout=15)
        assert state.status == "completed"
        recorded = b_store.read_run(run.run_id)
        assert [e.version for e in recorded] == list(range(1, len(recorded) + 1))
        starts = [e.event for e in recorded if e.name == "TaskStarted"]
        workers = [s.worker for s in starts]  # type: ignore[union-attr]
        assert workers[0].startswith("a/")
        assert workers[-1].startswith("b/")
        assert [e.name for e in recorded].count("RunCompleted") == 1
        completed = [e.event.task_id for e in recorded if e.name == "TaskCompleted"]  # type: ignore[union-attr]
        assert sorted(completed) == ["after", "h"]
    finally:
        release.set()
        a.close(grace=1)
        b.close(grace=1)


def test_a_node_owns_at_most_max_leases_runs(open_pg_store: OpenStore) -> None:
    """Past max_leases a node creates runs without owning them, and acquires no more."""
    a_store, b_store = open_pg_store(max_leases=2), open_pg_store()
    a = a_store.open_leases("a")
    b = b_store.open_leases("b")
    runs = [new_run_id() for _ in range(3)]
    for run_id in runs:
        start(a_store, run_id)
    assert [a.holds(r) for r in runs] == [True, True, False]
    assert not a.acquire(runs[2])
    assert b.acquire(runs[2])  # another node takes what A has no room for
    a.release(runs[0])
    assert a.acquire(new_run_id())
