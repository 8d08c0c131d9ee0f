"""Sub-workflows in the domain: the task kinds, the registration checks (unknown child,
cycles), the child's key, ChildRunStarted and its fold, and the child's outcome."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowweaver.domain.events import ParentTask, RunSummary
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.run import RunState, record_completed, request_cancel, start_run
from flowweaver.domain.spec import WorkflowSpec, workflow_from_builtins
from flowweaver.domain.subworkflow import (
    CHILD_CANCELLED,
    CHILD_FAILED,
    check_child_workflows,
    child_error,
    child_key,
    child_result,
    owns_child,
    record_child_started,
    running_children,
)
from flowweaver.errors import ValidationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHILD_ID = "00000000-0000-4000-8000-0000000000c1"


def wf(workflow_id: str, *children: str, handler: bool = False) -> WorkflowSpec:
    tasks: list[dict[str, Any]] = [{"id": f"t{i}", "workflow": c} for i, c in enumerate(children)]
    if handler or not tasks:
        tasks.append({"id": "h", "handler": "noop"})
    return workflow_from_builtins({"id": workflow_id, "tasks": tasks})


def lookup(*specs: WorkflowSpec) -> Any:
    registered = {s.id: s for s in specs}
    return registered.get


def test_a_task_names_a_handler_or_a_workflow() -> None:
    """Neither is an error at the handler; both is an error at the workflow."""
    with pytest.raises(ValidationError) as neither:
        workflow_from_builtins({"id": "w", "tasks": [{"id": "t"}]})
    assert [e.path for e in neither.value.errors] == ["$.tasks[0].handler"]
    with pytest.raises(ValidationError) as both:
        workflow_from_builtins(
            {"id": "w", "tasks": [{"id": "t", "handler": "noop", "workflow": "c"}]}
        )
    assert [e.path for e in both.value.errors] == ["$.tasks[0].workflow"]
    assert wf("w", "c").tasks[0].handler is None


def test_an_unknown_child_workflow_is_refused_at_its_path() -> None:
    errors = check_child_workflows(wf("p", "known", "lost"), lookup(wf("known")))
    assert [(e.path, e.message) for e in errors] == [
        ("$.tasks[1].workflow", "no workflow 'lost' is registered")
    ]


@pytest.mark.parametrize(
    ("registered", "new", "cycle"),
    [
        ([], wf("a", "a"), "a -> a"),
        ([wf("b", "a")], wf("a", "b"), "a -> b -> a"),
        ([wf("c", "a"), wf("b", "c")], wf("a", "b"), "a -> b -> c -> a"),
        ([wf("d"), wf("c", "d", "a"), wf("b", "d", "c")], wf("a", "b"), "a -> b -> c -> a"),
    ],
)
def test_a_cycle_through_the_new_definition_is_refused(
    registered: list[WorkflowSpec], new: WorkflowSpec, cycle: str
) -> None:
    """The new definition stands for its id; the chain is named in run order."""
    [error] = check_child_workflows(new, lookup(*registered))
    assert error.message == f"sub-workflow cycle: {cycle}"
    assert error.path.endswith(".workflow")


def test_a_diamond_and_an_old_cycle_elsewhere_are_not_this_workflows_cycle() -> None:
    """Two paths to one child is no cycle; a new version that drops the loop is accepted."""
    leaf = wf("leaf")
    assert (
        check_child_workflows(wf("top", "l", "r"), lookup(leaf, wf("l", "leaf"), wf("r", "leaf")))
        == []
    )
    assert check_child_workflows(wf("a", handler=True), lookup(wf("b", "a"))) == []


def test_the_child_key_names_run_task_and_attempt() -> None:
    assert child_key("r", "t", 3) == "parent:r:t:3"


def parent_state() -> tuple[RunState, list[Any]]:
    spec = workflow_from_builtins(
        {
            "id": "p",
            "tasks": [
                {"id": "sub", "workflow": "c", "inputs": {"n": "$.params.n"}},
                {"id": "after", "handler": "noop", "dependencies": ["sub"]},
            ],
        }
    )
    return start_run("00000000-0000-4000-8000-0000000000a1", spec, 1, {"n": 2}, T0)


def test_child_run_started_runs_the_task_and_a_stale_one_decides_nothing() -> None:
    state, events = parent_state()
    assert state.tasks["sub"].status == "scheduled"
    assert state.tasks["sub"].inputs == {"n": 2}
    decided = record_child_started(state, "sub", 1, CHILD_ID, "c", 4, T0)
    assert [type(e).__name__ for e in decided] == ["ChildRunStarted"]
    task = state.tasks["sub"]
    assert (task.status, task.child_run_id, state.running) == ("running", CHILD_ID, 1)
    assert running_children(state) == [("sub", 1, CHILD_ID)]
    assert owns_child(state, "sub", 1, CHILD_ID)
    assert record_child_started(state, "sub", 1, CHILD_ID, "c", 4, T0) == []  # a repeat
    assert record_child_started(state, "sub", 2, CHILD_ID, "c", 4, T0) == []  # another attempt
    assert not owns_child(state, "sub", 1, "00000000-0000-4000-8000-0000000000c2")
    events += decided
    outputs = {"x": {"result": 1}}
    events += record_completed(state, "sub", 1, outputs, 5.0, T0 + timedelta(seconds=1))
    assert state.tasks["sub"].output == {"result": outputs}
    assert state.tasks["after"].status == "scheduled"
    assert check_run(state.id, events).ok


def test_a_cancelled_parent_does_not_take_a_late_child() -> None:
    """A child stored after the parent's cancel is not its task's: the engine cancels it."""
    state, _ = parent_state()
    request_cancel(state, "stop", T0)
    assert record_child_started(state, "sub", 1, CHILD_ID, "c", 1, T0) == []
    assert not owns_child(state, "sub", 1, CHILD_ID)


def test_a_child_run_folds_its_parent() -> None:
    spec = wf("c")
    parent = ParentTask(run_id="r", task_id="sub", attempt=2, depth=3)
    state, _ = start_run(CHILD_ID, spec, 1, {}, T0, parent=parent)
    assert (state.parent_run_id, state.parent_task_id, state.depth) == ("r", "sub", 3)
    assert state.parent_version is None


def test_the_childs_outcome_is_the_tasks() -> None:
    """Outputs by task id when it completed; a failure that may be retried; a cancel that
    may not; each names the child run."""
    state, _ = start_run(CHILD_ID, wf("c"), 1, {}, T0)
    state.tasks["h"].status = "completed"
    state.tasks["h"].output = {"result": {}}
    assert child_result(state) == {"h": {"result": {}}}
    state.status = "failed"
    state.summary = RunSummary(counts={"failed": 1}, failed_tasks=("h",))
    failed = child_error(state)
    assert (failed.type, failed.retryable) == (CHILD_FAILED, True)
    assert CHILD_ID in failed.message and "h" in failed.message
    state.status = "cancelled"
    state.cancel_reason = "parent gone"
    cancelled = child_error(state)
    assert (cancelled.type, cancelled.retryable) == (CHILD_CANCELLED, False)
    assert "parent gone" in cancelled.message
