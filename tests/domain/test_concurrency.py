"""Concurrency limits and priorities in the domain: validation, the fold, the commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowweaver.domain.concurrency import (
    Waiting,
    admission_order,
    dequeue_run,
    free_slots,
    queue_run,
)
from flowweaver.domain.events import (
    RunCancelled,
    RunCancelRequested,
    RunDequeued,
    RunQueued,
    RunStarted,
    TaskScheduled,
)
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.run import (
    fold,
    new_state,
    pause_run,
    record_completed,
    record_started,
    request_cancel,
    settle,
    skip_task,
    start_run,
)
from flowweaver.domain.spec import WorkflowSpec, concurrency_group, workflow_from_builtins
from flowweaver.errors import InvalidCommandError, ValidationError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RUN = "00000000-0000-4000-8000-0000000c0001"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def workflow(concurrency: dict[str, Any] | None = None) -> WorkflowSpec:
    document: dict[str, Any] = {
        "id": "limited",
        "tasks": [
            {"id": "a", "handler": "noop"},
            {"id": "b", "handler": "echo", "dependencies": ["a"], "inputs": {"c": "$.params.c"}},
        ],
    }
    if concurrency is not None:
        document["concurrency"] = concurrency
    return workflow_from_builtins(document)


def first_event(spec: WorkflowSpec, params: dict[str, Any], priority: int = 0) -> RunStarted:
    _, events = start_run(RUN, spec, 1, params, at(0), priority=priority)
    first = events[0]
    assert isinstance(first, RunStarted)
    return first


@pytest.mark.parametrize(
    ("concurrency", "path"),
    [
        ({"limit": 0}, "$.concurrency.limit"),
        ({"limit": -3}, "$.concurrency.limit"),
        ({"limit": 1.5}, "$.concurrency.limit"),
        ({}, "$.concurrency"),
        ({"limit": 2, "key": "customer"}, "$.concurrency.key"),
        ({"limit": 2, "key": "$.customer"}, "$.concurrency.key"),
        ({"limit": 2, "key": "$.params"}, "$.concurrency.key"),
        ({"limit": 2, "key": "$.params[0]"}, "$.concurrency.key"),
        ({"limit": 2, "key": ""}, "$.concurrency.key"),
        ({"limit": 2, "other": 1}, "$.concurrency"),
    ],
)
def test_a_bad_concurrency_is_refused_at_its_path(concurrency: dict[str, Any], path: str) -> None:
    """A limit below 1, not a whole number, or a key that is no $.params path is a located error."""
    with pytest.raises(ValidationError) as caught:
        workflow(concurrency)
    assert [e.path for e in caught.value.errors] == [path]


def test_a_good_concurrency_is_kept() -> None:
    """A limit with a nested key path is accepted and kept in the definition."""
    spec = workflow({"limit": 3, "key": "$.params.tenant.id"})
    assert spec.concurrency is not None
    assert (spec.concurrency.limit, spec.concurrency.key) == (3, "$.params.tenant.id")
    assert workflow().concurrency is None


def test_the_group_is_the_key_value_as_canonical_json() -> None:
    """The key's value names the group; a missing one is null; no key means no group."""
    spec = workflow({"limit": 1, "key": "$.params.c"})
    assert concurrency_group(spec, {"c": "acme"}) == '"acme"'
    assert concurrency_group(spec, {"c": {"b": 1, "a": 2}}) == '{"a":2,"b":1}'
    assert concurrency_group(spec, {}) == "null"
    assert concurrency_group(spec, {"c": "x" * 1000}).startswith("sha256:")  # type: ignore[union-attr]
    assert concurrency_group(workflow({"limit": 1}), {"c": "acme"}) is None


def test_a_queued_run_folds_to_queued_with_nothing_scheduled() -> None:
    """RunStarted then RunQueued: status queued, its priority and key, no task scheduled."""
    spec = workflow({"limit": 1, "key": "$.params.c"})
    state, events = queue_run(RUN, first_event(spec, {"c": "acme"}, priority=7))
    assert [type(e) for e in events] == [RunStarted, RunQueued]
    queued = events[1]
    assert isinstance(queued, RunQueued)
    assert (queued.priority, queued.concurrency_key) == (7, '"acme"')
    assert (state.status, state.priority, state.concurrency_key) == ("queued", 7, '"acme"')
    assert all(t.status == "pending" for t in state.tasks.values())
    assert fold(events, new_state(RUN)) == state
    assert settle(state, at(1)) == []


def test_dequeue_begins_the_run_as_a_start_would() -> None:
    """RunDequeued schedules the root tasks; the run then goes on as any other."""
    spec = workflow({"limit": 1})
    state, events = queue_run(RUN, first_event(spec, {"c": 1}))
    begun = dequeue_run(state, at(5))
    assert [type(e) for e in begun] == [RunDequeued, TaskScheduled]
    assert state.status == "running"
    assert state.tasks["a"].status == "scheduled"
    assert dequeue_run(state, at(6)) == []  # only a queued run is dequeued
    events += begun
    events += record_started(state, "a", 1, "w1", at(7))
    events += record_completed(state, "a", 1, {}, 1.0, at(8))
    events += record_started(state, "b", 1, "w1", at(9))
    events += record_completed(state, "b", 1, {"c": 1}, 1.0, at(10))
    assert state.status == "completed"
    assert fold(events, new_state(RUN)) == state
    assert check_run(RUN, events).ok


def test_a_queued_run_cancels_at_once_and_never_begins() -> None:
    """Cancelling a queued run ends it (RunCancelled); a dequeue afterwards decides nothing."""
    spec = workflow({"limit": 1})
    state, events = queue_run(RUN, first_event(spec, {}))
    cancel = request_cancel(state, "no longer needed", at(2), by="alice")
    assert [type(e) for e in cancel] == [RunCancelRequested, RunCancelled]
    assert state.status == "cancelled"
    assert {t.status for t in state.tasks.values()} == {"cancelled"}
    assert dequeue_run(state, at(3)) == []
    assert check_run(RUN, events + cancel).ok


def test_operator_task_actions_and_pause_refuse_a_queued_run() -> None:
    """Nothing of a queued run has begun: pausing it or acting on its tasks is refused."""
    spec = workflow({"limit": 1})
    state, _ = queue_run(RUN, first_event(spec, {}))
    with pytest.raises(InvalidCommandError):
        pause_run(state, at(1), by="bob")
    with pytest.raises(InvalidCommandError, match="queued"):
        skip_task(state, "a", at(1), by="bob")


def test_the_replay_check_accepts_a_run_admitted_at_once() -> None:
    """A run of a limited workflow that began at once replays clean."""
    spec = workflow({"limit": 2})
    state, events = start_run(RUN, spec, 1, {"c": 2}, at(0), priority=3)
    assert state.priority == 3
    events += record_started(state, "a", 1, "w1", at(1))
    events += record_completed(state, "a", 1, {}, 1.0, at(2))
    assert check_run(RUN, events).ok


def test_admission_order_is_priority_then_submission() -> None:
    """Higher priority first; equal priorities in the order they were submitted."""
    waiting = [Waiting("a", 0, 0), Waiting("b", 5, 1), Waiting("c", 0, 2), Waiting("d", 5, 3)]
    assert [w.run_id for w in admission_order(waiting)] == ["b", "d", "a", "c"]
    assert (free_slots(2, 0), free_slots(2, 2), free_slots(2, 5)) == (2, 0, 0)
