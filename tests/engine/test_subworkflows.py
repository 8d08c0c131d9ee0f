"""Sub-workflows on the engine with real stores (memory and a SQLite file): a task that runs
another workflow as a child run, its outputs, its failure, cancel passed down, two levels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flowweaver.domain.events import ChildRunStarted, RunStarted
from flowweaver.domain.replay_check import check_run
from flowweaver.engine import Engine
from flowweaver.errors import ValidationError
from flowweaver.handlers import HandlerRegistry
from tests.docs_support import code_blocks, doc_section
from tests.engine.conftest import Gate
from tests.engine.test_operator_actions import wait_for


def documented_workflows() -> list[dict[str, Any]]:
    """The JSON examples of docs/concepts.md, "Sub-workflows": the tests run them as written."""
    section = doc_section("concepts.md", "## Sub-workflows")
    return [json.loads(block) for block in code_blocks(section, "json")]


CHILD = {
    "id": "child",
    "tasks": [
        {"id": "double", "handler": "double", "inputs": {"n": "$.params.n"}},
        {
            "id": "label",
            "handler": "echo",
            "dependencies": ["double"],
            "inputs": {"x": "$.result.n"},
        },
    ],
}
PARENT = {
    "id": "parent",
    "tasks": [
        {"id": "prepare", "handler": "echo", "inputs": {"n": "$.params.n"}},
        {
            "id": "sub",
            "workflow": "child",
            "dependencies": ["prepare"],
            "inputs": {"n": "$.result.n"},
        },
        {"id": "after", "handler": "echo", "dependencies": ["sub"], "inputs": {"got": "$.result"}},
    ],
}


def _double(inputs: dict[str, Any]) -> dict[str, Any]:
    if inputs["n"] < 0:
        raise ValueError("negative")
    return {"n": inputs["n"] * 2}


@pytest.fixture
def doubling(registry: HandlerRegistry) -> None:
    registry.register("double", _double)


def test_the_child_runs_and_its_outputs_are_the_task_result(engine: Engine, doubling: None) -> None:
    """A sub-workflow task starts one child run with its inputs as parameters; the child's
    published outputs are the task's result, and lineage links both ways."""
    engine.register_workflow(CHILD)
    engine.register_workflow(PARENT)
    run = engine.start_run("parent", parameters={"n": 21})
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "completed"
    sub = state.tasks["sub"]
    expected = {"double": {"result": {"n": 42}}, "label": {"result": {"x": 42}}}
    assert sub.output == {"result": expected}
    assert state.tasks["after"].output == {"result": {"got": expected}}
    child_id = sub.child_run_id
    assert child_id is not None
    child = engine.get_run(child_id)
    assert child.status == "completed"
    assert child.parameters == {"n": 21}
    assert (child.parent_run_id, child.parent_task_id, child.depth) == (run.run_id, "sub", 1)
    first = engine.store.read_run(child_id, upto=1)[0].event
    assert isinstance(first, RunStarted)
    assert first.parent is not None
    assert first.idempotency_key == f"parent:{run.run_id}:sub:1"
    linked = [
        e.event for e in engine.store.read_run(run.run_id) if isinstance(e.event, ChildRunStarted)
    ]
    assert [(e.task_id, e.attempt, e.child_run_id) for e in linked] == [("sub", 1, child_id)]
    assert engine.lineage(child_id).parent is not None
    assert engine.lineage(child_id).parent.task_id == "sub"  # type: ignore[union-attr]
    assert [c.id for c in engine.lineage(run.run_id).children] == [child_id]
    assert check_run(run.run_id, (e.event for e in engine.store.read_run(run.run_id))).ok


def test_a_failed_child_fails_the_task_and_a_retry_starts_a_new_child(
    engine: Engine, doubling: None
) -> None:
    """A child that fails fails the attempt with the child's id in the error; the task's retry
    policy starts a new child for the next attempt (its own key)."""
    engine.register_workflow(CHILD)
    parent = {
        "id": "parent",
        "tasks": [
            {
                "id": "sub",
                "workflow": "child",
                "inputs": {"n": "$.params.n"},
                "retry": {"maxAttempts": 2, "initialDelay": 0},
            }
        ],
    }
    engine.register_workflow(parent)
    run = engine.start_run("parent", parameters={"n": -1})
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "failed"
    sub = state.tasks["sub"]
    assert sub.attempts == 2
    assert sub.last_error is not None
    assert sub.last_error.type == "ChildRunFailed"
    assert sub.child_run_id is not None
    assert sub.child_run_id in sub.last_error.message
    children = engine.lineage(run.run_id).children
    assert len(children) == 2
    assert {c.status for c in children} == {"failed"}


def test_cancel_of_the_parent_cancels_the_child(engine: Engine, gate: Gate) -> None:
    """Cancelling the parent passes down to the running child; the parent ends cancelled
    once the child has."""
    engine.register_workflow({"id": "slow", "tasks": [{"id": "wait", "handler": "gate"}]})
    engine.register_workflow({"id": "top", "tasks": [{"id": "sub", "workflow": "slow"}]})
    run = engine.start_run("top")
    assert gate.entered.wait(10)
    child_id = child_of(engine, run.run_id, "sub")
    engine.cancel_run(run.run_id, "enough")
    wait_for(lambda: engine.get_run(child_id).cancel_requested)
    gate.opened.set()
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "cancelled"
    child = engine.wait_run_finished(child_id, timeout=20)
    assert child.status == "cancelled"
    assert child.cancel_by == "engine"


