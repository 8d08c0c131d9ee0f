"""Map tasks in the domain, without threads: the fold of element events, per-element retries,
results in order, bounds, a path that selects no list, cancel, interruption and replay."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowweaver.domain.events import (
    INTERRUPTED,
    ErrorInfo,
    MapElementCompleted,
    MapElementFailed,
    MapElementRetried,
    MapElementStarted,
    RunEvent,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TaskSkipped,
    event_name,
)
from flowweaver.domain.mapping import MAX_ELEMENTS, element_key, split_key
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.run import (
    RunState,
    fold,
    interrupt_running,
    new_state,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    request_cancel,
    retry_task,
    start_run,
)
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import ValidationError
from flowweaver.testing.runs import T0, task, workflow

RUN = "00000000-0000-4000-8000-0000000000aa"
FLAKY = ErrorInfo(type="ValueError", message="flaky", retryable=True)


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def mapped(max_attempts: int = 2, **extra: Any) -> WorkflowSpec:
    """``fan`` maps over the parameter ``xs``; ``after`` reads its result."""
    return workflow(
        task(
            "fan",
            handler="square",
            inputs={"items": "$.params.xs", "k": 1},
            map="$.items",
            retry={"maxAttempts": max_attempts, "initialDelay": 1.0, "jitter": 0},
            **extra,
        ),
        task("after", "fan", inputs={"values": "$.result"}),
    )


def started(xs: Any, spec: WorkflowSpec | None = None) -> tuple[RunState, list[RunEvent]]:
    return start_run(RUN, spec or mapped(), 1, {"xs": xs}, T0)


def names(events: list[RunEvent]) -> list[str]:
    return [event_name(e) for e in events]


def test_element_keys_round_trip_and_plain_ids_are_not_elements() -> None:
    """``task[index]`` names an element; a task id cannot contain ``[``, so none is mistaken."""
    assert element_key("fan", 12) == "fan[12]"
    assert split_key("fan[12]") == ("fan", 12)
    assert split_key("fan") is None
    assert split_key("a.b:c-d") is None
    assert split_key("fan[x]") is None


def test_scheduling_a_map_task_schedules_every_element_in_one_event() -> None:
    """TaskScheduled expands the list: each element waits for attempt 1, no event each."""
    state, events = started([1, 2, 3])
    assert names(events) == ["RunStarted", "TaskScheduled"]
    fan = state.tasks["fan"]
    assert fan.status == "scheduled"
    assert fan.elements is not None
    assert fan.elements.total == 3
    assert [e.status for e in fan.elements.elements] == ["scheduled"] * 3


def test_results_publish_in_element_order_whatever_order_they_finish_in() -> None:
    """Elements completing out of order still give the list in index order, once, at the end."""
    state, _ = started([1, 2, 3])
    for i in (2, 0, 1):
        assert names(record_started(state, f"fan[{i}]", 1, "w", at(1))) == ["MapElementStarted"]
    assert state.tasks["fan"].status == "running"
    assert state.running == 1  # the map task counts once, however many elements run
    assert names(record_completed(state, "fan[2]", 1, 9, 1.0, at(2))) == ["MapElementCompleted"]
    assert names(record_completed(state, "fan[0]", 1, 1, 1.0, at(3))) == ["MapElementCompleted"]
    last = record_completed(state, "fan[1]", 1, 4, 1.0, at(4))
    assert names(last) == ["MapElementCompleted", "TaskCompleted", "TaskScheduled"]
    completed = last[1]
    assert isinstance(completed, TaskCompleted)
    assert completed.output == {"result": [1, 4, 9]}
    scheduled = last[2]
    assert isinstance(scheduled, TaskScheduled)
    assert scheduled.inputs == {"values": [1, 4, 9]}


def test_each_element_retries_on_its_own_under_the_task_policy() -> None:
    """A failing element waits for its delay and runs again; the others are not touched."""
    state, _ = started([1, 2])
    record_started(state, "fan[0]", 1, "w", at(1))
    record_started(state, "fan[1]", 1, "w", at(1))
    [failed] = record_failed(state, "fan[0]", 1, FLAKY, at(2))
    assert isinstance(failed, MapElementFailed)
    assert failed.retry_at == at(3)
    assert failed.index == 0
    record_completed(state, "fan[1]", 1, 4, 1.0, at(2.5))
    fan = state.tasks["fan"]
    assert fan.elements is not None
    assert [e.status for e in fan.elements.elements] == ["waiting_retry", "completed"]
    assert record_retry_due(state, "fan[0]", 0, at(3)) == []  # a stale attempt
    [retried] = record_retry_due(state, "fan[0]", 1, at(3))
    assert isinstance(retried, MapElementRetried)
    assert retried.attempt == 2
    assert record_started(state, "fan[0]", 1, "w", at(3.1)) == []  # the old attempt is gone
    record_started(state, "fan[0]", 2, "w", at(3.1))
    done = record_completed(state, "fan[0]", 2, 1, 1.0, at(4))
    assert names(done)[:2] == ["MapElementCompleted", "TaskCompleted"]
    assert state.tasks["fan"].output == {"result": [1, 4]}
    assert state.tasks["fan"].attempts == 1  # the task's attempt; elements count their own


def test_an_element_failing_for_good_cancels_the_rest_and_fails_the_task_when_none_runs() -> None:
    """Elements not started are cancelled; the running one finishes; then the task fails with
    the element's error and what depends on it is skipped."""
    state, _ = started([1, 2, 3], mapped(max_attempts=1))
    record_started(state, "fan[0]", 1, "w", at(1))
    record_started(state, "fan[1]", 1, "w", at(1))
    [failed] = record_failed(state, "fan[0]", 1, FLAKY, at(2))
    assert isinstance(failed, MapElementFailed)
    assert failed.retry_at is None
    fan = state.tasks["fan"]
    assert fan.elements is not None
    assert [e.status for e in fan.elements.elements] == ["failed", "running", "cancelled"]
    assert fan.status == "running"
    assert record_started(state, "fan[2]", 1, "w", at(2.5)) == []
    end = record_completed(state, "fan[1]", 1, 4, 1.0, at(3))
    assert names(end) == [
        "MapElementCompleted",
        "TaskFailed",
        "TaskSkipped",
        "RunFailed",
    ]
    task_failed = end[1]
    assert isinstance(task_failed, TaskFailed)
    assert task_failed.error.type == "ValueError"
    assert task_failed.error.message == "element 0: flaky"
    assert not task_failed.error.retryable
    assert task_failed.retry_at is None
    assert isinstance(end[2], TaskSkipped)
    assert state.status == "failed"


def test_a_path_that_selects_no_list_fails_the_task_at_once_and_is_not_retried() -> None:
    """A number, an object or nothing at the path: TaskFailed MapInputError, not retryable."""
    for xs, words in ((5, "selects int, not a list"), ({"a": 1}, "selects an object")):
        _, events = started(xs)
        assert names(events) == [
            "RunStarted",
            "TaskScheduled",
            "TaskFailed",
            "TaskSkipped",
            "RunFailed",
        ]
        failed = events[2]
        assert isinstance(failed, TaskFailed)
        assert failed.error.type == "MapInputError"
        assert words in failed.error.message
        assert not failed.error.retryable
        assert failed.retry_at is None
    spec = workflow(task("fan", inputs={"items": [1]}, map="$.other"))
    _state, events = start_run(RUN, spec, 1, {}, T0)
    failed = events[2]
    assert isinstance(failed, TaskFailed)
    assert failed.error.type == "MapInputError"
    assert "matched nothing" in failed.error.message


def test_an_empty_list_completes_the_task_with_an_empty_list() -> None:
    """Nothing to run: the task completes at once with ``[]`` and what follows runs."""
    state, events = started([])
    assert names(events) == ["RunStarted", "TaskScheduled", "TaskCompleted", "TaskScheduled"]
    assert state.tasks["fan"].output == {"result": []}


def test_more_than_the_limit_of_elements_fails_the_task_with_a_clear_error() -> None:
    """10,001 elements: MapInputError naming the count and the limit; 10,000 are fine."""
    _, events = started(list(range(MAX_ELEMENTS + 1)))
    failed = events[2]
    assert isinstance(failed, TaskFailed)
    assert failed.error.type == "MapInputError"
    assert f"{MAX_ELEMENTS + 1} elements, over the limit of {MAX_ELEMENTS}" in failed.error.message
    _state, events = started(list(range(MAX_ELEMENTS)))
    assert names(events) == ["RunStarted", "TaskScheduled"]


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ({"map": "items"}, "$.tasks[0].map", "must be a JSONPath"),
        ({"map": "$.items[?"}, "$.tasks[0].map", "invalid JSONPath"),
        ({"map": "$.items", "inputs": {"item": 1}}, "$.tasks[0].inputs.item", "rename"),
    ],
)
def test_a_malformed_map_is_refused_at_registration(
    extra: dict[str, Any], path: str, words: str
) -> None:
    """A map that is not a usable path, or an input the elements' own would shadow: 422."""
    with pytest.raises(ValidationError) as caught:
        workflow(task("fan", **extra))
    [error] = [e for e in caught.value.errors if e.path == path]
    assert words in error.message


