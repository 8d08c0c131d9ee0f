"""The run's commands and fold: scheduling, retries, interruptions, skips, cancel, settle."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from flowweaver.domain.events import (
    INTERRUPTED,
    ErrorInfo,
    Event,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunFailed,
    RunStarted,
    RunSummary,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskScheduled,
    TaskSkipped,
    TaskStarted,
    event_name,
)
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
    settle,
    start_run,
    summarize,
)
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.testing.runs import T0, task, workflow

ERR = ErrorInfo(type="ValueError", message="bad value")


def at(seconds: float) -> Any:
    return T0 + timedelta(seconds=seconds)


def names(events: list[Any]) -> list[str]:
    return [event_name(e) for e in events]


def started(spec: WorkflowSpec, parameters: dict[str, Any] | None = None) -> RunState:
    state, _ = start_run("run-1", spec, 1, parameters or {}, T0)
    return state


def finish(state: RunState, task_id: str, result: Any = None) -> list[Any]:
    attempt = state.task(task_id).attempts
    events = record_started(state, task_id, attempt, "w1", T0)
    return events + record_completed(state, task_id, attempt, result, 5.0, at(1))


def chain() -> WorkflowSpec:
    return workflow(task("a"), task("b", "a"), task("c", "b"))


def retrying(**retry: Any) -> WorkflowSpec:
    return workflow(task("a", retry=retry))


# --- start ------------------------------------------------------------------------------------


def test_start_records_run_started_then_schedules_every_root() -> None:
    """A run starts with RunStarted (definition pinned), then TaskScheduled per root task."""
    spec = workflow(task("a"), task("b"), task("c", "a", "b"))
    state, events = start_run(
        "run-1", spec, 3, {"p": 1}, T0, idempotency_key="k", request_hash="h", submitted_by="me"
    )
    assert names(events) == ["RunStarted", "TaskScheduled", "TaskScheduled"]
    first = events[0]
    assert isinstance(first, RunStarted)
    assert first.definition is spec
    assert (first.workflow_id, first.workflow_version, first.parameters) == ("wf", 3, {"p": 1})
    scheduled = [e for e in events if isinstance(e, TaskScheduled)]
    assert [e.task_id for e in scheduled] == ["a", "b"]
    assert all(e.attempt == 1 and e.timestamp == T0 for e in scheduled)
    assert state.status == "running"
    assert state.version == 3
    assert (state.idempotency_key, state.request_hash, state.submitted_by) == ("k", "h", "me")
    assert state.created_at == T0
    assert state.task("c").status == "pending"
    assert state.task("a").status == "scheduled"


def test_state_before_any_event_is_pending_version_zero() -> None:
    """A new state has version 0, status pending and no definition."""
    state = new_state("r")
    assert (state.version, state.status, state.tasks) == (0, "pending", {})
    with pytest.raises(RuntimeError):
        _ = state.spec


def test_root_inputs_are_resolved_against_the_parameters() -> None:
    """A root task's inputs are resolved at scheduling time from the run parameters."""
    state = started(workflow(task("a", inputs={"n": "$.params.n", "lit": 1})), {"n": 42})
    assert state.task("a").inputs == {"n": 42, "lit": 1}


def test_root_input_that_matches_nothing_fails_the_task_and_the_run_for_good() -> None:
    """An unresolvable input fails the task (non-retryable InputError) and skips downstream."""
    spec = workflow(
        task("a", inputs={"n": "$.params.missing"}, retry={"maxAttempts": 5}), task("b", "a")
    )
    state, events = start_run("run-1", spec, 1, {}, T0)
    assert names(events) == [
        "RunStarted",
        "TaskScheduled",
        "TaskFailed",
        "TaskSkipped",
        "RunFailed",
    ]
    failed = events[2]
    assert isinstance(failed, TaskFailed)
    assert failed.error.type == "InputError"
    assert not failed.error.retryable
    assert failed.retry_at is None
    assert "missing" in failed.error.message
    assert state.status == "failed"


