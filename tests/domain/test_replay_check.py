"""The replay check on histories of the domain commands: the golden logs, simulated runs,
decisions changed in the code, and stored histories edited to hold a decision the code
would not take."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowweaver.domain import data as data_module
from flowweaver.domain import run as run_module
from flowweaver.domain.events import (
    INTERRUPTED,
    RUN_EVENT_NAMES,
    ErrorInfo,
    RunCompleted,
    RunEvent,
    TaskFailed,
    TaskScheduled,
    TaskSkipped,
    TaskStarted,
)
from flowweaver.domain.replay_check import EVENT_KINDS, Difference, check_run
from flowweaver.domain.run import (
    RunState,
    complete_task,
    interrupt_running,
    pause_run,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    request_cancel,
    resume_run,
    retry_task,
    skip_task,
    start_run,
)
from flowweaver.domain.spec import RetryPolicy, WorkflowSpec
from flowweaver.errors import InvalidCommandError, NotFoundError, ValidationError
from flowweaver.store.codec import decode_event
from flowweaver.testing.runs import T0, command_steps, simulate, task, workflow, workflow_specs

GOLDEN = Path(__file__).parent.parent / "golden"
RETRY_RUN = "00000000-0000-4000-8000-00000000a001"
FAIL_RUN = "00000000-0000-4000-8000-00000000a002"


def golden_runs() -> dict[str, list[RunEvent]]:
    """Return every golden run's events, decoded with today's codec, by run id."""
    runs: dict[str, list[RunEvent]] = {}
    for path in sorted(GOLDEN.glob("runs*.jsonl")):
        for row in path.read_bytes().splitlines():
            line = msgspec.json.decode(row)
            event = decode_event(line["stored"].encode(), line["topic"])
            runs.setdefault(line["id"], []).append(event)
    return runs


GOLDEN_RUNS = golden_runs()


def difference(run_id: str, events: list[RunEvent], **options: Any) -> Difference:
    """Check ``events`` and return the difference the check must find."""
    report = check_run(run_id, events, **options)
    assert report.difference is not None, "the check found no difference"
    return report.difference


# --- clean histories check clean --------------------------------------------------------------


@pytest.mark.parametrize("run_id", sorted(GOLDEN_RUNS))
def test_every_golden_run_checks_clean(run_id: str) -> None:
    """Each golden log (every event type, operator actions and a fork) re-derives exactly."""
    report = check_run(run_id, GOLDEN_RUNS[run_id])
    assert report.difference is None, report.difference
    assert report.events == len(GOLDEN_RUNS[run_id])


@given(workflow_specs(), command_steps)
def test_simulated_runs_check_clean(spec: WorkflowSpec, steps: list[tuple[int, int]]) -> None:
    """Any run the simulator drives (failures, retries, crashes, cancels, stale reports)
    checks clean, at its end and at every command's boundary."""
    run = simulate(spec, steps)
    events = run.events
    report = check_run("run-1", events)
    assert report.difference is None, (report.difference, run.commands)
    for count, _state in run.checkpoints:
        assert check_run("run-1", events[:count]).ok


JITTERED = workflow(
    task(
        "a",
        handler="flaky",
        retry={"maxAttempts": 4, "initialDelay": 1.0, "backoffFactor": 2.0, "jitter": 0.5},
    ),
    task("b", "a", handler="echo", inputs={"x": "$.result"}),
)


def jittered_run(samples: list[float]) -> tuple[RunState, list[RunEvent]]:
    """Run JITTERED: ``a`` fails once per sample (jittered by it), then completes."""
    state, events = start_run("run-j", JITTERED, 1, {}, T0)
    now = T0
    for attempt, sample in enumerate(samples, start=1):
        now += timedelta(seconds=1)
        events += record_started(state, "a", attempt, "w", now)
        error = ErrorInfo(type="RuntimeError", message="no", traceback="Traceback ...")
        events += record_failed(state, "a", attempt, error, now, jitter_sample=sample)
        retry_at = state.tasks["a"].retry_at
        if retry_at is not None:
            now = retry_at
            events += record_retry_due(state, "a", attempt, now)
    attempt = state.tasks["a"].attempts
    if state.tasks["a"].status == "scheduled":
        events += record_started(state, "a", attempt, "w", now)
        events += record_completed(state, "a", attempt, 7, 1.0, now)
        events += record_started(state, "b", 1, "w", now)
        events += record_completed(state, "b", 1, {"x": 7}, 1.0, now)
    return state, events


