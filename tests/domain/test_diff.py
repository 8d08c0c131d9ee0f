"""The diff of two folded states, as a pure function: what it reports and what it leaves out."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from flowweaver.domain.diff import RUN_FIELDS_LEFT_OUT, TASK_FIELDS_LEFT_OUT, diff_states
from flowweaver.domain.run import RunState, TaskState, new_state
from flowweaver.testing.runs import command_steps, simulate, task, workflow, workflow_specs


def _compared(struct: type[msgspec.Struct], left_out: frozenset[str]) -> dict[str, str]:
    names = zip(struct.__struct_fields__, struct.__struct_encode_fields__, strict=True)
    return {wire: name for name, wire in names if name not in left_out}


RUN = _compared(RunState, RUN_FIELDS_LEFT_OUT)
TASK = _compared(TaskState, TASK_FIELDS_LEFT_OUT)


def _check(old: RunState, new: RunState) -> None:
    """Every compared field is reported exactly when it differs, as JSON builtins."""
    found = diff_states(old, new)
    for wire, name in RUN.items():
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            assert wire not in found.run
        else:
            assert found.run[wire] == (msgspec.to_builtins(before), msgspec.to_builtins(after))
    for task_id, after_task in new.tasks.items():
        before_task = old.tasks.get(task_id, TaskState(id=task_id))
        changed = found.tasks.get(task_id, {})
        for wire, name in TASK.items():
            before, after = getattr(before_task, name), getattr(after_task, name)
            if before == after:
                assert wire not in changed
            else:
                assert changed[wire] == (msgspec.to_builtins(before), msgspec.to_builtins(after))
    assert all(found.tasks.values())  # a task with no change is left out


@given(workflow_specs(), command_steps, st.data())
def test_every_changed_field_is_reported_and_nothing_else(
    spec: object, steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Between any two points of a simulated run (either order), the diff is exact."""
    run = simulate(spec, steps)  # type: ignore[arg-type]
    states = [new_state(run.state.id)] + [state for _, state in run.checkpoints]
    i = data.draw(st.integers(0, len(states) - 1))
    j = data.draw(st.integers(0, len(states) - 1))
    _check(states[i], states[j])
    assert diff_states(states[j], states[j]).empty


def test_bookkeeping_and_the_definition_are_left_out() -> None:
    """Counts, unmet dependencies, the definition and the request hash never show."""
    run = simulate(workflow(task("a"), task("b", "a")), [(0, 0)] * 6)
    found = diff_states(new_state(run.state.id), run.state)
    assert {"unfinished", "running", "definition", "requestHash", "tasks"}.isdisjoint(found.run)
    assert all(
        "waitingFor" not in fields and "ordered" not in fields for fields in found.tasks.values()
    )
    assert found.run["workflowId"] == ("", "wf")