def test_a_cancel_stops_elements_from_starting_and_ends_when_running_ones_finish() -> None:
    """Waiting elements are cancelled; the run is cancelled once the running one reports."""
    state, _ = started([1, 2, 3])
    record_started(state, "fan[0]", 1, "w", at(1))
    assert names(request_cancel(state, "stop", at(2))) == ["RunCancelRequested"]
    assert record_started(state, "fan[1]", 1, "w", at(2.5)) == []
    end = record_completed(state, "fan[0]", 1, 1, 1.0, at(3))
    assert names(end) == ["MapElementCompleted", "RunCancelled"]
    assert state.tasks["fan"].status == "cancelled"
    assert state.status == "cancelled"


def test_interrupted_elements_run_again_and_completed_ones_do_not() -> None:
    """After a crash only the running elements get MapElementFailed(Interrupted), retried now."""
    state, _ = started([1, 2, 3])
    record_started(state, "fan[0]", 1, "w", at(1))
    record_started(state, "fan[1]", 1, "w", at(1))
    record_completed(state, "fan[0]", 1, 1, 1.0, at(2))
    events = interrupt_running(state, at(5), still_running=[])
    assert names(events) == ["MapElementFailed"]
    [lost] = events
    assert isinstance(lost, MapElementFailed)
    assert (lost.index, lost.error.type, lost.retry_at) == (1, INTERRUPTED, at(5))
    [retried] = record_retry_due(state, "fan[1]", 1, at(5))
    assert isinstance(retried, MapElementRetried)
    fan = state.tasks["fan"]
    assert fan.elements is not None
    assert [e.status for e in fan.elements.elements] == ["completed", "scheduled", "scheduled"]
    assert interrupt_running(state, at(6), still_running=[]) == []


