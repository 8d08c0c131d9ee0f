"""Fail-over on PostgreSQL leases: a dead node's runs are spread by the survivors' capacity."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from tests.adapters.postgres.conftest import OpenStore

pytestmark = pytest.mark.postgres

NEVER = 3600.0  # takeover scans run when the test says


def test_orphaned_runs_are_split_between_a_survivor_and_a_restarted_node(
    open_pg_store: OpenStore,
) -> None:
    """Ten runs of a node that stopped: the survivor takes what its two workers can run
    (then one per scan), and the node that starts next takes its share."""
    opened = threading.Event()
    registry = builtin_registry()
    registry.register("wait", lambda inputs: opened.wait(20) and {})
    engines: list[Engine] = []

    def node(name: str, workers: int) -> Engine:
        engine = Engine(
            open_pg_store(),
            handlers=registry,
            workers=workers,
            node=name,
            takeover_interval=NEVER,
        )
        engines.append(engine)
        return engine

    try:
        a = node("a", 1)
        a.register_workflow({"id": "held", "tasks": [{"id": "w", "handler": "wait"}]})
        runs = [a.start_run("held").run_id for _ in range(10)]
        a.close(grace=0)  # its leases end with its session: ten orphaned runs
        b = node("b", 2)
        assert len(held_by(b)) == 2
        c = node("c", 4)
        assert len(held_by(c)) == 4
        for _ in range(20):
            if len(held_by(b)) + len(held_by(c)) == len(runs):
                break
            b.take_over_orphans()
            c.take_over_orphans()
        assert len(held_by(b)) + len(held_by(c)) == len(runs)
        assert len(held_by(c)) >= 4 and len(held_by(b)) >= 2
        opened.set()
        for run_id in runs:
            assert c.wait_run_finished(run_id, timeout=20).status == "completed"
    finally:
        opened.set()
        for engine in engines:
            engine.close(grace=1)


def held_by(engine: Engine) -> list[Any]:
    """Return the runs an engine's lease session owns."""
    return engine.leases.held()  # type: ignore[attr-defined,no-any-return]