@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=4))
def test_jittered_retry_times_check_clean(samples: list[float]) -> None:
    """Retry times drawn with any jitter sample lie within the policy's bounds."""
    state, events = jittered_run(samples)
    assert state.is_terminal
    assert check_run("run-j", events).ok


# Commands by weight: outcomes most often, then operator actions, crashes and cancels.
OPERATIONS = (
    *["start"] * 8,
    *["complete"] * 6,
    *["fail"] * 3,
    *["retry due"] * 2,
    "pause",
    *["resume"] * 2,
    *["retry"] * 2,
    "skip",
    "complete by hand",
    "crash",
    "cancel",
)
SUITS = {"start": "scheduled", "complete": "running", "fail": "running"}
SUITS |= {"retry due": "waiting_retry", "retry": "waiting_retry"}


def _operate(state: RunState, name: str, arg: int, now: datetime) -> list[RunEvent]:
    """Apply one command to a task chosen by ``arg`` among those the command suits (any
    task when none does)."""
    tasks = [t for t in state.tasks.values() if t.status == SUITS.get(name)]
    tasks = tasks or list(state.tasks.values())
    t = tasks[arg % len(tasks)]
    result: Any = [{"n": arg}, arg, {"result": [arg]}, None][arg % 4]
    error = ErrorInfo(
        type=("ValueError", "Fatal", INTERRUPTED)[arg % 3],
        message=f"boom {arg}",
        retryable=arg % 5 != 0,
        traceback="Traceback ...",
    )
    decide: dict[str, Callable[[], list[RunEvent]]] = {
        "start": lambda: record_started(state, t.id, t.attempts, f"worker-{arg % 3}", now),
        "complete": lambda: record_completed(state, t.id, t.attempts, result, float(arg), now),
        "fail": lambda: record_failed(
            state, t.id, t.attempts, error, now, jitter_sample=(arg % 21) / 10 - 1.0
        ),
        "retry due": lambda: record_retry_due(state, t.id, t.attempts, now),
        "pause": lambda: pause_run(state, now, by="op", reason=f"look {arg}"),
        "resume": lambda: resume_run(state, now, by="op"),
        "retry": lambda: retry_task(state, t.id, now, by="op", reason="again"),
        "skip": lambda: skip_task(state, t.id, now, by="op"),
        "complete by hand": lambda: complete_task(state, t.id, {"by_hand": arg}, now, by="op"),
        "crash": lambda: interrupt_running(state, now),
        "cancel": lambda: request_cancel(state, f"stop {arg}", now, by="op"),
    }
    return decide[name]()


@settings(max_examples=300)
@given(
    workflow_specs(),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 1023)), max_size=80),
)
def test_runs_steered_by_operators_check_clean(
    spec: WorkflowSpec, pause: bool, steps: list[tuple[str, int]]
) -> None:
    """Runs driven by outcomes, crashes and every operator action (pause, resume, retry,
    skip, complete by hand, cancel), pausing on failures or not, check clean."""
    if pause:
        spec = msgspec.structs.replace(spec, on_task_failure="pause")
    state, events = start_run("run-op", spec, 1, {"x": 1}, T0)
    for index, (name, arg) in enumerate(steps):
        if state.is_terminal:
            break
        try:
            events += _operate(state, name, arg, T0 + timedelta(seconds=index + 1))
        except (InvalidCommandError, NotFoundError, ValidationError):
            continue  # refused: nothing decided, nothing stored
    report = check_run("run-op", events)
    assert report.difference is None, report.difference


# --- a deliberately changed decision is found at the first version it changes ---------------


