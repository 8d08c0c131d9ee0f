"""Trigger rules: when a pending task runs, waits or is skipped, by its dependencies' outcomes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowweaver.domain.events import ErrorInfo, RunEvent, TaskSkipped
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.run import (
    RunState,
    fold,
    new_state,
    pause_run,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    resume_run,
    retry_task,
    skip_task,
    start_run,
)
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import ValidationError
from flowweaver.testing.runs import (
    T0,
    TRIGGER_RULES,
    command_steps,
    simulate,
    task,
    workflow,
    workflow_specs,
)

FATAL = ErrorInfo(type="ValueError", message="boom", retryable=False)


class Driver:
    """Drives one run through the domain commands, one second per step, keeping every event."""

    def __init__(self, spec: WorkflowSpec, **extra: Any) -> None:
        self.now = T0
        self.state, self.events = start_run("run-1", spec, 1, {}, T0, **extra)

    def _tick(self) -> Any:
        self.now += timedelta(seconds=1)
        return self.now

    def complete(self, task_id: str) -> None:
        """Start the task's current attempt and complete it."""
        attempt = self.state.tasks[task_id].attempts
        self.events += record_started(self.state, task_id, attempt, "w", self._tick())
        self.events += record_completed(self.state, task_id, attempt, {"ok": 1}, 1.0, self._tick())

    def fail(self, task_id: str) -> None:
        """Start the task's current attempt and fail it for good."""
        attempt = self.state.tasks[task_id].attempts
        self.events += record_started(self.state, task_id, attempt, "w", self._tick())
        self.events += record_failed(self.state, task_id, attempt, FATAL, self._tick())

    def skip(self, task_id: str) -> None:
        """Skip the task as an operator."""
        self.events += skip_task(self.state, task_id, self._tick(), by="op", reason="not today")

    def status(self, task_id: str) -> str:
        return self.state.tasks[task_id].status

    def reason(self, task_id: str) -> str:
        skips = [e for e in self.events if isinstance(e, TaskSkipped) and e.task_id == task_id]
        assert len(skips) == 1
        return skips[0].reason

    def replays(self) -> None:
        """The fold of the events is the live state, and the replay check agrees."""
        assert fold(self.events, new_state("run-1")) == self.state
        assert check_run("run-1", self.events).difference is None


# Upstream outcomes: ok (completed), fail (failed for good), skip (skipped by an operator),
# upfail (skipped because its own dependency failed: Airflow's upstream_failed, counts as
# failed), open (still scheduled).
TABLE: list[tuple[str, str, str, str]] = [
    ("all_success", "ok", "ok", "scheduled"),
    ("all_success", "ok", "open", "pending"),
    ("all_success", "ok", "fail", "skipped"),
    ("all_success", "ok", "skip", "skipped"),
    ("all_success", "upfail", "open", "skipped"),
    ("all_failed", "fail", "fail", "scheduled"),
    ("all_failed", "fail", "upfail", "scheduled"),
    ("all_failed", "fail", "open", "pending"),
    ("all_failed", "fail", "ok", "skipped"),
    ("all_failed", "skip", "open", "skipped"),
    ("all_done", "ok", "fail", "scheduled"),
    ("all_done", "skip", "upfail", "scheduled"),
    ("all_done", "fail", "open", "pending"),
    ("one_success", "ok", "open", "scheduled"),
    ("one_success", "fail", "open", "pending"),
    ("one_success", "fail", "skip", "skipped"),
    ("one_success", "upfail", "fail", "skipped"),
    ("one_failed", "fail", "open", "scheduled"),
    ("one_failed", "upfail", "open", "scheduled"),
    ("one_failed", "ok", "open", "pending"),
    ("one_failed", "ok", "skip", "skipped"),
    ("none_failed", "ok", "skip", "scheduled"),
    ("none_failed", "skip", "skip", "scheduled"),
    ("none_failed", "ok", "open", "pending"),
    ("none_failed", "ok", "fail", "skipped"),
    ("none_failed", "upfail", "open", "skipped"),
    ("none_failed_min_one_success", "ok", "skip", "scheduled"),
    ("none_failed_min_one_success", "skip", "skip", "skipped"),
    ("none_failed_min_one_success", "skip", "open", "pending"),
    ("none_failed_min_one_success", "ok", "upfail", "skipped"),
    ("always", "open", "open", "scheduled"),
    ("always", "fail", "fail", "scheduled"),
]


def _two_upstreams(rule: str) -> WorkflowSpec:
    """xa -> a, xb -> b, (a, b) -> c with ``rule``."""
    return workflow(
        task("xa"),
        task("xb"),
        task("a", "xa"),
        task("b", "xb"),
        task("c", "a", "b", trigger=rule),
    )


