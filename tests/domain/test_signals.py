"""Signals and waits in the domain: a wait task completes with a signal's payload, or times out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowweaver.domain.events import (
    SignalReceived,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskScheduled,
)
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.run import (
    RunState,
    fold,
    new_state,
    pause_run,
    record_completed,
    record_retry_due,
    record_started,
    request_cancel,
    resume_run,
    skip_task,
    start_run,
)
from flowweaver.domain.signals import receive_signal, record_wait_expired, wait_deadline
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import InvalidCommandError, NotFoundError, ValidationError
from flowweaver.testing.runs import T0, task, workflow


def wait_task(task_id: str, *deps: str, signal: str = "approval", **extra: Any) -> dict[str, Any]:
    """Return a wait task document (no handler)."""
    wait: dict[str, Any] = {"signal": signal}
    if "timeout" in extra:
        wait["timeout"] = extra.pop("timeout")
    return {"id": task_id, "dependencies": list(deps), "wait": wait, **extra}


def approval_flow(**wait_extra: Any) -> WorkflowSpec:
    """prepare -> approve (waits for "approval", 60 s) -> ship."""
    return workflow(
        task("prepare"),
        wait_task("approve", "prepare", timeout=60, **wait_extra),
        task("ship", "approve", inputs={"ok": "$.result.approved"}),
    )


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def finish(state: RunState, task_id: str, seconds: float) -> list[Any]:
    """Start the task's attempt and complete it."""
    attempt = state.tasks[task_id].attempts
    events = record_started(state, task_id, attempt, "w", at(seconds))
    return events + record_completed(state, task_id, attempt, {}, 1.0, at(seconds + 0.5))


def agrees(state: RunState, events: list[Any]) -> None:
    """The fold of the events is the live state, and the replay check re-derives them all."""
    assert fold(events, new_state(state.id)) == state
    report = check_run(state.id, events)
    assert report.ok, report.difference


def test_a_wait_task_waits_and_is_never_started() -> None:
    """When a wait task is ready it is scheduled into status waiting, not for a worker."""
    state, events = start_run("r", approval_flow(), 1, {}, T0)
    events += finish(state, "prepare", 1)
    assert isinstance(events[-1], TaskScheduled)
    assert state.tasks["approve"].status == "waiting"
    assert record_started(state, "approve", 1, "w", at(3)) == []
    assert wait_deadline(state, "approve") == at(1.5) + timedelta(seconds=60)
    agrees(state, events)


def test_a_signal_completes_the_waiting_task_with_its_payload() -> None:
    """SignalReceived records by; TaskCompleted publishes the payload; dependents proceed."""
    spec = workflow(
        task("prepare"),
        wait_task("approve", "prepare", timeout=60, outputs={"approved": "$.result.ok"}),
        task("ship", "approve", inputs={"ok": "$.approved"}),
    )
    state, events = start_run("r", spec, 1, {}, T0)
    events += finish(state, "prepare", 1)
    decided = receive_signal(state, "approval", {"ok": True}, at(5), by="alice")
    assert isinstance(decided[0], SignalReceived)
    assert (decided[0].name, decided[0].payload, decided[0].by) == (
        "approval",
        {"ok": True},
        "alice",
    )
    assert isinstance(decided[1], TaskCompleted)
    assert decided[1].output == {"approved": True}
    assert decided[1].attempt == 1
    assert state.tasks["ship"].status == "scheduled"
    assert state.tasks["ship"].inputs == {"ok": True}
    events += decided
    events += finish(state, "ship", 6)
    assert state.status == "completed"
    agrees(state, events)


def test_a_signal_before_the_task_is_reached_is_kept() -> None:
    """A signal sent early is kept; the task completes the moment it would start waiting."""
    state, events = start_run("r", approval_flow(), 1, {}, T0)
    events += receive_signal(state, "approval", {"approved": "yes"}, at(0.5), by="bob")
    assert state.signals == {"approval": {"approved": "yes"}}
    assert state.tasks["approve"].status == "pending"
    events += finish(state, "prepare", 1)
    assert state.tasks["approve"].status == "completed"
    assert state.tasks["approve"].output == {"result": {"approved": "yes"}}
    assert state.tasks["ship"].inputs == {"ok": "yes"}
    agrees(state, events)


def test_without_a_signal_the_task_fails_with_signal_timeout() -> None:
    """The timeout fails the task (SignalTimeout); what depends on it is skipped."""
    state, events = start_run("r", approval_flow(), 1, {}, T0)
    events += finish(state, "prepare", 1)
    expired = record_wait_expired(state, "approve", 1, at(62))
    assert isinstance(expired[0], TaskFailed)
    assert expired[0].error.type == "SignalTimeout"
    assert "approval" in expired[0].error.message
    assert expired[0].retry_at is None
    events += expired
    assert state.status == "failed"
    assert state.tasks["ship"].status == "skipped"
    assert record_wait_expired(state, "approve", 1, at(63)) == []  # stale
    agrees(state, events)