# --- started and completed ----------------------------------------------------------------------


def test_started_records_the_worker_and_moves_the_task_to_running() -> None:
    """TaskStarted marks the task running with its worker and start time."""
    state = started(chain())
    events = record_started(state, "a", 1, "worker-7", at(2))
    assert names(events) == ["TaskStarted"]
    task_a = state.task("a")
    assert (task_a.status, task_a.worker, task_a.started_at) == ("running", "worker-7", at(2))
    assert state.updated_at == at(2)


@pytest.mark.parametrize(("task_id", "attempt"), [("a", 2), ("a", 0), ("b", 1), ("ghost", 1)])
def test_started_for_a_task_or_attempt_that_is_not_scheduled_records_nothing(
    task_id: str, attempt: int
) -> None:
    """Starting an unscheduled task, an unknown task or another attempt decides nothing."""
    state = started(chain())
    assert record_started(state, task_id, attempt, "w", T0) == []
    assert state.version == 2


def test_started_twice_records_once() -> None:
    """A duplicate start report for the same attempt is ignored."""
    state = started(chain())
    assert len(record_started(state, "a", 1, "w", T0)) == 1
    assert record_started(state, "a", 1, "w", T0) == []


def test_completion_records_output_and_schedules_ready_successors() -> None:
    """TaskCompleted publishes the output and schedules the successors that became ready."""
    state = started(chain())
    events = finish(state, "a", {"x": 1})
    assert names(events) == ["TaskStarted", "TaskCompleted", "TaskScheduled"]
    done = events[1]
    assert isinstance(done, TaskCompleted)
    assert (done.output, done.duration_ms) == ({"result": {"x": 1}}, 5.0)
    assert state.task("a").status == "completed"
    assert state.task("a").completed_at == at(1)
    assert state.task("b").status == "scheduled"
    assert state.task("c").status == "pending"


def test_successor_waits_for_all_of_its_dependencies() -> None:
    """A join task is scheduled only when its last dependency completes."""
    state = started(workflow(task("a"), task("b"), task("j", "a", "b")))
    assert names(finish(state, "a")) == ["TaskStarted", "TaskCompleted"]
    assert names(finish(state, "b")) == ["TaskStarted", "TaskCompleted", "TaskScheduled"]
    assert state.task("j").status == "scheduled"


def test_last_completion_completes_the_run_with_a_summary() -> None:
    """When every task completed the run records RunCompleted with the counts."""
    state = started(chain())
    finish(state, "a")
    finish(state, "b")
    events = finish(state, "c")
    assert names(events) == ["TaskStarted", "TaskCompleted", "RunCompleted"]
    assert isinstance(events[-1], RunCompleted)
    assert events[-1].summary == RunSummary(counts={"completed": 3}, failed_tasks=())
    assert state.status == "completed"
    assert state.is_terminal
    assert state.summary == events[-1].summary


@pytest.mark.parametrize("attempt", [0, 2])
def test_completion_of_a_stale_attempt_is_ignored(attempt: int) -> None:
    """A result for an attempt other than the current one decides nothing."""
    state = started(chain())
    record_started(state, "a", 1, "w", T0)
    assert record_completed(state, "a", attempt, 1, 1.0, T0) == []
    assert state.task("a").status == "running"


def test_completion_without_a_start_is_ignored() -> None:
    """A scheduled task that never reported its start cannot complete."""
    state = started(chain())
    assert record_completed(state, "a", 1, 1, 1.0, T0) == []


def test_completion_reported_twice_records_once() -> None:
    """A duplicate completion report decides nothing the second time."""
    state = started(chain())
    assert len(finish(state, "a")) == 3
    assert record_completed(state, "a", 1, 1, 1.0, T0) == []