def _bring(run: Driver, root: str, upstream: str, outcome: str) -> None:
    if outcome == "upfail":
        run.fail(root)
        assert run.status(upstream) == "skipped"
        return
    run.complete(root)
    if outcome == "ok":
        run.complete(upstream)
    elif outcome == "fail":
        run.fail(upstream)
    elif outcome == "skip":
        run.skip(upstream)


def test_every_rule_is_in_the_table() -> None:
    assert {row[0] for row in TABLE} == set(TRIGGER_RULES)


@pytest.mark.parametrize(("rule", "a", "b", "expected"), TABLE)
def test_rule_meaning(rule: str, a: str, b: str, expected: str) -> None:
    run = Driver(_two_upstreams(rule))
    _bring(run, "xa", "a", a)
    _bring(run, "xb", "b", b)
    assert run.status("c") == expected
    if expected == "skipped":
        assert run.reason("c").startswith(
            "upstream task" if rule == "all_success" else f"trigger rule {rule}:"
        )
    run.replays()


def test_a_task_without_dependencies_runs_whatever_its_rule() -> None:
    run = Driver(workflow(*(task(f"t{i}", trigger=r) for i, r in enumerate(TRIGGER_RULES))))
    assert {t.status for t in run.state.tasks.values()} == {"scheduled"}


def test_a_failure_cascades_as_upstream_failed_through_skips() -> None:
    """x fails: a (all_success) is skipped and counts as failed, so the cleanup after it runs,
    the none_failed task is skipped, and the all_success chain names the failed task."""
    run = Driver(
        workflow(
            task("x"),
            task("a", "x"),
            task("b", "a"),
            task("cleanup", "b", trigger="all_done"),
            task("alert", "b", trigger="one_failed"),
            task("tidy", "b", trigger="none_failed"),
        )
    )
    run.fail("x")
    assert run.reason("a") == "upstream task x failed"
    assert run.reason("b") == "upstream task x failed"
    assert run.status("cleanup") == run.status("alert") == "scheduled"
    assert run.reason("tidy") == "trigger rule none_failed: an upstream task failed"
    run.complete("cleanup")
    run.complete("alert")
    assert run.state.status == "failed"
    run.replays()


def test_an_operator_skip_cascades_as_a_skip() -> None:
    """A skipped (not failed) upstream skips all_success tasks, and none_failed runs."""
    run = Driver(
        workflow(
            task("a"),
            task("b", "a"),
            task("c", "b"),
            task("d", "c", trigger="none_failed"),
            task("e", "c", trigger="one_failed"),
        )
    )
    run.skip("a")
    assert run.reason("b") == run.reason("c") == "upstream task a was skipped"
    assert run.status("d") == "scheduled"
    assert run.reason("e") == "trigger rule one_failed: no upstream task failed"
    run.complete("d")
    assert run.state.status == "completed"
    run.replays()


def test_pause_on_failure_holds_the_rules_until_resume_or_retry() -> None:
    """With onTaskFailure pause a failure is not final: nothing downstream is decided until
    resume; a retry that then succeeds lets all_success run and skips all_failed."""
    spec = workflow(
        task("a"),
        task("ok", "a"),
        task("on_fail", "a", trigger="all_failed"),
        onTaskFailure="pause",
    )
    run = Driver(spec)
    run.fail("a")
    assert run.state.status == "paused"
    assert run.status("ok") == run.status("on_fail") == "pending"
    run.events += retry_task(run.state, "a", run._tick(), by="op")
    run.complete("a")
    assert run.status("on_fail") == "skipped"
    assert run.status("ok") == "pending"  # ready, held by the pause
    run.events += resume_run(run.state, run._tick(), by="op")
    assert run.status("ok") == "scheduled"
    run.replays()

    again = Driver(spec)
    again.fail("a")
    again.events += resume_run(again.state, again._tick(), by="op")
    assert again.status("on_fail") == "scheduled"
    assert again.reason("ok") == "upstream task a failed"
    again.replays()


def test_a_manual_pause_holds_what_a_completion_makes_ready() -> None:
    run = Driver(workflow(task("a"), task("b", "a", trigger="one_success")))
    run.events += record_started(run.state, "a", 1, "w", run._tick())
    run.events += pause_run(run.state, run._tick(), by="op")
    run.events += record_completed(run.state, "a", 1, {}, 1.0, run._tick())
    assert run.status("b") == "pending"
    run.events += resume_run(run.state, run._tick(), by="op")
    assert run.status("b") == "scheduled"
    run.replays()


def test_an_unknown_rule_is_a_validation_error_with_its_path() -> None:
    with pytest.raises(ValidationError) as raised:
        workflow(task("a"), task("b", "a", trigger="sometimes"))
    text = str(raised.value)
    assert "$.tasks[1].trigger" in text
    assert "all_success" in text