def test_signal_timeout_is_retried_by_the_policy_and_a_kept_signal_ends_the_retry() -> None:
    """With retries the task waits again; a signal that came between attempts completes it."""
    spec = approval_flow(retry={"maxAttempts": 2, "initialDelay": 5})
    state, events = start_run("r", spec, 1, {}, T0)
    events += finish(state, "prepare", 1)
    expired = record_wait_expired(state, "approve", 1, at(62))
    assert isinstance(expired[0], TaskFailed)
    assert expired[0].retry_at == at(67)
    events += expired
    events += receive_signal(state, "approval", {"approved": 7}, at(64), by="carol")
    assert state.tasks["approve"].status == "waiting_retry"
    retried = record_retry_due(state, "approve", 1, at(67))
    assert isinstance(retried[0], TaskRetried)
    assert isinstance(retried[1], TaskCompleted)
    assert retried[1].attempt == 2
    events += retried
    assert state.tasks["ship"].status == "scheduled"
    agrees(state, events)


def test_a_second_signal_of_a_name_is_refused_and_the_first_stays() -> None:
    """A name is taken once: the second is refused with InvalidCommandError, nothing decided."""
    state, _ = start_run("r", approval_flow(), 1, {}, T0)
    receive_signal(state, "approval", 1, at(1), by="a")
    version = state.version
    with pytest.raises(InvalidCommandError, match="already received"):
        receive_signal(state, "approval", 2, at(2), by="b")
    assert state.version == version
    assert state.signals == {"approval": 1}


def test_a_signal_nobody_waits_for_is_not_found() -> None:
    """A signal name no task of the workflow waits for is refused (a typo fails loudly)."""
    state, _ = start_run("r", approval_flow(), 1, {}, T0)
    with pytest.raises(NotFoundError):
        receive_signal(state, "aproval", 1, at(1), by="a")


def test_a_signal_to_an_ended_or_cancelling_run_is_refused() -> None:
    """An ended run or one being cancelled takes no signal."""
    state, _ = start_run("r", approval_flow(), 1, {}, T0)
    finish(state, "prepare", 1)
    request_cancel(state, "no", at(3))
    assert state.tasks["approve"].status == "cancelled"
    assert state.status == "cancelled"
    with pytest.raises(InvalidCommandError, match="ended"):
        receive_signal(state, "approval", 1, at(4), by="a")


def test_a_payload_over_the_limit_is_refused() -> None:
    """The payload is bounded by the task data limit, as a hand-given output is."""
    state, _ = start_run("r", approval_flow(), 1, {}, T0)
    with pytest.raises(ValidationError) as caught:
        receive_signal(state, "approval", "x" * 200, at(1), by="a", max_io_bytes=100)
    assert caught.value.errors[0].path == "$.payload"
    assert state.signals == {}


def test_a_signal_completes_the_task_in_a_paused_run_and_dependents_wait_for_resume() -> None:
    """Like a running attempt's outcome, a signal is recorded while paused; resume goes on."""
    state, events = start_run("r", approval_flow(), 1, {}, T0)
    events += finish(state, "prepare", 1)
    events += pause_run(state, at(3), by="op")
    events += receive_signal(state, "approval", {"approved": 1}, at(4), by="a")
    assert state.tasks["approve"].status == "completed"
    assert state.tasks["ship"].status == "pending"
    events += resume_run(state, at(5), by="op")
    assert state.tasks["ship"].status == "scheduled"
    agrees(state, events)


def test_an_operator_may_skip_a_waiting_task() -> None:
    """A waiting task is skipped by hand like any task not running; its timer is then stale."""
    state, events = start_run("r", approval_flow(), 1, {}, T0)
    events += finish(state, "prepare", 1)
    events += skip_task(state, "approve", at(3), by="op")
    assert state.tasks["approve"].status == "skipped"
    assert record_wait_expired(state, "approve", 1, at(70)) == []
    agrees(state, events)


def test_every_task_waiting_for_a_name_completes() -> None:
    """Two tasks waiting for one signal both complete with its payload."""
    spec = workflow(wait_task("a"), wait_task("b"), task("c", "a", "b"))
    state, events = start_run("r", spec, 1, {}, T0)
    events += receive_signal(state, "approval", 1, at(1), by="x")
    assert state.tasks["a"].status == state.tasks["b"].status == "completed"
    assert state.tasks["c"].status == "scheduled"
    agrees(state, events)