def test_output_path_matching_nothing_fails_the_task_for_good() -> None:
    """An output path that matches the result nowhere fails the task with OutputError."""
    spec = workflow(
        task("a", outputs={"d": "$.result.rows"}, retry={"maxAttempts": 3}), task("b", "a")
    )
    state = started(spec)
    events = finish(state, "a", {"no_rows": True})
    assert names(events) == ["TaskStarted", "TaskFailed", "TaskSkipped", "RunFailed"]
    failed = events[1]
    assert isinstance(failed, TaskFailed)
    assert (failed.error.type, failed.error.retryable, failed.retry_at) == (
        "OutputError",
        False,
        None,
    )


def test_duration_is_rounded_to_microseconds() -> None:
    """The recorded duration keeps three decimals of milliseconds."""
    state = started(chain())
    record_started(state, "a", 1, "w", T0)
    events = record_completed(state, "a", 1, None, 1.23456789, T0)
    assert isinstance(events[0], TaskCompleted)
    assert events[0].duration_ms == 1.235


# --- failures and retries -----------------------------------------------------------------------


def fail_attempt(
    state: RunState, task_id: str, error: ErrorInfo = ERR, now: Any = T0, jitter: float = 0.0
) -> list[Any]:
    """Start the current attempt and fail it; return only the failure's events."""
    attempt = state.task(task_id).attempts
    record_started(state, task_id, attempt, "w", now)
    return record_failed(state, task_id, attempt, error, now, jitter_sample=jitter)


def start_and_fail(state: RunState, task_id: str, now: Any = T0) -> list[Any]:
    """Start the current attempt and fail it; return every event decided."""
    attempt = state.task(task_id).attempts
    events = record_started(state, task_id, attempt, "w", now)
    return events + record_failed(state, task_id, attempt, ERR, now)


def test_failure_with_attempts_left_waits_for_a_retry_at_the_initial_delay() -> None:
    """The first failure of a task with attempts left sets retry_at = now + initialDelay."""
    state = started(retrying(maxAttempts=3, initialDelay=2.0))
    events = fail_attempt(state, "a", now=at(10))
    assert names(events) == ["TaskFailed"]
    failed = events[0]
    assert isinstance(failed, TaskFailed)
    assert (failed.attempt, failed.error, failed.retry_at) == (1, ERR, at(12))
    task_a = state.task("a")
    assert (task_a.status, task_a.retry_at, task_a.last_error) == ("waiting_retry", at(12), ERR)
    assert state.status == "running"


def test_retry_due_begins_the_next_attempt() -> None:
    """TaskRetried starts attempt n + 1 and returns the task to scheduled."""
    state = started(retrying(maxAttempts=3, initialDelay=2.0))
    fail_attempt(state, "a")
    events = record_retry_due(state, "a", 1, at(2))
    assert names(events) == ["TaskRetried"]
    assert isinstance(events[0], TaskRetried)
    assert events[0].attempt == 2
    task_a = state.task("a")
    assert (task_a.status, task_a.attempts, task_a.retry_at) == ("scheduled", 2, None)
    assert task_a.inputs == {}


@pytest.mark.parametrize("attempt", [0, 2])
def test_retry_due_for_another_attempt_is_ignored(attempt: int) -> None:
    """A timer for an attempt that is not the one waiting decides nothing."""
    state = started(retrying(maxAttempts=3))
    fail_attempt(state, "a")
    assert record_retry_due(state, "a", attempt, T0) == []


def test_retry_due_for_a_task_not_waiting_is_ignored() -> None:
    """A retry timer for a running or unknown task decides nothing."""
    state = started(retrying(maxAttempts=3))
    assert record_retry_due(state, "a", 1, T0) == []
    assert record_retry_due(state, "ghost", 1, T0) == []


def test_backoff_multiplies_the_delay_and_stops_at_max_delay() -> None:
    """Delays grow by backoffFactor per attempt and never exceed maxDelay."""
    state = started(retrying(maxAttempts=6, initialDelay=1.0, backoffFactor=3.0, maxDelay=10.0))
    delays = []
    for attempt in range(1, 6):
        now = at(100 * attempt)
        [failed] = fail_attempt(state, "a", now=now)
        assert isinstance(failed, TaskFailed)
        assert failed.retry_at is not None
        delays.append((failed.retry_at - now).total_seconds())
        record_retry_due(state, "a", attempt, now)
    assert delays == [1.0, 3.0, 9.0, 10.0, 10.0]