def _finish(state: RunState, events: list[RunEvent], outcomes: list[bool]) -> None:
    """Drive the run to its end: start what is scheduled, give each running task an outcome
    from ``outcomes`` (True completes), let due retries begin."""
    now = T0 + timedelta(days=1)
    for _ in range(10_000):
        if state.is_terminal:
            return
        now += timedelta(seconds=100)
        moved = False
        for t in list(state.tasks.values()):
            if t.status == "scheduled":
                events += record_started(state, t.id, t.attempts, "w", now)
            elif t.status == "running":
                ok = outcomes.pop() if outcomes else True
                if ok:
                    events += record_completed(state, t.id, t.attempts, {"n": 1}, 1.0, now)
                else:
                    events += record_failed(state, t.id, t.attempts, FATAL, now)
            elif t.status == "waiting_retry":
                events += record_retry_due(state, t.id, t.attempts, now)
            else:
                continue
            moved = True
        assert moved, f"the run is stuck: {[(t.id, t.status) for t in state.tasks.values()]}"
    raise AssertionError("the run did not end")


@settings(max_examples=150, deadline=None)
@given(spec=workflow_specs(max_tasks=8), steps=command_steps, outcomes=st.lists(st.booleans()))
def test_live_decisions_and_the_fold_agree_and_every_run_ends(
    spec: WorkflowSpec, steps: list[tuple[int, int]], outcomes: list[bool]
) -> None:
    run = simulate(spec, steps)
    events = run.events
    _finish(run.state, events, outcomes)
    assert fold(events, new_state("run-1")) == run.state
    assert check_run("run-1", events, interruption_limit=3).difference is None
    if run.state.status != "cancelled":
        for t in run.state.tasks.values():
            assert t.status in ("completed", "failed", "skipped")


@settings(max_examples=100, deadline=None)
@given(spec=workflow_specs(max_tasks=8), outcomes=st.lists(st.booleans(), min_size=1))
def test_a_skip_is_decided_only_when_the_rule_can_no_longer_be_met(
    spec: WorkflowSpec, outcomes: list[bool]
) -> None:
    """Every task the engine skipped has a rule other than always, and an upstream that ended;
    every task that ran had its dependencies' rule met: all_success ones saw all complete."""
    state, events = start_run("run-1", spec, 1, {}, T0)
    _finish(state, events, outcomes)
    for t in spec.tasks:
        final = state.tasks[t.id]
        rule = t.trigger or "all_success"
        ups = [state.tasks[d].status for d in t.dependencies]
        if final.status == "skipped":
            assert rule != "always" and t.dependencies
        elif final.status in ("completed", "failed") and final.attempts:
            if rule == "all_success":
                assert all(s == "completed" for s in ups)
            elif rule == "all_failed":
                assert "completed" not in ups
            elif rule == "one_success":
                assert not t.dependencies or "completed" in ups
            elif rule == "none_failed":
                assert "failed" not in ups


def test_what_a_skip_stands_for_is_fixed_when_it_is_decided() -> None:
    """x is skipped because a was skipped: it counts as skipped, even after its other
    dependency b fails later, so the one_failed task after it sees no failure."""
    run = Driver(
        workflow(
            task("a"),
            task("b"),
            task("z"),
            task("x", "a", "b"),
            task("y", "x", "z", trigger="one_failed"),
        )
    )
    run.events += record_started(run.state, "b", 1, "w", run._tick())
    run.skip("a")
    assert run.reason("x") == "upstream task a was skipped"
    run.events += record_failed(run.state, "b", 1, FATAL, run._tick())
    run.complete("z")
    assert run.reason("y") == "trigger rule one_failed: no upstream task failed"
    run.replays()


@pytest.mark.parametrize("gate", ["fail", "complete"])
def test_a_long_chain_cascades_and_is_read_back_without_recursion(gate: str) -> None:
    """t0 fails and the skip runs down a chain of 3,000 tasks; a fresh fold (as after a
    restart) then works out iteratively that the chain's end counts as failed."""
    length = 3000
    tasks = [task("t0"), *(task(f"t{i}", f"t{i - 1}") for i in range(1, length))]
    tasks += [task("gate"), task("last", f"t{length - 1}", "gate", trigger="all_failed")]
    run = Driver(workflow(*tasks))
    run.events += record_started(run.state, "gate", 1, "w", run._tick())
    run.fail("t0")
    assert run.reason(f"t{length - 1}") == "upstream task t0 failed"
    assert run.status("last") == "pending"
    run.state = fold(run.events, new_state("run-1"))
    if gate == "fail":
        run.events += record_failed(run.state, "gate", 1, FATAL, run._tick())
        assert run.status("last") == "scheduled"
    else:
        run.events += record_completed(run.state, "gate", 1, {}, 1.0, run._tick())
        assert run.reason("last") == "trigger rule all_failed: an upstream task completed"