def test_changed_input_resolution_is_found_at_the_first_task_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resolving ``$.data`` differently changes the golden retry run's second task's inputs
    (version 8), and nothing before it."""
    resolve = data_module.resolve_inputs

    def changed(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        resolved = resolve(inputs, context)
        if "data" in resolved:
            resolved["data"] = str(resolved["data"]).upper()
        return resolved

    monkeypatch.setattr(run_module, "resolve_inputs", changed)
    found = difference(RETRY_RUN, GOLDEN_RUNS[RETRY_RUN])
    assert (found.version, found.event_type, found.field) == (8, "TaskScheduled", "inputs")
    assert found.stored == '{"data":"golden","all":{"data":"golden"}}'
    assert found.derived == '{"data":"GOLDEN","all":{"data":"golden"}}'


def test_changed_skip_propagation_is_found_at_the_first_skip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code that no longer skips downstream of a failure derives nothing where the golden
    failed run stored TaskSkipped (version 7)."""
    verdict = run_module.trigger_verdict

    def never_skips(state: RunState, task_id: str, roots: Any = None) -> tuple[str, str]:
        said = verdict(state, task_id, roots)
        return ("wait", "") if said[0] == "skip" else said

    monkeypatch.setattr(run_module, "trigger_verdict", never_skips)
    found = difference(FAIL_RUN, GOLDEN_RUNS[FAIL_RUN])
    assert (found.version, found.event_type, found.field) == (7, "TaskSkipped", None)
    assert found.derived == "nothing"
    assert '"taskId":"after"' in found.stored


def test_changed_summary_is_found_at_the_terminal_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary counted differently is found at RunCompleted (version 11), in its counts."""
    summarize = run_module.summarize

    def changed(state: RunState) -> Any:
        summary = summarize(state)
        return msgspec.structs.replace(summary, counts={**summary.counts, "total": 2})

    monkeypatch.setattr(run_module, "summarize", changed)
    found = difference(RETRY_RUN, GOLDEN_RUNS[RETRY_RUN])
    assert (found.version, found.event_type, found.field) == (11, "RunCompleted", "summary.counts")
    assert found.stored == '{"completed":2}'
    assert found.derived == '{"completed":2,"total":2}'


def test_changed_max_attempts_is_found_at_the_failure_it_no_longer_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retry policy read as one attempt fewer stops the golden retry at version 4."""
    policy_of = WorkflowSpec.retry_policy

    def fewer(self: WorkflowSpec, task_spec: Any) -> RetryPolicy:
        policy = policy_of(self, task_spec)
        return msgspec.structs.replace(policy, max_attempts=policy.max_attempts - 2)

    monkeypatch.setattr(WorkflowSpec, "retry_policy", fewer)
    found = difference(RETRY_RUN, GOLDEN_RUNS[RETRY_RUN])
    assert (found.version, found.event_type, found.field) == (4, "TaskFailed", "retryAt")
    assert found.derived == "no retry"
    assert found.describe().startswith("differs at version 4 (TaskFailed): retryAt: stored ")


def test_a_command_that_raises_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code that fails on a stored fact is a difference at that fact, not a crash."""

    def broken(*args: Any, **kwargs: Any) -> list[RunEvent]:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(run_module, "record_started", broken)
    found = difference(RETRY_RUN, GOLDEN_RUNS[RETRY_RUN])
    assert (found.version, found.event_type) == (3, "TaskStarted")
    assert found.derived == "an error: ZeroDivisionError: division by zero"


# --- an edited history holding a decision the code would not take is caught ----------------


def edited(run_id: str, version: int, **changes: Any) -> list[RunEvent]:
    """Return a golden run with the event at ``version`` changed."""
    events = list(GOLDEN_RUNS[run_id])
    events[version - 1] = msgspec.structs.replace(events[version - 1], **changes)
    return events


def test_edited_inputs_are_caught() -> None:
    """A TaskScheduled whose inputs the code would not resolve is caught, field named."""
    found = difference(RETRY_RUN, edited(RETRY_RUN, 8, inputs={"data": "forged"}))
    assert (found.version, found.event_type, found.field) == (8, "TaskScheduled", "inputs")


def test_a_retry_the_policy_does_not_allow_is_caught() -> None:
    """A failure stored with a retry time where the policy has no retry left is caught."""
    events = GOLDEN_RUNS[FAIL_RUN]
    failed = events[5]
    assert isinstance(failed, TaskFailed)
    forged = edited(FAIL_RUN, 6, retry_at=failed.timestamp + timedelta(seconds=1))
    found = difference(FAIL_RUN, forged)
    assert (found.version, found.event_type, found.field) == (6, "TaskFailed", "retryAt")
    assert found.derived == "no retry"


def test_a_retry_time_outside_the_jitter_bounds_is_caught() -> None:
    """A retry time later than the policy's delay with the largest jitter is caught."""
    _state, events = jittered_run([1.0, -1.0])
    assert check_run("run-j", events).ok
    index, failed = next(
        (i, e) for i, e in enumerate(events) if isinstance(e, TaskFailed) and e.retry_at
    )
    assert failed.retry_at is not None
    forged = list(events)
    forged[index] = msgspec.structs.replace(
        failed, retry_at=failed.retry_at + timedelta(microseconds=1)
    )
    found = difference("run-j", forged)
    assert (found.version, found.field) == (index + 1, "retryAt")
    assert found.derived.startswith("a time from ")


