"""Sub-workflows in a cluster: two engines on one PostgreSQL schema. A parent on one node
follows a child owned by the other (its end read from the shared store), passes a cancel
down through the relay, and a node that goes away leaves both runs to the other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowweaver.domain.events import ChildRunStarted, ParentTask
from flowweaver.domain.ids import run_id_for_key
from flowweaver.domain.subworkflow import child_key
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, builtin_registry
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.test_cluster import wait_until

pytestmark = pytest.mark.postgres

NEVER = 3600.0  # no takeover scan: each run stays with the node that started it

CHILD = {"id": "held-child", "tasks": [{"id": "h", "handler": "hold"}]}
PARENT = {
    "id": "top",
    "tasks": [
        {"id": "sub", "workflow": "held-child"},
        {"id": "after", "handler": "echo", "dependencies": ["sub"], "inputs": {"r": "$.result"}},
    ],
}


class Hold:
    """A handler that blocks until released; says when it was entered."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(20)
        return {"held": True}


@pytest.fixture
def hold() -> Iterator[Hold]:
    made = Hold()
    yield made
    made.release.set()


@pytest.fixture
def registry(hold: Hold) -> HandlerRegistry:
    registry = builtin_registry()
    registry.register("hold", hold)
    return registry


def _node(open_pg_store: OpenStore, registry: HandlerRegistry, name: str, **options: Any) -> Engine:
    options.setdefault("takeover_interval", NEVER)
    return Engine(
        open_pg_store(),
        handlers=registry,
        node=name,
        workers=2,
        child_poll_interval=0.1,
        **options,
    )


@pytest.fixture
def nodes(open_pg_store: OpenStore, registry: HandlerRegistry) -> Iterator[tuple[Engine, Engine]]:
    """Two engines, ``a`` and ``b``, on one schema of one PostgreSQL database."""
    engines = [_node(open_pg_store, registry, name) for name in ("a", "b")]
    yield engines[0], engines[1]
    for engine in engines:
        engine.close(grace=1)


def _child_on(node: Engine, parent_id: str) -> str:
    """Start on ``node`` the child that the parent's task ``sub`` (attempt 1) will ask for,
    so that the other node finds it stored and owned elsewhere."""
    key = child_key(parent_id, "sub", 1)
    parent = ParentTask(run_id=parent_id, task_id="sub", attempt=1, depth=1)
    handle = node.start_run("held-child", idempotency_key=key, submitted_by="engine", parent=parent)
    assert handle.run_id == run_id_for_key("held-child", key)
    return handle.run_id


def test_a_parent_follows_a_child_owned_by_the_other_node(
    nodes: tuple[Engine, Engine], hold: Hold
) -> None:
    """A's task finds its child already running on B (one child, not two), and completes
    with its outputs once B ends it: A hears of the end through the shared store."""
    a, b = nodes
    a.register_workflow(CHILD)
    a.register_workflow(PARENT)
    parent_id = run_id_for_key("top", "k1")
    child_id = _child_on(b, parent_id)
    assert hold.entered.wait(10)
    run = a.start_run("top", idempotency_key="k1")
    assert run.run_id == parent_id
    assert wait_until(lambda: a.get_run(parent_id).tasks["sub"].child_run_id == child_id)
    assert b.leases.holds(child_id) and a.leases.holds(parent_id)
    hold.release.set()
    state = a.wait_run_finished(parent_id, timeout=15)
    assert state.status == "completed"
    assert state.tasks["sub"].output == {"result": {"h": {"result": {"held": True}}}}
    links = [e for e in a.store.read_run(parent_id) if isinstance(e.event, ChildRunStarted)]
    assert [e.event.child_run_id for e in links] == [child_id]  # type: ignore[attr-defined]
    rows = a.store.list_runs(limit=10).runs
    assert [r.id for r in rows if r.workflow_id == "held-child"] == [child_id]


def test_cancel_of_a_parent_reaches_its_child_on_the_other_node(
    nodes: tuple[Engine, Engine], hold: Hold
) -> None:
    """Cancelling the parent on A cancels its child on B through the relay; A then ends
    cancelled."""
    a, b = nodes
    a.register_workflow(CHILD)
    a.register_workflow(PARENT)
    parent_id = run_id_for_key("top", "k2")
    child_id = _child_on(b, parent_id)
    assert hold.entered.wait(10)
    a.start_run("top", idempotency_key="k2")
    assert wait_until(lambda: a.get_run(parent_id).tasks["sub"].child_run_id == child_id)
    a.cancel_run(parent_id, "stop")
    assert wait_until(lambda: b.get_run(child_id).cancel_requested)
    hold.release.set()
    assert b.wait_run_finished(child_id, timeout=15).status == "cancelled"
    assert a.wait_run_finished(parent_id, timeout=15).status == "cancelled"


def test_a_node_that_goes_away_leaves_parent_and_child_to_the_other(
    open_pg_store: OpenStore, registry: HandlerRegistry, hold: Hold
) -> None:
    """A starts the parent and its child, then closes while the child runs; B takes both
    over, re-attaches the parent to the child by replay, and the parent completes."""
    a = _node(open_pg_store, registry, "a")
    b = _node(open_pg_store, registry, "b", takeover_interval=0.2)
    try:
        a.register_workflow(CHILD)
        a.register_workflow(PARENT)
        run = a.start_run("top")
        assert hold.entered.wait(10)
        assert wait_until(lambda: a.get_run(run.run_id).tasks["sub"].child_run_id is not None)
        a.close(grace=0)  # the child's attempt is lost with A: B runs it again
        hold.release.set()
        state = b.wait_run_finished(run.run_id, timeout=20)
        assert state.status == "completed"
        rows = b.store.list_runs(limit=10).runs
        assert len([r for r in rows if r.workflow_id == "held-child"]) == 1
    finally:
        a.close(grace=0)
        b.close(grace=1)