def test_jitter_sample_scales_the_delay() -> None:
    """The jitter sample in [-1, 1] moves the delay by up to jitter times itself."""
    state = started(retrying(maxAttempts=3, initialDelay=10.0, maxDelay=100.0, jitter=0.2))
    [failed] = fail_attempt(state, "a", jitter=-1.0)
    assert isinstance(failed, TaskFailed)
    assert failed.retry_at == at(8)


def test_last_attempt_failing_fails_the_task_for_good() -> None:
    """When maxAttempts are used up the failure has no retry_at and the run fails."""
    state = started(retrying(maxAttempts=2, initialDelay=0))
    fail_attempt(state, "a")
    record_retry_due(state, "a", 1, T0)
    events = fail_attempt(state, "a")
    assert names(events) == ["TaskFailed", "RunFailed"]
    assert isinstance(events[0], TaskFailed)
    assert events[0].retry_at is None
    assert state.task("a").status == "failed"
    assert state.task("a").attempts == 2


def test_non_retryable_error_type_fails_at_once() -> None:
    """An error type listed in nonRetryable fails the task with attempts left."""
    state = started(retrying(maxAttempts=5, nonRetryable=["KeyError"]))
    events = fail_attempt(state, "a", ErrorInfo(type="KeyError", message="k"))
    assert names(events) == ["TaskFailed", "RunFailed"]


def test_non_retryable_error_type_is_recorded_as_not_retryable() -> None:
    """A failure of a nonRetryable type is stored with retryable false and no retry_at."""
    state = started(retrying(maxAttempts=5, nonRetryable=["KeyError"]))
    [failed, _] = fail_attempt(state, "a", ErrorInfo(type="KeyError", message="k"))
    assert isinstance(failed, TaskFailed)
    assert failed.error == ErrorInfo(type="KeyError", message="k", retryable=False)
    assert failed.retry_at is None
    assert state.task("a").last_error == failed.error


def test_other_error_types_stay_retryable_under_a_non_retryable_list() -> None:
    """Only the listed types are marked not retryable; others keep retryable true."""
    state = started(retrying(maxAttempts=5, nonRetryable=["KeyError"]))
    [failed] = fail_attempt(state, "a", ErrorInfo(type="ValueError", message="v"))
    assert isinstance(failed, TaskFailed)
    assert failed.error.retryable is True
    assert failed.retry_at is not None


def test_error_marked_not_retryable_fails_at_once() -> None:
    """An error whose ``retryable`` is false is not retried whatever the policy."""
    state = started(retrying(maxAttempts=5))
    events = fail_attempt(state, "a", ErrorInfo(type="X", message="x", retryable=False))
    assert names(events) == ["TaskFailed", "RunFailed"]


def test_workflow_default_retry_policy_applies_to_tasks_without_their_own() -> None:
    """A task without a retry policy uses the workflow's default."""
    spec = workflow(task("a"), defaults={"retry": {"maxAttempts": 2, "initialDelay": 4}})
    state = started(spec)
    [failed] = fail_attempt(state, "a")
    assert isinstance(failed, TaskFailed)
    assert failed.retry_at == at(4)


def test_a_scheduled_task_can_fail_before_it_starts() -> None:
    """A failure reported for a scheduled attempt (never started) is recorded."""
    state = started(retrying(maxAttempts=2))
    events = record_failed(state, "a", 1, ERR, T0)
    assert names(events) == ["TaskFailed"]


@pytest.mark.parametrize(("task_id", "attempt"), [("a", 2), ("ghost", 1)])
def test_failure_of_a_stale_attempt_or_unknown_task_is_ignored(task_id: str, attempt: int) -> None:
    """A failure for another attempt or an unknown task decides nothing."""
    state = started(retrying(maxAttempts=2))
    assert record_failed(state, task_id, attempt, ERR, T0) == []