@pytest.mark.parametrize(
    ("document", "path", "text"),
    [
        ({"id": "w", "wait": {}}, "$.tasks[0].wait", "signal"),
        ({"id": "w", "wait": {"signal": "s"}, "handler": "noop"}, "$.tasks[0]", "not both"),
        ({"id": "w", "wait": {"signal": "s", "timeout": 0}}, "$.tasks[0].wait.timeout", ""),
        ({"id": "w", "wait": {"signal": "s", "timeout": -5}}, "$.tasks[0].wait.timeout", ""),
        ({"id": "w", "wait": {"signal": "bad name"}}, "$.tasks[0].wait.signal", ""),
        ({"id": "w"}, "$.tasks[0].handler", "handler"),
    ],
)
def test_a_bad_wait_is_refused_at_registration(
    document: dict[str, Any], path: str, text: str
) -> None:
    """A wait without a signal, with a handler too, or with a non-positive timeout is a 422."""
    with pytest.raises(ValidationError) as caught:
        workflow(document)
    assert caught.value.errors[0].path == path
    assert text in caught.value.errors[0].message


# --- property: any interleaving of signals, timeouts, retries and outcomes -------------------

RANDOM_FLOW = workflow(
    task("a"),
    wait_task("w1", "a", timeout=10, retry={"maxAttempts": 2, "initialDelay": 1}),
    wait_task("w2", signal="other", timeout=5),
    wait_task("w3", "w1", signal="other"),
    task("b", "w1", "w2", trigger="all_done"),
)


def _steps(state: RunState, pick: int, now: Any) -> list[Any]:
    """Return the events of one step chosen by ``pick`` among what the run allows now."""
    options: list[Any] = []
    for t in state.tasks.values():
        if t.status == "scheduled":
            options.append(lambda t=t: record_started(state, t.id, t.attempts, "w", now))
        elif t.status == "running":
            options.append(lambda t=t: record_completed(state, t.id, t.attempts, {}, 1.0, now))
        elif t.status == "waiting":
            options.append(lambda t=t: record_wait_expired(state, t.id, t.attempts, now))
        elif t.status == "waiting_retry":
            options.append(lambda t=t: record_retry_due(state, t.id, t.attempts, now))
    if not state.is_terminal and not state.cancel_requested:
        options.extend(
            lambda n=name: receive_signal(state, n, {"n": pick}, now, by="p")
            for name in ("approval", "other")
            if name not in state.signals
        )
        if state.status == "running":
            options.append(lambda: pause_run(state, now, by="op"))
        if state.is_paused:
            options.append(lambda: resume_run(state, now, by="op"))
        if pick % 17 == 0:
            options.append(lambda: request_cancel(state, "stop", now))
    if not options:
        return []
    return list(options[pick % len(options)]())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=30))
def test_any_interleaving_folds_to_the_live_state_and_replays(picks: list[int]) -> None:
    """At every step the fold of the events is the live state; the replay check agrees."""
    state, events = start_run("r", RANDOM_FLOW, 1, {}, T0)
    for step, pick in enumerate(picks, start=1):
        events += _steps(state, pick, at(step))
        assert fold(events, new_state("r")) == state
    report = check_run("r", events)
    assert report.ok, report.difference


def test_a_kept_signal_completing_a_wait_on_resume_schedules_a_ready_task_once() -> None:
    """On resume, a wait completed by its kept signal makes ready a task that was ready
    already (in the same batch): it is scheduled once, not twice."""
    spec = workflow(
        task("a"),
        task("b"),
        wait_task("w", "a"),
        task("x", "b", "w", trigger="one_success"),
    )
    state, events = start_run("r", spec, 1, {}, T0)
    events += record_started(state, "a", 1, "w1", at(0.1))
    events += record_started(state, "b", 1, "w2", at(0.1))
    events += pause_run(state, at(0.5), by="op")
    events += record_completed(state, "a", 1, {}, 1.0, at(1))
    events += record_completed(state, "b", 1, {}, 1.0, at(1))
    events += receive_signal(state, "approval", {"ok": 1}, at(2), by="p")
    assert state.tasks["w"].status == "pending" and state.tasks["x"].status == "pending"
    events += resume_run(state, at(3), by="op")
    assert state.tasks["w"].status == "completed"
    scheduled = [e for e in events if isinstance(e, TaskScheduled) and e.task_id == "x"]
    assert len(scheduled) == 1
    agrees(state, events)


def test_a_task_failing_at_scheduling_does_not_schedule_an_always_dependent_twice() -> None:
    """A root that fails on its inputs makes its ``always`` dependent run once (it was in the
    same batch of ready tasks)."""
    spec = workflow(
        task("t0", inputs={"missing": "$.params.nowhere"}),
        task("t1", "t0", trigger="always", inputs={"missing": "$.params.nowhere"}),
    )
    state, events = start_run("r", spec, 1, {}, T0)
    names = [type(e).__name__ for e in events]
    assert names.count("RunFailed") == 1 and names[-1] == "RunFailed"
    assert len([e for e in events if isinstance(e, TaskScheduled) and e.task_id == "t1"]) == 1
    agrees(state, events)
