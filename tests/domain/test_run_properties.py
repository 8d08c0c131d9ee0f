"""Properties of the fold over random runs driven by random command sequences."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from flowweaver.domain.events import (
    TERMINAL_EVENT_NAMES,
    TERMINAL_TASK_STATUSES,
    RunStarted,
    TaskFailed,
    event_name,
)
from flowweaver.domain.run import RunState, apply, fold, new_state
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.testing.runs import SimulatedRun, command_steps, simulate, workflow_specs

runs = st.builds(simulate, workflow_specs(), command_steps)
FEW = settings(max_examples=150, deadline=None)


@FEW
@given(runs)
def test_folding_the_decided_events_equals_the_live_state_at_every_prefix(
    run: SimulatedRun,
) -> None:
    """After every command, folding the events so far equals the live state at that moment."""
    events = run.events
    for count, live in run.checkpoints:
        assert fold(events[:count], new_state(live.id)) == live
        assert live.version == count


@FEW
@given(workflow_specs(), command_steps)
def test_replaying_twice_changes_nothing(spec: WorkflowSpec, steps: list[tuple[int, int]]) -> None:
    """Folding the same events twice gives equal states, and folding does not touch events."""
    run = simulate(spec, steps)
    events = run.events
    before = copy.deepcopy(events)
    once = fold(events, new_state(run.state.id))
    twice = fold(events, new_state(run.state.id))
    assert once == twice == run.state
    assert events == before


@FEW
@given(workflow_specs(), command_steps, st.data())
def test_state_at_version_n_equals_folding_the_first_n_events(
    spec: WorkflowSpec, steps: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Folding any prefix gives version N, and continuing the fold from it reaches the end."""
    run = simulate(spec, steps)
    events = run.events
    n = data.draw(st.integers(0, len(events)), label="n")
    at_n = fold(events[:n], new_state(run.state.id))
    assert at_n.version == n
    resumed = fold(events[n:], copy.deepcopy(at_n))
    assert resumed == run.state


@FEW
@given(workflow_specs(), command_steps)
def test_invariants_hold_for_every_run(spec: WorkflowSpec, steps: list[tuple[int, int]]) -> None:
    """Only the first event is RunStarted, nothing follows a terminal event, and statuses agree."""
    run = simulate(spec, steps)
    events = run.events
    assert isinstance(events[0], RunStarted)
    assert not any(isinstance(e, RunStarted) for e in events[1:])
    terminal = [i for i, e in enumerate(events) if event_name(e) in TERMINAL_EVENT_NAMES]
    assert terminal in ([], [len(events) - 1])
    state = run.state
    if state.is_terminal:
        assert all(t.status in TERMINAL_TASK_STATUSES for t in state.tasks.values())
    for failure in (e for e in events if isinstance(e, TaskFailed)):
        assert failure.retry_at is None or failure.retry_at >= failure.timestamp
    _check_attempts(state)
    timestamps = [e.timestamp for e in events]
    assert timestamps == sorted(timestamps)


def _check_attempts(state: RunState) -> None:
    for task_state in state.tasks.values():
        policy = state.spec.retry_policy(state.spec.task(task_state.id))
        counted = task_state.attempts - task_state.interruptions
        assert counted <= policy.max_attempts
        assert task_state.interruptions <= 3


@FEW
@given(workflow_specs(), command_steps)
def test_applying_event_by_event_equals_folding_all(
    spec: WorkflowSpec, steps: list[tuple[int, int]]
) -> None:
    """apply() one event at a time is the same as fold() over the list."""
    run = simulate(spec, steps)
    state = new_state(run.state.id)
    for event in run.events:
        assert apply(state, event) is state
    assert state == fold(run.events, new_state(run.state.id))
