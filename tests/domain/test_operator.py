"""Forks, pauses and operator actions as domain commands: what each decides, what each refuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flowweaver.domain.events import ErrorInfo, RunEvent, event_name
from flowweaver.domain.run import (
    RunState,
    complete_task,
    fold,
    fork_run,
    new_state,
    pause_run,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    request_cancel,
    resume_run,
    retry_task,
    settle,
    skip_task,
    start_run,
)
from flowweaver.errors import InvalidCommandError, NotFoundError, ValidationError
from flowweaver.testing.runs import T0, task, workflow

FATAL = ErrorInfo(type="ValueError", message="bad", retryable=False)
RETRYABLE = ErrorInfo(type="IOError", message="flaky")
RUN = "00000000-0000-4000-8000-0000000000aa"
FORK = "00000000-0000-4000-8000-0000000000bb"


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def names(events: list[RunEvent]) -> list[str]:
    return [event_name(e) for e in events]


def chain(**extra: Any) -> tuple[RunState, list[RunEvent]]:
    """a -> b -> c, plus a lone d; a retries once after one second."""
    spec = workflow(
        task("a", retry={"maxAttempts": 2, "initialDelay": 1.0, "jitter": 0}),
        task("b", "a"),
        task("c", "b"),
        task("d"),
        **extra,
    )
    return start_run(RUN, spec, 1, {"p": 1}, at(0))


def replayed(state: RunState, events: list[RunEvent]) -> None:
    """The live state after the commands equals the fold of their events."""
    assert fold(events, new_state(state.id)) == state


def test_on_task_failure_pause_pauses_instead_of_failing_and_skips_nothing() -> None:
    state, events = chain(onTaskFailure="pause")
    events += record_started(state, "a", 1, "w", at(1))
    events += record_failed(state, "a", 1, FATAL, at(2))
    assert names(events[-2:]) == ["TaskFailed", "RunPaused"]
    assert state.status == "paused" and state.paused_by == "engine"
    assert state.tasks["b"].status == "pending"
    # d was scheduled before the pause; it may not start while paused
    assert record_started(state, "d", 1, "w", at(3)) == []
    assert settle(state, at(3)) == []
    replayed(state, events)


def test_a_run_request_can_ask_for_pause_over_the_workflow() -> None:
    spec = workflow(task("a"), task("b", "a"))
    state, _ = start_run(RUN, spec, 1, {}, at(0), on_task_failure="pause")
    assert state.on_task_failure == "pause"
    state, _ = start_run(RUN, spec, 1, {}, at(0))
    assert state.on_task_failure == "fail"


def test_retry_of_a_failed_task_in_a_paused_run_starts_while_paused() -> None:
    state, events = chain(onTaskFailure="pause")
    events += record_started(state, "a", 1, "w", at(1))
    events += record_failed(state, "a", 1, FATAL, at(2))
    events += retry_task(state, "a", at(3), by="alice", reason="fixed")
    assert state.tasks["a"].status == "scheduled" and state.tasks["a"].attempts == 2
    assert state.unfinished == 4
    events += record_started(state, "a", 2, "w", at(4))
    events += record_completed(state, "a", 2, {}, 1.0, at(5))
    assert state.tasks["b"].status == "pending"  # held back: the run is still paused
    events += resume_run(state, at(6), by="alice")
    assert names(events[-2:]) == ["RunResumed", "TaskScheduled"]
    assert state.status == "running"
    replayed(state, events)


def test_retry_now_of_a_task_waiting_for_its_retry_makes_the_timer_stale() -> None:
    state, events = chain()
    events += record_started(state, "a", 1, "w", at(1))
    events += record_failed(state, "a", 1, RETRYABLE, at(2))
    assert state.tasks["a"].status == "waiting_retry"
    events += retry_task(state, "a", at(2.1), by="op")
    assert state.tasks["a"].attempts == 2
    assert record_retry_due(state, "a", 1, at(3)) == []
    replayed(state, events)


def test_retry_refuses_a_task_that_is_not_waiting_or_failed_in_a_pause() -> None:
    state, _ = chain()
    with pytest.raises(InvalidCommandError, match="task b is pending"):
        retry_task(state, "b", at(1), by="op")
    with pytest.raises(NotFoundError):
        retry_task(state, "nope", at(1), by="op")
    state2, _ = chain()
    record_started(state2, "a", 1, "w", at(1))
    record_failed(state2, "a", 1, FATAL, at(2))
    with pytest.raises(InvalidCommandError, match="not paused"):
        retry_task(state2, "a", at(3), by="op")


def test_pause_blocks_starts_retries_and_the_end_and_resume_settles_all() -> None:
    state, events = chain()
    events += record_started(state, "a", 1, "w", at(1))
    events += record_started(state, "d", 1, "w", at(1))
    events += pause_run(state, at(1.5), by="op", reason="look")
    events += record_failed(state, "a", 1, RETRYABLE, at(2))  # retry at 3
    events += record_completed(state, "d", 1, {}, 1.0, at(2))
    assert record_retry_due(state, "a", 1, at(3)) == []
    with pytest.raises(InvalidCommandError, match="only a running run pauses"):
        pause_run(state, at(3), by="op")
    events += resume_run(state, at(4), by="op")
    assert names(events[-2:]) == ["RunResumed", "TaskRetried"]
    replayed(state, events)


def test_resume_skips_what_depends_on_a_task_that_failed_while_paused_and_ends_the_run() -> None:
    state, events = chain(onTaskFailure="pause")
    events += record_started(state, "a", 1, "w", at(1))
    events += record_started(state, "d", 1, "w", at(1))
    events += record_completed(state, "d", 1, {}, 1.0, at(1.5))
    events += record_failed(state, "a", 1, FATAL, at(2))
    assert not state.is_terminal
    events += resume_run(state, at(3), by="op")
    assert names(events[-4:]) == ["RunResumed", "TaskSkipped", "TaskSkipped", "RunFailed"]
    replayed(state, events)


def test_skip_skips_downstream_and_may_end_the_run() -> None:
    state, events = chain(onTaskFailure="pause")
    events += record_started(state, "a", 1, "w", at(1))
    events += record_started(state, "d", 1, "w", at(1))
    events += record_completed(state, "d", 1, {}, 1.0, at(1.5))
    events += record_failed(state, "a", 1, FATAL, at(2))
    events += skip_task(state, "a", at(3), by="op", reason="not needed")
    assert [(t.id, t.status) for t in state.tasks.values()] == [
        ("a", "skipped"),
        ("b", "skipped"),
        ("c", "skipped"),
        ("d", "completed"),
    ]
    assert state.status == "paused"  # nothing ends while paused
    events += resume_run(state, at(4), by="op")
    assert state.status == "completed"
    with pytest.raises(InvalidCommandError, match="has ended"):
        skip_task(state, "a", at(5), by="op")
    replayed(state, events)


def test_skip_and_complete_refuse_running_or_completed_tasks() -> None:
    state, _ = chain()
    record_started(state, "a", 1, "w", at(1))
    with pytest.raises(InvalidCommandError, match="task a is running"):
        skip_task(state, "a", at(2), by="op")
    with pytest.raises(InvalidCommandError, match="task a is running"):
        complete_task(state, "a", {}, at(2), by="op")
    record_completed(state, "a", 1, {}, 1.0, at(2))
    with pytest.raises(InvalidCommandError, match="task a is completed"):
        complete_task(state, "a", {}, at(3), by="op")


def test_complete_by_hand_publishes_the_output_and_schedules_what_is_ready() -> None:
    state, events = chain(onTaskFailure="pause")
    events += record_started(state, "a", 1, "w", at(1))
    events += record_failed(state, "a", 1, FATAL, at(2))
    events += complete_task(state, "a", {"v": 1}, at(3), by="op", reason="done by hand")
    assert state.tasks["a"].output == {"v": 1}
    assert state.tasks["b"].status == "pending"  # paused: not scheduled yet
    events += resume_run(state, at(4), by="op")
    assert state.tasks["b"].status == "scheduled"
    with pytest.raises(ValidationError, match="over the limit"):
        complete_task(state, "c", "x" * 100, at(5), by="op", max_io_bytes=10)
    replayed(state, events)


def test_cancel_records_who_and_commands_refuse_a_cancelling_run() -> None:
    state, events = chain()
    events += record_started(state, "a", 1, "w", at(1))
    events += request_cancel(state, "stop", at(2), by="op")
    assert state.cancel_by == "op" and not state.is_terminal
    with pytest.raises(InvalidCommandError, match="being cancelled"):
        pause_run(state, at(3), by="op")
    replayed(state, events)


def failed_parent() -> RunState:
    state, _events = chain()
    record_started(state, "a", 1, "w", at(1))
    record_started(state, "d", 1, "w", at(1))
    record_completed(state, "a", 1, {"a": 1}, 1.0, at(2))
    record_started(state, "b", 1, "w", at(3))
    record_failed(state, "b", 1, FATAL, at(4))
    record_completed(state, "d", 1, {"d": 1}, 1.0, at(5))
    assert state.status == "failed"
    return state


def test_fork_by_default_reruns_from_the_point_of_failure() -> None:
    parent = failed_parent()
    state, events = fork_run(FORK, parent, at(10), by="op", reason="again")
    first = events[0]
    assert event_name(first) == "RunForked"
    assert first.carried == {"a": {"result": {"a": 1}}, "d": {"result": {"d": 1}}}  # type: ignore[union-attr]
    assert first.reset == ("b", "c")  # type: ignore[union-attr]
    assert names(events[1:]) == ["TaskScheduled"]
    assert state.tasks["b"].inputs == {} and state.tasks["c"].status == "pending"
    assert state.parent_run_id == RUN and state.parent_version == parent.version
    replayed(state, events)


def test_fork_with_reset_parameters_and_overrides() -> None:
    parent = failed_parent()
    state, events = fork_run(
        FORK, parent, at(10), reset=["c"], parameters={"p": 2}, outputs={"a": {"x": 0}}, by="op"
    )
    # b failed in the parent, so it is not carried: it runs again although not reset
    assert set(events[0].carried) == {"a", "d"}  # type: ignore[union-attr]
    assert state.parameters == {"p": 2}
    assert state.tasks["a"].output == {"x": 0}
    assert state.tasks["b"].status == "scheduled"


def test_fork_of_a_completed_run_at_its_end_completes_at_once() -> None:
    state, _events = chain()
    for name, when in (("a", 1), ("d", 1), ("b", 3), ("c", 5)):
        record_started(state, name, 1, "w", at(when))
        record_completed(state, name, 1, {}, 1.0, at(when + 1))
    assert state.status == "completed"
    _fork, decided = fork_run(FORK, state, at(10), by="op")
    assert names(decided) == ["RunForked", "RunCompleted"]


def test_fork_refuses_unknown_resets_and_overrides_of_tasks_that_run_again() -> None:
    parent = failed_parent()
    with pytest.raises(ValidationError) as raised:
        fork_run(FORK, parent, at(10), reset=["zzz"], outputs={"b": 1, "q": 2}, by="op")
    paths = [e.path for e in raised.value.errors]
    assert paths == ["$.reset[0]", "$.outputs.b", "$.outputs.q"]
    with pytest.raises(InvalidCommandError):
        fork_run(FORK, new_state(RUN), at(10), by="op")