def test_an_operator_retry_reruns_only_the_elements_that_did_not_complete() -> None:
    """In a paused run, retrying the failed map task keeps completed results."""
    spec = mapped(max_attempts=1)
    state, _ = start_run(RUN, spec, 1, {"xs": [1, 2]}, T0, on_task_failure="pause")
    record_started(state, "fan[0]", 1, "w", at(1))
    record_completed(state, "fan[0]", 1, 1, 1.0, at(2))
    record_started(state, "fan[1]", 1, "w", at(2))
    end = record_failed(state, "fan[1]", 1, FLAKY, at(3))
    assert names(end) == ["MapElementFailed", "TaskFailed", "RunPaused"]
    events = retry_task(state, "fan", at(4), by="op")
    assert names(events) == ["TaskRetried"]
    fan = state.tasks["fan"]
    assert fan.elements is not None
    assert [(e.status, e.attempts) for e in fan.elements.elements] == [
        ("completed", 1),
        ("scheduled", 2),
    ]
    record_started(state, "fan[1]", 2, "w", at(5))
    done = record_completed(state, "fan[1]", 2, 4, 1.0, at(6))
    assert names(done)[:2] == ["MapElementCompleted", "TaskCompleted"]
    assert state.tasks["fan"].output == {"result": [1, 4]}


def test_the_fold_of_the_stored_events_equals_the_live_state_and_the_replay_check_agrees() -> None:
    """Folding what the commands decided gives the state they decided on; check-replay agrees."""
    state, events = started([1, 2, 3])
    events += record_started(state, "fan[0]", 1, "w", at(1))
    events += record_started(state, "fan[1]", 1, "w", at(1))
    events += record_failed(state, "fan[1]", 1, FLAKY, at(2), jitter_sample=0.5)
    events += record_completed(state, "fan[0]", 1, 1, 1.0, at(2.5))
    events += record_started(state, "fan[2]", 1, "w", at(2.6))
    events += interrupt_running(state, at(2.7), still_running=[])
    events += record_retry_due(state, "fan[2]", 1, at(2.8))
    events += record_retry_due(state, "fan[1]", 1, at(3.5))
    events += record_started(state, "fan[1]", 2, "w", at(3.6))
    events += record_started(state, "fan[2]", 2, "w", at(3.6))
    events += record_completed(state, "fan[2]", 2, 9, 1.0, at(3.7))
    events += record_completed(state, "fan[1]", 2, 4, 1.0, at(3.8))
    events += record_started(state, "after", 1, "w", at(4))
    events += record_completed(state, "after", 1, {}, 1.0, at(5))
    assert state.status == "completed"
    assert state.tasks["fan"].output == {"result": [1, 4, 9]}
    assert fold(events, new_state(RUN)) == state
    assert check_run(RUN, events).difference is None
    kinds = {type(e) for e in events}
    assert {MapElementStarted, MapElementCompleted, MapElementFailed, MapElementRetried} <= kinds