# --- interruptions ------------------------------------------------------------------------------


INTERRUPTED_ERR = ErrorInfo(type=INTERRUPTED, message="process died")


def test_interrupted_attempt_retries_at_once_without_using_up_max_attempts() -> None:
    """An interruption retries immediately and does not count against maxAttempts."""
    state = started(retrying(maxAttempts=1))
    events = fail_attempt(state, "a", INTERRUPTED_ERR, now=at(3))
    assert isinstance(events[0], TaskFailed)
    assert events[0].retry_at == at(3)
    assert state.task("a").interruptions == 1
    record_retry_due(state, "a", 1, at(3))
    # maxAttempts=1, but the interrupted attempt did not count: this failure is the first.
    events = fail_attempt(state, "a", ERR)
    assert names(events) == ["TaskFailed", "RunFailed"]
    assert state.task("a").attempts == 2


def test_interruptions_then_real_failures_count_only_the_real_ones() -> None:
    """With maxAttempts 2, one interruption leaves room for two real attempts."""
    state = started(retrying(maxAttempts=2, initialDelay=1.0))
    fail_attempt(state, "a", INTERRUPTED_ERR)
    record_retry_due(state, "a", 1, T0)
    [failed] = fail_attempt(state, "a", ERR, now=at(10))
    assert isinstance(failed, TaskFailed)
    assert failed.retry_at == at(11)
    record_retry_due(state, "a", 2, at(11))
    assert names(fail_attempt(state, "a", ERR)) == ["TaskFailed", "RunFailed"]


def test_task_interrupted_up_to_the_limit_fails_for_good() -> None:
    """The interruption at the limit fails the task, non-retryable, naming the limit."""
    state = started(retrying(maxAttempts=10))
    for attempt in (1, 2):
        record_started(state, "a", attempt, "w", T0)
        assert names(record_failed(state, "a", attempt, INTERRUPTED_ERR, T0)) == ["TaskFailed"]
        record_retry_due(state, "a", attempt, T0)
    record_started(state, "a", 3, "w", T0)
    events = record_failed(state, "a", 3, INTERRUPTED_ERR, T0)
    assert names(events) == ["TaskFailed", "RunFailed"]
    failed = events[0]
    assert isinstance(failed, TaskFailed)
    assert failed.retry_at is None
    assert failed.error.type == INTERRUPTED
    assert not failed.error.retryable
    assert "3 times" in failed.error.message
    assert state.task("a").interruptions == 3


def test_interruption_limit_is_configurable() -> None:
    """With a limit of 1 the first interruption fails the task."""
    state = started(retrying(maxAttempts=10))
    record_started(state, "a", 1, "w", T0)
    events = record_failed(state, "a", 1, INTERRUPTED_ERR, T0, interruption_limit=1)
    assert names(events) == ["TaskFailed", "RunFailed"]


def test_interrupt_running_fails_every_running_attempt_not_still_alive() -> None:
    """Recovery records Interrupted for running attempts, except those still running."""
    state = started(workflow(task("a"), task("b"), task("c")))
    record_started(state, "a", 1, "w", T0)
    record_started(state, "b", 1, "w", T0)
    events = interrupt_running(state, at(5), still_running=[("b", 1)])
    assert names(events) == ["TaskFailed"]
    failed = events[0]
    assert isinstance(failed, TaskFailed)
    assert (failed.task_id, failed.error.type, failed.retry_at) == ("a", INTERRUPTED, at(5))
    assert state.task("b").status == "running"
    assert state.task("c").status == "scheduled"
    assert interrupt_running(state, at(5), still_running=[("b", 1)]) == []


# --- skipping and terminal summaries ------------------------------------------------------------


