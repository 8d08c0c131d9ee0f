"""Ownership across engines: leases, takeover of orphaned runs, no second writer."""

from __future__ import annotations

from pathlib import Path

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
        gate.opened.set()  # both attempts return; only B's counts
        state = b.wait_run_finished(run.run_id, timeout=10)
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
        assert table.owners == {}
    finally:
        a.close(grace=1)
        b.close(grace=1)
        store_a.close()
        store_b.close()