def test_a_retryable_flag_the_policy_forbids_is_caught() -> None:
    """An error type the policy lists as non-retryable stored as retryable is caught."""
    found = difference(
        FAIL_RUN,
        edited(
            FAIL_RUN, 6, error=ErrorInfo(type="ValueError", message="bad value", retryable=True)
        ),
    )
    assert (found.version, found.field) == (6, "error.retryable")
    assert (found.stored, found.derived) == ("true", "false")


def test_a_missing_skip_is_caught() -> None:
    """A failure for good stored without the skip that follows it is caught where the skip
    belongs."""
    events = list(GOLDEN_RUNS[FAIL_RUN])
    del events[6]  # TaskSkipped of "after"
    found = difference(FAIL_RUN, events)
    assert (found.version, found.event_type, found.field) == (7, "TaskCompleted", None)
    assert found.derived.startswith('{"type":"TaskSkipped"')


def test_a_decision_no_fact_explains_is_caught() -> None:
    """A TaskScheduled inserted where nothing made the task ready is caught."""
    events = list(GOLDEN_RUNS[FAIL_RUN])
    events.insert(
        5, TaskScheduled(timestamp=events[4].timestamp, task_id="after", attempt=1, inputs={})
    )
    found = difference(FAIL_RUN, events)
    assert (found.version, found.event_type, found.derived) == (6, "TaskScheduled", "nothing")


def test_a_decision_slipped_into_a_commands_events_is_caught() -> None:
    """An event stored among a command's decisions where the code decides another: the
    field that differs is named."""
    events = list(GOLDEN_RUNS[FAIL_RUN])
    events.insert(
        2, TaskScheduled(timestamp=events[1].timestamp, task_id="after", attempt=1, inputs={})
    )
    found = difference(FAIL_RUN, events)
    assert (found.version, found.event_type, found.field) == (3, "TaskScheduled", "taskId")
    assert (found.stored, found.derived) == ('"after"', '"aside"')


def test_a_start_of_an_attempt_never_scheduled_is_caught() -> None:
    """TaskStarted for a task that is not scheduled: the code decides nothing there."""
    events = list(GOLDEN_RUNS[FAIL_RUN])
    events.insert(
        3, TaskStarted(timestamp=events[3].timestamp, task_id="after", attempt=1, worker="w")
    )
    found = difference(FAIL_RUN, events)
    assert (found.version, found.event_type, found.derived) == (4, "TaskStarted", "nothing")


def test_an_operator_action_the_code_refuses_is_caught() -> None:
    """A skip of a task that is running is refused by the code: caught as a refusal."""
    events = list(GOLDEN_RUNS[FAIL_RUN])[:5]  # both tasks running
    events.append(
        TaskSkipped(timestamp=events[-1].timestamp, task_id="broken", reason="x", by="eve")
    )
    found = difference(FAIL_RUN, events)
    assert (found.version, found.event_type) == (6, "TaskSkipped")
    assert found.derived.startswith("a refusal: run ")
    assert "is running" in found.derived


def test_a_log_that_ends_before_the_terminal_event_is_caught() -> None:
    """A run whose last task completed but that stored no RunCompleted: the code derives it
    past the end of the log."""
    events = GOLDEN_RUNS[RETRY_RUN][:-1]
    found = difference(RETRY_RUN, events)
    assert (found.version, found.event_type) == (11, None)
    assert found.stored == "nothing (the log ends)"
    assert found.derived.startswith('{"type":"RunCompleted"')
    assert "past the end of the log" in found.describe()


