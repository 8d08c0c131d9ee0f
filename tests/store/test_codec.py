"""The msgspec codec: every event, registration and snapshot survives the round trip."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from flowweaver.domain.events import (
    RUN_EVENT_TYPES,
    ChildRunStarted,
    ErrorInfo,
    Event,
    LogLine,
    MapElementCompleted,
    MapElementFailed,
    MapElementRetried,
    MapElementStarted,
    ParentTask,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunDequeued,
    RunFailed,
    RunForked,
    RunPaused,
    RunQueued,
    RunResumed,
    RunStarted,
    RunSummary,
    SignalReceived,
    TaskCompleted,
    TaskFailed,
    TaskRetried,
    TaskScheduled,
    TaskSkipped,
    TaskStarted,
)
from flowweaver.domain.run import fold, new_state
from flowweaver.domain.workflow import WorkflowRegistered
from flowweaver.ports import RecordedEvent
from flowweaver.store.codec import decode_event, decode_registration, decode_state, encode
from flowweaver.testing.runs import T0, task, workflow

SPEC = workflow(
    task("a", outputs={"d": "$.result"}, retry={"maxAttempts": 3, "nonRetryable": ["KeyError"]}),
    task("b", "a", inputs={"x": "$.d", "lit": [1, {"y": None}]}, timeout=2.5),
    name="Name",
    defaults={"timeout": 9},
)
LATER = T0 + timedelta(seconds=1, microseconds=123456)
SAMPLES: list[Event] = [
    RunStarted(
        timestamp=T0,
        workflow_id="wf",
        workflow_version=2,
        definition=SPEC,
        parameters={"p": [1, 2.5, "s", None, True]},
        idempotency_key="key",
        request_hash="abc",
        submitted_by="me",
    ),
    TaskScheduled(timestamp=T0, task_id="a", attempt=1, inputs={"x": {"deep": [1]}}),
    TaskStarted(timestamp=T0, task_id="a", attempt=1, worker="w-1"),
    TaskFailed(
        timestamp=T0,
        task_id="a",
        attempt=1,
        error=ErrorInfo(type="ValueError", message="ünïcode ✓", retryable=True),
        retry_at=LATER,
    ),
    TaskRetried(timestamp=LATER, task_id="a", attempt=2),
    TaskCompleted(timestamp=LATER, task_id="a", attempt=2, output={"d": [1, 2]}, duration_ms=1.5),
    TaskSkipped(timestamp=LATER, task_id="b", reason="upstream task a failed"),
    SignalReceived(timestamp=LATER, name="approval", payload={"ok": True}, by="alice"),
    RunCancelRequested(timestamp=LATER, reason="stop"),
    RunCancelled(timestamp=LATER, reason="stop"),
    RunCompleted(timestamp=LATER, summary=RunSummary(counts={"completed": 2})),
    RunFailed(timestamp=LATER, summary=RunSummary(counts={"failed": 1}, failed_tasks=("a",))),
    RunForked(
        timestamp=LATER,
        parent_run_id="00000000-0000-4000-8000-000000000001",
        parent_version=7,
        workflow_id="wf",
        workflow_version=2,
        definition=SPEC,
        parameters={"p": 1},
        carried={"a": {"d": [1]}},
        reset=("b",),
        by="alice",
        reason="rerun",
        on_task_failure="pause",
    ),
    RunPaused(timestamp=LATER, by="engine", reason="task a failed for good"),
    RunQueued(timestamp=LATER, priority=4, concurrency_key='"acme"'),
    RunDequeued(timestamp=LATER),
    RunResumed(timestamp=LATER, by="bob"),
    TaskFailed(
        timestamp=T0,
        task_id="a",
        attempt=3,
        error=ErrorInfo(type="E", message="m", retryable=False, traceback="Traceback ...\n"),
        logs=(LogLine(timestamp=T0, level="warning", message="hm", fields={"k": [1]}),),
    ),
    TaskCompleted(timestamp=LATER, task_id="b", attempt=0, output=None, by="op", reason="why"),
    TaskRetried(timestamp=LATER, task_id="a", attempt=4, by="op", reason="now"),
    ChildRunStarted(
        timestamp=LATER,
        task_id="sub",
        attempt=1,
        child_run_id="00000000-0000-4000-8000-000000000002",
        workflow_id="child",
        workflow_version=3,
    ),
    RunStarted(
        timestamp=T0,
        workflow_id="child",
        workflow_version=3,
        definition=SPEC,
        parent=ParentTask(
            run_id="00000000-0000-4000-8000-000000000001", task_id="sub", attempt=1, depth=2
        ),
    ),
    MapElementStarted(timestamp=T0, task_id="m", index=3, attempt=1, worker="w-2"),
    MapElementFailed(
        timestamp=T0,
        task_id="m",
        index=3,
        attempt=1,
        error=ErrorInfo(type="ValueError", message="flaky"),
        retry_at=LATER,
    ),
    MapElementRetried(timestamp=LATER, task_id="m", index=3, attempt=2),
    MapElementCompleted(
        timestamp=LATER, task_id="m", index=3, attempt=2, result={"r": [1]}, duration_ms=0.5
    ),
]


def test_samples_cover_every_event_type() -> None:
    """The samples below include one event of every run event type."""
    assert {type(e) for e in SAMPLES} == set(RUN_EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: Event) -> None:
    """decode_event(encode(e)) equals e, timestamps and nested Structs included."""
    raw = encode(event)
    assert decode_event(raw) == event
    assert msgspec.json.decode(raw)["type"] == type(event).__name__
    assert raw.startswith(b'{"type":')


def test_recorded_event_decodes_lazily_and_once() -> None:
    """RecordedEvent decodes its JSON on first access and keeps the result."""
    recorded = RecordedEvent("run", 1, 7, "TaskStarted", encode(SAMPLES[2]))
    assert recorded.event == SAMPLES[2]
    assert recorded.event is recorded.event
    assert "v1" in repr(recorded)


def test_registration_round_trips() -> None:
    """A workflow registration round-trips with its definition."""
    registered = WorkflowRegistered(timestamp=T0, workflow_id="wf", version=3, definition=SPEC)
    assert decode_registration(encode(registered)) == registered


def test_snapshot_of_a_run_state_round_trips() -> None:
    """A run state with outputs, errors and retry times survives encode and decode_state."""
    state = fold(SAMPLES[:6], new_state("run"))
    assert state.task("a").last_error is not None
    decoded = decode_state(encode(state))
    assert decoded == state
    assert decoded.spec == SPEC