def test_ten_thousand_elements_decide_and_replay_in_linear_time() -> None:
    """A 10,000-element map runs through the commands and replays in well under a second each
    (no O(n^2) in the fold or the decisions)."""
    n = MAX_ELEMENTS
    began = time.perf_counter()
    state, events = started(list(range(n)))
    for i in range(n):
        events += record_started(state, f"fan[{i}]", 1, "w", at(1))
        events += record_completed(state, f"fan[{i}]", 1, i, 1.0, at(2))
    decided = time.perf_counter() - began
    assert state.tasks["fan"].output == {"result": list(range(n))}
    began = time.perf_counter()
    replayed = fold(events, new_state(RUN))
    replay = time.perf_counter() - began
    assert replayed == state
    assert decided < 5.0, decided
    assert replay < 2.0, replay


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 6),
    max_attempts=st.integers(1, 3),
    choices=st.lists(st.integers(0, 10_000), min_size=0, max_size=80),
)
def test_random_element_outcomes_fold_and_replay_as_decided(
    size: int, max_attempts: int, choices: list[int]
) -> None:
    """Whatever order elements start, fail, retry, are interrupted or are cancelled in: the
    fold of the decided events equals the live state, the replay check re-derives them, and a
    completed map publishes every element's result once, in index order."""
    spec = workflow(
        task(
            "fan",
            handler="square",
            inputs={"items": "$.params.xs"},
            map="$.items",
            retry={"maxAttempts": max_attempts, "initialDelay": 1.0, "nonRetryable": ["Fatal"]},
        ),
        task("after", "fan", inputs={"values": "$.result"}),
    )
    state, events = start_run(RUN, spec, 1, {"xs": list(range(size))}, T0)
    clock = 0.0
    for choice in choices:
        if state.is_terminal:
            break
        clock += 1.0
        now = at(clock)
        progress = state.tasks["fan"].elements
        steps: list[Callable[[], list[RunEvent]]] = []
        if progress is not None:
            for i, e in enumerate(progress.elements):
                key, attempt = f"fan[{i}]", e.attempts
                if e.status == "scheduled":
                    steps.append(partial(record_started, state, key, attempt, "w", now))
                elif e.status == "running":
                    steps.append(partial(record_completed, state, key, attempt, i * i, 1.0, now))
                    for kind in ("ValueError", "Fatal"):
                        error = ErrorInfo(type=kind, message=kind, retryable=True)
                        steps.append(partial(record_failed, state, key, attempt, error, now))
                elif e.status == "waiting_retry":
                    steps.append(partial(record_retry_due, state, key, attempt, now))
            steps.append(partial(interrupt_running, state, now, still_running=[]))
        if state.tasks["after"].status == "scheduled":
            steps.append(partial(record_started, state, "after", 1, "w", now))
        elif state.tasks["after"].status == "running":
            steps.append(partial(record_completed, state, "after", 1, {}, 1.0, now))
        if choice % 23 == 0:
            steps.append(partial(request_cancel, state, "stop", now))
        if not steps:
            break
        events += steps[choice % len(steps)]()
    assert fold(events, new_state(RUN)) == state
    assert check_run(RUN, events).difference is None
    fan = state.tasks["fan"]
    if fan.status == "completed":
        assert fan.output == {"result": [i * i for i in range(size)]}
        completed = Counter(e.index for e in events if isinstance(e, MapElementCompleted))
        assert completed == Counter(dict.fromkeys(range(size), 1))
    if fan.elements is not None:
        counts = Counter(e.status for e in fan.elements.elements)
        assert counts["completed"] == fan.elements.completed
        assert counts["running"] == fan.elements.running
        assert counts["failed"] == fan.elements.failed