def test_cancel_passes_down_two_levels(engine: Engine, gate: Gate) -> None:
    """Cancelling the top run cancels its child, which cancels its own child in turn."""
    engine.register_workflow({"id": "slow", "tasks": [{"id": "wait", "handler": "gate"}]})
    engine.register_workflow({"id": "mid", "tasks": [{"id": "inner", "workflow": "slow"}]})
    engine.register_workflow({"id": "top", "tasks": [{"id": "outer", "workflow": "mid"}]})
    run = engine.start_run("top")
    assert gate.entered.wait(10)
    middle_id = child_of(engine, run.run_id, "outer")
    leaf_id = child_of(engine, middle_id, "inner")
    engine.cancel_run(run.run_id, "enough")
    wait_for(lambda: engine.get_run(leaf_id).cancel_requested)
    gate.opened.set()
    for run_id in (leaf_id, middle_id, run.run_id):
        assert engine.wait_run_finished(run_id, timeout=20).status == "cancelled"
    assert engine.get_run(run.run_id).tasks["outer"].last_error.type == "ChildRunCancelled"  # type: ignore[union-attr]


def test_two_levels_nest(engine: Engine, doubling: None) -> None:
    """A child that runs a sub-workflow itself: outputs come up two levels."""
    engine.register_workflow(CHILD)
    engine.register_workflow(
        {"id": "middle", "tasks": [{"id": "inner", "workflow": "child", "inputs": {"n": 5}}]}
    )
    engine.register_workflow({"id": "outer", "tasks": [{"id": "mid", "workflow": "middle"}]})
    run = engine.start_run("outer")
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "completed"
    inner = state.tasks["mid"].output["result"]["inner"]["result"]
    assert inner["double"] == {"result": {"n": 10}}
    middle_id = state.tasks["mid"].child_run_id
    assert middle_id is not None
    middle = engine.get_run(middle_id)
    grandchild = engine.get_run(middle.tasks["inner"].child_run_id or "")
    assert (grandchild.depth, grandchild.parent_run_id) == (2, middle_id)


def test_a_child_that_cannot_start_fails_the_task_for_good(engine: Engine) -> None:
    """A child whose handler is not registered here never starts: the task fails with
    ChildRunNotStarted, not retried, and no child run is stored."""
    engine.register_workflow({"id": "odd", "tasks": [{"id": "t", "handler": "not_here"}]})
    engine.register_workflow(
        {
            "id": "host",
            "tasks": [{"id": "sub", "workflow": "odd", "retry": {"maxAttempts": 3}}],
        }
    )
    run = engine.start_run("host")
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "failed"
    sub = state.tasks["sub"]
    assert sub.last_error is not None
    assert (sub.last_error.type, sub.last_error.retryable, sub.attempts) == (
        "ChildRunNotStarted",
        False,
        1,
    )
    assert "not_here" in sub.last_error.message
    assert engine.lineage(run.run_id).children == []


def test_the_documented_example_runs_as_written(engine: Engine) -> None:
    """The example of docs/concepts.md registers and runs with the built-in handlers."""
    greet, welcome = documented_workflows()
    engine.register_workflow(greet)
    engine.register_workflow(welcome)
    run = engine.start_run("welcome", parameters={"name": "Ada"})
    state = engine.wait_run_finished(run.run_id, timeout=20)
    assert state.status == "completed"
    assert state.tasks["sub"].output == {"result": {"hello": {"result": {"to": "Ada"}}}}
    assert state.tasks["announce"].output == {"result": {"greeted": "Ada"}}
    child = engine.get_run(state.tasks["sub"].child_run_id or "")
    assert child.parameters == {"to": "Ada"}


def test_registration_refuses_unknown_children_cycles_and_both_kinds(engine: Engine) -> None:
    """An unknown child workflow, a cycle of sub-workflows (also a longer one, and a workflow
    that runs itself), and a task with both a handler and a workflow are refused; nothing
    is stored."""
    with pytest.raises(ValidationError) as unknown:
        engine.register_workflow({"id": "a", "tasks": [{"id": "t", "workflow": "nope"}]})
    assert unknown.value.errors[0].path == "$.tasks[0].workflow"
    engine.register_workflow({"id": "c", "tasks": [{"id": "t", "handler": "noop"}]})
    engine.register_workflow({"id": "b", "tasks": [{"id": "t", "workflow": "c"}]})
    engine.register_workflow({"id": "a", "tasks": [{"id": "t", "workflow": "b"}]})
    with pytest.raises(ValidationError) as cycle:
        engine.register_workflow({"id": "c", "tasks": [{"id": "t", "workflow": "a"}]})
    assert "c -> a -> b -> c" in cycle.value.errors[0].message
    assert engine.store.get_workflow("c").version == 1
    with pytest.raises(ValidationError) as itself:
        engine.register_workflow({"id": "self", "tasks": [{"id": "t", "workflow": "self"}]})
    assert "self -> self" in itself.value.errors[0].message
    with pytest.raises(ValidationError) as both:
        engine.register_workflow(
            {"id": "d", "tasks": [{"id": "t", "handler": "noop", "workflow": "c"}]}
        )
    assert both.value.errors[0].path == "$.tasks[0].workflow"
    assert [w.workflow_id for w in engine.store.list_workflows()] == ["a", "b", "c"]


def child_of(engine: Engine, run_id: str, task_id: str) -> str:
    """Wait until the task's ChildRunStarted is stored; return the child's run id."""
    wait_for(lambda: engine.get_run(run_id).tasks[task_id].child_run_id is not None)
    child = engine.get_run(run_id).tasks[task_id].child_run_id
    assert child is not None
    return child
