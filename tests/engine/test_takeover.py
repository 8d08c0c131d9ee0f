"""Ownership across engines: leases, takeover of orphaned runs, no second writer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from structlog.testing import capture_logs

from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry
from flowweaver.store import SQLiteEventStore
from flowweaver.testing.fakes import FakeLeases, LeaseTable
from tests.engine.conftest import Gate


def test_runs_of_an_engine_that_lost_its_leases_are_taken_over(
    tmp_path: Path, registry: HandlerRegistry, gate: Gate
) -> None:
    """Engine B resumes A's runs when A's leases lapse; A writes nothing more to them."""
    table = LeaseTable()
    db = str(tmp_path / "shared.db")
    store_a, store_b = SQLiteEventStore(db), SQLiteEventStore(db)
    leases_a = FakeLeases(table, "a")
    a = Engine(store_a, handlers=registry, leases=leases_a, node="a", takeover_interval=0.05)
    b = Engine(
        store_b, handlers=registry, leases=FakeLeases(table, "b"), node="b", takeover_interval=0.05
    )
    try:
        a.register_workflow(
            {
                "id": "held",
                "tasks": [
                    {"id": "g", "handler": "gate"},
                    {"id": "after", "handler": "noop", "dependencies": ["g"]},
                ],
            }
        )
        run = a.start_run("held")
        assert gate.entered.wait(10)
        assert table.owners[run.run_id] == "a"
        gate.entered.clear()
        leases_a.expire()  # A is cut off: B's scan takes the run and reruns g
        assert gate.entered.wait(10)
        assert table.owners[run.run_id] == "b"
        with capture_logs() as logs:
            gate.opened.set()  # both attempts return; only B's counts
            state = b.wait_run_finished(run.run_id, timeout=10)
            # A's attempt reports once its worker gets there, which may be after B's run ended:
            # A drops that result (it holds it until the store shows B settled that attempt).
            assert wait_for(lambda: any(e["event"] == "outcome_dropped" for e in logs))
            assert wait_for(lambda: a.parked() == {})
        dropped = [e for e in logs if e["event"] == "outcome_dropped"]
        assert [(e["run_id"], e["task_id"], e["attempt"]) for e in dropped] == [
            (run.run_id, "g", 1)
        ]
        assert state.status == "completed"
        g = state.tasks["g"]
        assert (g.attempts, g.interruptions) == (2, 1)
        recorded = store_b.read_run(run.run_id)
        assert [e.version for e in recorded] == list(range(1, len(recorded) + 1))
        workers = {e.event.worker for e in recorded if e.name == "TaskStarted"}  # type: ignore[union-attr]
        assert any(w.startswith("a/") for w in workers)
        assert any(w.startswith("b/") for w in workers)
        assert a.live_runs() == 0
    finally:
        a.close(grace=1)
        b.close(grace=1)
        store_a.close()
        store_b.close()


def test_an_outcome_that_arrives_while_leases_are_lost_is_stored_once_they_are_back(
    tmp_path: Path, registry: HandlerRegistry, gate: Gate
) -> None:
    """A handler finishing while its engine's leases are lost keeps its result: the engine
    owns the run again and stores it; the handler is not run again, nothing is Interrupted."""
    table = LeaseTable()
    store = SQLiteEventStore(str(tmp_path / "alone.db"))
    leases = FakeLeases(table, "a")
    engine = Engine(store, handlers=registry, leases=leases, node="a", takeover_interval=0.05)
    try:
        engine.register_workflow(
            {
                "id": "held",
                "tasks": [
                    {"id": "g", "handler": "gate"},
                    {"id": "after", "handler": "noop", "dependencies": ["g"]},
                ],
            }
        )
        run = engine.start_run("held")
        assert gate.entered.wait(10)
        with capture_logs() as logs:
            leases.expire()  # the lease session died (the database went away)
            gate.opened.set()
            assert wait_for(lambda: engine.parked() == {run.run_id: [("g", 1)]})
            leases.reconnect()
            state = engine.wait_run_finished(run.run_id, timeout=10)
        assert state.status == "completed"
        assert gate.calls == 1
        assert (state.tasks["g"].attempts, state.tasks["g"].interruptions) == (1, 0)
        assert not [e.event for e in store.read_run(run.run_id) if e.name == "TaskFailed"]
        assert "outcome_parked" in [e["event"] for e in logs]
        assert engine.parked() == {}
    finally:
        engine.close(grace=1)
        store.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    done = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        done.wait(0.01)
    return condition()


def test_a_new_run_belongs_to_the_engine_that_started_it(
    tmp_path: Path, registry: HandlerRegistry
) -> None:
    """The engine that records RunStarted owns the run; the other never touches it."""
    table = LeaseTable()
    db = str(tmp_path / "shared.db")
    store_a, store_b = SQLiteEventStore(db), SQLiteEventStore(db)
    a = Engine(store_a, handlers=registry, leases=FakeLeases(table, "a"), node="a")
    b = Engine(store_b, handlers=registry, leases=FakeLeases(table, "b"), node="b")
    try:
        a.register_workflow({"id": "one", "tasks": [{"id": "t", "handler": "noop"}]})
        runs = [a.start_run("one").run_id for _ in range(5)]
        for run_id in runs:
            assert b.wait_run_finished(run_id, timeout=10).status == "completed"
        for run_id in runs:
            started = [e for e in store_a.read_run(run_id) if e.name == "TaskStarted"]
            assert all(e.event.worker.startswith("a/") for e in started)  # type: ignore[union-attr]
        # A releases a run's lease just after its last append, which B may read first.
        assert wait_for(lambda: table.owners == {}), table.owners
    finally:
        a.close(grace=1)
        b.close(grace=1)
        store_a.close()
        store_b.close()


def test_orphaned_runs_are_spread_by_free_capacity(
    tmp_path: Path, registry: HandlerRegistry, gate: Gate
) -> None:
    """A dead node's runs are not piled onto the first survivor: each scan takes what its
    idle workers can run (at least one), so a node that starts later takes its share."""
    table = LeaseTable()
    db = str(tmp_path / "shared.db")
    stores = [SQLiteEventStore(db) for _ in range(3)]
    never = 3600.0  # scans run when the test says
    a = Engine(
        stores[0],
        handlers=registry,
        leases=(leases_a := FakeLeases(table, "a")),
        node="a",
        workers=2,
        takeover_interval=never,
    )
    engines = [a]
    try:
        a.register_workflow({"id": "held", "tasks": [{"id": "g", "handler": "gate"}]})
        runs = [a.start_run("held").run_id for _ in range(10)]
        leases_a.expire()  # A is gone: ten orphaned runs
        b = Engine(
            stores[1],
            handlers=registry,
            leases=FakeLeases(table, "b"),
            node="b",
            workers=2,
            takeover_interval=never,
        )
        engines.append(b)
        assert owned(table, "b") == 2  # its start-up recovery took what two workers can run
        assert wait_for(lambda: b.pool.busy() == 2)
        assert b.take_over_orphans() == 1  # busy: one run per scan, no more
        c = Engine(
            stores[2],
            handlers=registry,
            leases=FakeLeases(table, "c"),
            node="c",
            workers=4,
            takeover_interval=never,
        )  # the node that restarted
        engines.append(c)
        assert owned(table, "c") == 4
        while len(table.owners) < len(runs):
            b.take_over_orphans()
            c.take_over_orphans()
        assert owned(table, "b") + owned(table, "c") == 10
        assert owned(table, "c") >= 5, table.owners
        gate.opened.set()
        for run_id in runs:
            assert c.wait_run_finished(run_id, timeout=15).status == "completed"
    finally:
        gate.opened.set()
        for engine in engines:
            engine.close(grace=1)
        for store in stores:
            store.close()


def owned(table: LeaseTable, node: str) -> int:
    """Return how many runs ``node`` owns."""
    with table.lock:
        return sum(1 for owner in table.owners.values() if owner == node)
