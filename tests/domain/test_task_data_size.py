"""The cap on each task's resolved inputs and published output, in JSON bytes."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from flowweaver.domain.data import json_size
from flowweaver.domain.events import TaskCompleted, TaskFailed, TaskScheduled
from flowweaver.domain.run import (
    DEFAULT_MAX_TASK_IO_BYTES,
    fold,
    new_state,
    record_completed,
    record_started,
    settle,
    start_run,
)
from flowweaver.testing.runs import T0, task, workflow


def _size(value: Any) -> int:
    return len(msgspec.json.encode(value))


def test_inputs_over_the_cap_fail_the_task_at_scheduling() -> None:
    """Resolved inputs over the cap: TaskFailed InputTooLarge, nothing huge stored."""
    spec = workflow(
        task("t", inputs={f"x{i}": "$.params.big" for i in range(4)}),
        task("after", "t"),
    )
    big = "x" * 3000
    state, events = start_run("run", spec, 1, {"big": big}, T0, max_io_bytes=10_000)
    scheduled = next(e for e in events if isinstance(e, TaskScheduled) and e.task_id == "t")
    assert scheduled.inputs == {}
    failed = next(e for e in events if isinstance(e, TaskFailed))
    assert failed.error.type == "InputTooLarge"
    assert failed.error.retryable is False
    assert failed.retry_at is None
    assert "task 't'" in failed.error.message
    assert "at least 12" in failed.error.message
    assert "over the limit of 10000 bytes" in failed.error.message
    assert state.task("after").status == "skipped"
    assert state.status == "failed"
    assert sum(_size(e) for e in events) < 20_000


def test_inputs_under_the_cap_are_scheduled() -> None:
    """Inputs at or under the cap are resolved and stored as before."""
    spec = workflow(task("t", inputs={"x": "$.params.big"}))
    state, _ = start_run("run", spec, 1, {"big": "x" * 3000}, T0, max_io_bytes=10_000)
    assert state.task("t").status == "scheduled"
    assert DEFAULT_MAX_TASK_IO_BYTES == 1024 * 1024


def test_settle_applies_the_cap_too() -> None:
    """A ready task scheduled by settle (resuming a run) is capped like any other."""
    spec = workflow(task("t", inputs={"x": "$.params.p"}))
    _, events = start_run("run", spec, 1, {"p": "z" * 600}, T0)
    state = fold(events[:1], new_state("run"))  # RunStarted only: t is ready, not scheduled
    assert state.task("t").status == "pending"
    decided = settle(state, T0, max_io_bytes=100)
    failed = [e for e in decided if isinstance(e, TaskFailed)]
    assert [e.error.type for e in failed] == ["InputTooLarge"]


def test_outputs_over_the_cap_fail_the_attempt_for_good() -> None:
    """A published output over the cap: TaskFailed OutputTooLarge, no retry despite the policy."""
    spec = workflow(
        task("t", retry={"maxAttempts": 3}, outputs={"a": "$.result", "b": "$.result"}),
    )
    state, _ = start_run("run", spec, 1, {}, T0, max_io_bytes=1000)
    record_started(state, "t", 1, "w", T0)
    events = record_completed(state, "t", 1, "y" * 600, 1.0, T0, max_io_bytes=1000)
    assert not any(isinstance(e, TaskCompleted) for e in events)
    failed = next(e for e in events if isinstance(e, TaskFailed))
    assert failed.error.type == "OutputTooLarge"
    assert failed.error.retryable is False
    assert failed.retry_at is None
    assert "task 't'" in failed.error.message and "1000 bytes" in failed.error.message
    assert state.status == "failed"


def test_outputs_under_the_cap_complete() -> None:
    """A result that selects a small output from a large one is within the cap."""
    spec = workflow(task("t", outputs={"n": "$.result.n"}))
    state, _ = start_run("run", spec, 1, {}, T0, max_io_bytes=1000)
    record_started(state, "t", 1, "w", T0)
    record_completed(state, "t", 1, {"n": 1, "big": "y" * 5000}, 1.0, T0, max_io_bytes=1000)
    assert state.task("t").output == {"n": 1}
    assert state.status == "completed"


def test_json_size_is_the_length_of_compact_json() -> None:
    """json_size counts exactly what msgspec writes, escapes and unicode included."""
    values: list[Any] = [
        {},
        [],
        {"a": 1},
        [1, 2.5, None, True, False],
        {"a": [{"b": None, "c": 'x"y\\'}], "d": {"é": "\n\u0001"}, "e": []},
        "plain",
    ]
    for value in values:
        assert json_size(value) == len(msgspec.json.encode(value)), value


def test_json_size_stops_early_on_many_references_to_one_large_value() -> None:
    """A list holding one 1 MB string 100,000 times (100 GB as JSON) is measured at once."""
    big = "x" * 1_000_000
    started = time.perf_counter()
    size = json_size([big] * 100_000, stop_above=1_500_000)
    assert 1_500_000 < size < 2_200_000
    assert time.perf_counter() - started < 0.5
