"""A workflow's concurrency limit holds across the nodes of a cluster (two engines, one schema)."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from flowweaver_postgres.leases import PostgresLeases

from flowweaver.domain.events import TERMINAL_EVENT_NAMES
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.ports import EventStore
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import terminate_backend

RUNS = 12
WAIT_S = 60.0


def _intervals(store: EventStore) -> dict[str, tuple[int, int]]:
    """Return each run's time under way as (position it began, position it ended), read from
    the global log: it began at RunStarted when not queued, else at RunDequeued."""
    began: dict[str, int] = {}
    ended: dict[str, int] = {}
    queued: set[str] = set()
    after = 0
    while True:
        page = store.read_log(after=after, limit=1000)
        if not page:
            break
        for rec in page:
            assert rec.position is not None
            after = rec.position
            if rec.name == "RunQueued":
                queued.add(rec.run_id)
                began.pop(rec.run_id, None)
            elif rec.name in {"RunStarted", "RunDequeued"}:
                began[rec.run_id] = rec.position
            elif rec.name in TERMINAL_EVENT_NAMES:
                ended[rec.run_id] = rec.position
    assert set(began) == set(ended), "every run began and ended"
    assert queued, "some runs had to wait"
    return {run_id: (began[run_id], ended[run_id]) for run_id in began}


def test_a_limit_of_one_never_has_two_runs_under_way_across_two_nodes(
    open_pg_store: OpenStore,
) -> None:
    """Runs submitted at once to two nodes: the log shows one under way at a time."""
    registry = builtin_registry()
    a = Engine(open_pg_store(), handlers=registry, node="a", workers=2, takeover_interval=0.5)
    b = Engine(open_pg_store(), handlers=registry, node="b", workers=2, takeover_interval=0.5)
    try:
        a.register_workflow(
            {
                "id": "singleton",
                "concurrency": {"limit": 1},
                "tasks": [
                    {"id": "work", "handler": "sleep", "inputs": {"seconds": 0.03}},
                    {"id": "more", "handler": "noop", "dependencies": ["work"]},
                ],
            }
        )
        run_ids: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def submit(engine: Engine, count: int) -> None:
            try:
                for i in range(count):
                    handle = engine.start_run("singleton", priority=i % 3)
                    with lock:
                        run_ids.append(handle.run_id)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=submit, args=(engine, RUNS // 2)) for engine in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert not errors, errors
        assert len(run_ids) == RUNS
        for run_id in run_ids:
            assert a.wait_run_finished(run_id, WAIT_S).status == "completed"
        spans = sorted(_intervals(a.store).values())
        assert len(spans) == RUNS
        for (_, ended), (began, _) in itertools.pairwise(spans):
            assert began > ended, f"two runs under way at once: {spans}"
        nodes = _workers_of(a.store, run_ids)
        assert nodes == {"a", "b"}, "both nodes ran some of the runs"
    finally:
        a.close(grace=1)
        b.close(grace=1)


def _workers_of(store: EventStore, run_ids: list[str]) -> set[str]:
    nodes: set[str] = set()
    for run_id in run_ids:
        for rec in store.read_run(run_id):
            event: Any = rec.event
            if rec.name == "TaskStarted":
                nodes.add(event.worker.split("/")[0])
    return nodes


def test_a_queued_run_begins_on_the_node_that_took_over_the_run_under_way(
    open_pg_store: OpenStore,
) -> None:
    """The node running the only slot's run loses its session: another node takes the run
    over, finishes it, and then begins the queued run."""
    registry = builtin_registry()
    entered = threading.Event()
    release = threading.Event()

    def hold(inputs: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        release.wait(WAIT_S)
        return {}

    registry.register("hold", hold)
    a = Engine(open_pg_store(), handlers=registry, node="a", workers=2, takeover_interval=0.2)
    b = Engine(open_pg_store(), handlers=registry, node="b", workers=2, takeover_interval=0.2)
    try:
        a.register_workflow(
            {
                "id": "guarded",
                "concurrency": {"limit": 1},
                "tasks": [{"id": "h", "handler": "hold"}],
            }
        )
        first = a.start_run("guarded")
        assert entered.wait(WAIT_S)
        entered.clear()
        second = b.start_run("guarded")
        assert second.state.status == "queued"
        assert isinstance(a.leases, PostgresLeases)
        pid = a.leases.backend_pid
        assert pid is not None
        terminate_backend(pid)
        assert entered.wait(WAIT_S)  # B reran the attempt of the run under way
        assert b.get_run(second.run_id).status == "queued"
        release.set()
        assert b.wait_run_finished(first.run_id, WAIT_S).status == "completed"
        assert b.wait_run_finished(second.run_id, WAIT_S).status == "completed"
        spans = sorted(_intervals(b.store).values())
        assert spans[1][0] > spans[0][1]
    finally:
        release.set()
        a.close(grace=1)
        b.close(grace=1)