def test_failure_skips_downstream_while_independent_branches_continue() -> None:
    """Downstream of a task failed for good is skipped; an independent branch still runs."""
    #  a -> b -> c      x -> y
    spec = workflow(task("a"), task("b", "a"), task("c", "b"), task("x"), task("y", "x"))
    state = started(spec)
    events = start_and_fail(state, "a")
    assert names(events) == ["TaskStarted", "TaskFailed", "TaskSkipped", "TaskSkipped"]
    skipped = [e for e in events if isinstance(e, TaskSkipped)]
    assert [e.task_id for e in skipped] == ["b", "c"]
    assert all("upstream task a failed" in e.reason for e in skipped)
    assert state.status == "running"
    assert names(finish(state, "x")) == ["TaskStarted", "TaskCompleted", "TaskScheduled"]
    events = finish(state, "y")
    assert names(events) == ["TaskStarted", "TaskCompleted", "RunFailed"]
    failed = events[-1]
    assert isinstance(failed, RunFailed)
    assert failed.summary == RunSummary(
        counts={"failed": 1, "skipped": 2, "completed": 2}, failed_tasks=("a",)
    )
    assert state.status == "failed"


def test_join_below_a_failed_branch_is_skipped_even_if_its_other_branch_completes() -> None:
    """A task with one failed dependency is skipped; it never runs."""
    state = started(workflow(task("a"), task("b"), task("j", "a", "b")))
    fail_attempt(state, "a")
    assert state.task("j").status == "skipped"
    events = finish(state, "b")
    assert names(events) == ["TaskStarted", "TaskCompleted", "RunFailed"]


def test_run_fails_only_after_running_siblings_finish() -> None:
    """A run with a failed task stays running while another task still runs."""
    state = started(workflow(task("a"), task("b")))
    record_started(state, "b", 1, "w", T0)
    fail_attempt(state, "a")
    assert state.status == "running"
    events = record_completed(state, "b", 1, None, 1.0, T0)
    assert names(events) == ["TaskCompleted", "RunFailed"]


def test_summarize_counts_tasks_by_status() -> None:
    """summarize counts each status and lists failed tasks in declaration order."""
    state = started(workflow(task("a"), task("b"), task("c", "a")))
    assert summarize(state) == RunSummary(counts={"scheduled": 2, "pending": 1})


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_with_nothing_running_cancels_the_run_at_once() -> None:
    """Cancel with no running attempt records RunCancelRequested then RunCancelled."""
    state = started(chain())
    events = request_cancel(state, "user asked", at(3))
    assert names(events) == ["RunCancelRequested", "RunCancelled"]
    assert isinstance(events[0], RunCancelRequested)
    assert isinstance(events[1], RunCancelled)
    assert events[1].reason == "user asked"
    assert state.status == "cancelled"
    assert {t.status for t in state.tasks.values()} == {"cancelled"}
    assert state.task("c").completed_at == at(3)


def test_cancel_waits_for_running_attempts_and_cancels_pending_ones() -> None:
    """Cancel cancels pending, scheduled and waiting tasks; RunCancelled waits for running ones."""
    spec = workflow(task("a"), task("b", retry={"maxAttempts": 3}), task("c"), task("d", "a"))
    state = started(spec)
    record_started(state, "a", 1, "w", T0)
    fail_attempt(state, "b")
    events = request_cancel(state, "stop", T0)
    assert names(events) == ["RunCancelRequested"]
    statuses = {t.id: t.status for t in state.tasks.values()}
    assert statuses == {"a": "running", "b": "cancelled", "c": "cancelled", "d": "cancelled"}
    assert state.status == "running"
    assert state.cancel_requested
    assert state.cancel_reason == "stop"
    assert record_started(state, "c", 1, "w", T0) == []
    assert record_retry_due(state, "b", 1, T0) == []
    # The running attempt finishes: nothing downstream is scheduled and the run is cancelled.
    events = record_completed(state, "a", 1, "out", 1.0, at(4))
    assert names(events) == ["TaskCompleted", "RunCancelled"]
    assert state.status == "cancelled"
    assert state.task("a").status == "completed"
    assert state.task("d").status == "cancelled"