def test_a_run_that_does_not_begin_with_its_first_event_is_caught() -> None:
    """A log whose version 1 is not RunStarted or RunForked differs at version 1."""
    found = difference(RETRY_RUN, GOLDEN_RUNS[RETRY_RUN][1:])
    assert (found.version, found.event_type, found.derived) == (1, "TaskScheduled", "nothing")


def test_an_event_after_the_end_is_caught() -> None:
    """Nothing follows a terminal event: a second RunCompleted differs."""
    events = list(GOLDEN_RUNS[RETRY_RUN])
    last = events[-1]
    assert isinstance(last, RunCompleted)
    found = difference(RETRY_RUN, [*events, last])
    assert (found.version, found.event_type, found.derived) == (12, "RunCompleted", "nothing")


def test_long_values_are_cut_to_one_short_line() -> None:
    """A difference shows at most MAX_SHOWN_CHARS of each value."""
    found = difference(RETRY_RUN, edited(RETRY_RUN, 8, inputs={"data": "x" * 5000}))
    assert len(found.stored) <= 240
    assert found.stored.endswith("...")
    assert "\n" not in found.describe()


# --- publication and the data limit -------------------------------------------------------


PUBLISHING = workflow(
    task("a", handler="echo", outputs={"x": "$.result.x"}, retry={"maxAttempts": 2}),
    task("b", "a", handler="echo", inputs={"x": "$.x"}),
)


def published_run(result: Any, **options: Any) -> list[RunEvent]:
    """Run PUBLISHING: ``a`` returns ``result``; ``b``, when scheduled, completes."""
    state, events = start_run("run-p", PUBLISHING, 1, {}, T0, **options)
    events += record_started(state, "a", 1, "w", T0)
    events += record_completed(state, "a", 1, result, 1.0, T0, **options)
    if state.tasks["b"].status == "scheduled":
        events += record_started(state, "b", 1, "w", T0)
        events += record_completed(state, "b", 1, {"x": 1}, 1.0, T0, **options)
    assert state.is_terminal
    return events


def test_an_output_path_that_matched_nothing_checks_clean_and_a_change_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OutputError is decided from a result that is not stored: the stored failure is
    applied and what follows re-derived; code that would complete the task differs there."""
    events = published_run({"y": 1})
    failed = events[3]
    assert isinstance(failed, TaskFailed)
    assert failed.error.type == "OutputError"
    assert check_run("run-p", events).ok
    publish = run_module.record_published

    def lenient(*args: Any, **kwargs: Any) -> list[RunEvent]:
        return publish(*args, **{**kwargs, "failure": None})

    monkeypatch.setattr(run_module, "record_published", lenient)
    found = difference("run-p", events)
    assert (found.version, found.event_type, found.field) == (4, "TaskFailed", None)
    assert found.derived.startswith('{"type":"TaskCompleted"')


def test_a_handler_error_named_like_a_publication_failure_is_the_handlers() -> None:
    """A handler that raises an exception named OutputError is retried by its policy, and
    the check reads it as the handler's failure."""
    state, events = start_run("run-p", PUBLISHING, 1, {}, T0)
    events += record_started(state, "a", 1, "w", T0)
    error = ErrorInfo(type="OutputError", message="the handler's own")
    events += record_failed(state, "a", 1, error, T0)
    assert state.tasks["a"].status == "waiting_retry"
    assert check_run("run-p", events).ok


def test_the_data_limit_is_part_of_the_decisions() -> None:
    """An output of 2,000 bytes completed under a 4 KiB limit checks clean with that limit;
    checked with a 1 KiB limit, the code fails the task there instead."""
    events = published_run({"x": "v" * 2000}, max_io_bytes=4096)
    assert check_run("run-p", events, max_io_bytes=4096).ok
    found = difference("run-p", events, max_io_bytes=1024)
    assert (found.version, found.event_type) == (4, "TaskCompleted")
    assert '"OutputTooLarge"' in found.derived


def test_every_run_event_type_has_its_place_in_the_check() -> None:
    """A new event type must be placed as a fact or a decision before the check is trusted."""
    assert set(EVENT_KINDS) == set(RUN_EVENT_NAMES)
