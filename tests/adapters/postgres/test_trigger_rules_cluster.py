"""Trigger rules on PostgreSQL and across two nodes: the documented cleanup-and-alert workflow
decides the same on the shared store as on the embedded ones, and a node that takes a run over
mid-way (the first node gone while a task was running) finishes it with the same verdicts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowweaver.domain.events import TaskSkipped
from flowweaver.domain.replay_check import check_run
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, builtin_registry
from tests.adapters.postgres.conftest import OpenStore
from tests.engine.test_trigger_rules_engine import ETL

pytestmark = pytest.mark.postgres

NEVER = 3600.0  # no takeover scan unless a test asks for one

FAILED_RUN = {
    "extract": "failed",
    "load": "skipped",
    "cleanup": "completed",
    "alert": "completed",
    "report": "skipped",
}
SKIP_REASONS = {
    "load": "upstream task extract failed",
    "report": "trigger rule none_failed: an upstream task failed",
}


class Gate:
    """The ``extract`` handler: fails once released, and says when it was entered."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, inputs: dict[str, Any]) -> Any:
        self.calls += 1
        self.entered.set()
        self.release.wait(20)
        raise ValueError("source unreachable")


@pytest.fixture
def gate() -> Iterator[Gate]:
    made = Gate()
    yield made
    made.release.set()


@pytest.fixture
def registry(gate: Gate) -> HandlerRegistry:
    registry = builtin_registry()
    registry.register("extract", gate)
    return registry


def _node(open_pg_store: OpenStore, registry: HandlerRegistry, name: str, **options: Any) -> Engine:
    options.setdefault("takeover_interval", NEVER)
    return Engine(open_pg_store(), handlers=registry, node=name, workers=2, **options)


def _verdicts(engine: Engine, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    state = engine.get_run(run_id)
    stored = [e.event for e in engine.store.read_run(run_id)]
    assert check_run(run_id, stored).difference is None
    reasons = {e.task_id: e.reason for e in stored if isinstance(e, TaskSkipped)}
    return {t.id: t.status for t in state.tasks.values()}, reasons


def test_a_failure_runs_the_cleanup_and_the_alert_on_postgresql(
    open_pg_store: OpenStore, registry: HandlerRegistry, gate: Gate
) -> None:
    """The verdicts of the embedded test, on the shared store; the replay check agrees."""
    gate.release.set()
    engine = _node(open_pg_store, registry, "a")
    try:
        engine.register_workflow({**ETL, "defaults": {"retry": {"maxAttempts": 1}}})
        run = engine.start_run("etl-with-cleanup")
        assert engine.wait_run_finished(run.run_id, timeout=20).status == "failed"
        assert _verdicts(engine, run.run_id) == (FAILED_RUN, SKIP_REASONS)
    finally:
        engine.close(grace=1)


def test_the_node_that_takes_a_run_over_decides_the_same_trigger_rules(
    open_pg_store: OpenStore, registry: HandlerRegistry, gate: Gate
) -> None:
    """A starts the run and goes away while ``extract`` runs; B takes the run over, runs
    ``extract`` again (the lost attempt), and the rules decide as on one node."""
    a = _node(open_pg_store, registry, "a")
    b = _node(open_pg_store, registry, "b", takeover_interval=0.2)
    try:
        a.register_workflow({**ETL, "defaults": {"retry": {"maxAttempts": 1}}})
        run = a.start_run("etl-with-cleanup")
        assert gate.entered.wait(10)
        a.close(grace=0)  # the attempt under way is lost with A
        gate.release.set()
        assert b.wait_run_finished(run.run_id, timeout=30).status == "failed"
        assert _verdicts(b, run.run_id) == (FAILED_RUN, SKIP_REASONS)
        assert gate.calls >= 2  # the fault fired: B ran the lost attempt again
    finally:
        a.close(grace=0)
        b.close(grace=1)