def test_failure_after_cancel_is_not_retried_and_cancels_the_run() -> None:
    """A running attempt that fails after a cancel request is not retried."""
    state = started(retrying(maxAttempts=5))
    record_started(state, "a", 1, "w", T0)
    request_cancel(state, "", T0)
    events = record_failed(state, "a", 1, ERR, T0)
    assert names(events) == ["TaskFailed", "RunCancelled"]
    assert isinstance(events[0], TaskFailed)
    assert events[0].retry_at is None


def test_cancel_twice_or_after_the_end_records_nothing() -> None:
    """A second cancel, or a cancel of a finished run, decides nothing."""
    state = started(workflow(task("a"), task("b")))
    record_started(state, "a", 1, "w", T0)
    assert len(request_cancel(state, "", T0)) == 1
    assert request_cancel(state, "", T0) == []
    done = started(workflow(task("a")))
    finish(done, "a")
    assert done.status == "completed"
    assert request_cancel(done, "", T0) == []


# --- settle -------------------------------------------------------------------------------------


def test_settle_schedules_what_a_crash_left_unscheduled() -> None:
    """A run whose log ends after a completion gets its ready successors scheduled."""
    spec = chain()
    events: list[Event] = list(start_run("run-1", spec, 1, {}, T0)[1])
    events += [
        TaskStarted(timestamp=T0, task_id="a", attempt=1, worker="w"),
        TaskCompleted(timestamp=T0, task_id="a", attempt=1, output={"result": 1}),
    ]
    state = fold(events, new_state("run-1"))
    decided = settle(state, at(9))
    assert names(decided) == ["TaskScheduled"]
    assert isinstance(decided[0], TaskScheduled)
    assert (decided[0].task_id, decided[0].timestamp) == ("b", at(9))
    assert settle(state, at(9)) == []


def test_settle_ends_a_run_whose_tasks_all_ended() -> None:
    """A log that ends with every task completed but no terminal event gets RunCompleted."""
    spec = workflow(task("a"))
    events: list[Event] = [
        *start_run("run-1", spec, 1, {}, T0)[1],
        TaskStarted(timestamp=T0, task_id="a", attempt=1, worker="w"),
        TaskCompleted(timestamp=T0, task_id="a", attempt=1),
    ]
    state = fold(events, new_state("run-1"))
    assert names(settle(state, T0)) == ["RunCompleted"]


def test_settle_finishes_a_cancel_once_nothing_runs() -> None:
    """A cancel-requested run with nothing running settles to RunCancelled."""
    spec = workflow(task("a"))
    events: list[Event] = [
        *start_run("run-1", spec, 1, {}, T0)[1],
        RunCancelRequested(timestamp=T0, reason="r"),
    ]
    state = fold(events, new_state("run-1"))
    assert names(settle(state, T0)) == ["RunCancelled"]


def test_settle_does_nothing_for_terminal_or_unstarted_runs() -> None:
    """settle decides nothing for a finished run or one without RunStarted."""
    done = started(workflow(task("a")))
    finish(done, "a")
    assert settle(done, T0) == []
    assert settle(new_state("r"), T0) == []


# --- the fold -----------------------------------------------------------------------------------


def test_fold_of_decided_events_reproduces_the_live_state() -> None:
    """Folding the events the commands returned gives back the state they built."""
    spec = workflow(task("a", retry={"maxAttempts": 2, "initialDelay": 1}), task("b", "a"))
    state, events = start_run("run-1", spec, 1, {"p": 1}, T0)
    events += start_and_fail(state, "a", now=at(1))
    events += record_retry_due(state, "a", 1, at(2))
    events += finish(state, "a", [1])
    events += finish(state, "b", {"k": "v"})
    assert state.status == "completed"
    assert state.version == len(events)
    assert fold(events, new_state("run-1")) == state


def test_timestamps_track_the_latest_event() -> None:
    """updated_at is the timestamp of the last event folded; created_at of RunStarted."""
    state = started(chain())
    record_started(state, "a", 1, "w", at(7))
    assert (state.created_at, state.updated_at) == (T0, at(7))
