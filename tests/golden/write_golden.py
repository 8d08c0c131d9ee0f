"""Write the golden logs of tests/golden/ that do not exist yet; never rewrite one.

    .venv/bin/python tests/golden/write_golden.py

Each scenario below is decided with the domain commands at fixed times and ids, stored in a
real SQLite store, and written as the store keeps it: per record its aggregate id, version,
topic and the exact stored JSON. A file that exists is left alone (and named on stderr): the
golden logs are what an old database holds, so they must not follow the code. To cover a new
event type or schema version, add a scenario under a new file name; see README.md.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from flowweaver.domain.concurrency import dequeue_run, queue_run
from flowweaver.domain.events import ErrorInfo, LogLine, ParentTask, RunEvent, RunStarted
from flowweaver.domain.ids import SCHEDULES_AGGREGATE, TOKENS_AGGREGATE, workflow_aggregate_id
from flowweaver.domain.run import (
    RunState,
    complete_task,
    fork_run,
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
from flowweaver.domain.schedule import (
    AnyScheduleEvent,
    Schedules,
    ScheduleSpec,
    apply_schedule_event,
    decide_fires,
    delete_schedule,
    pause_schedule,
    put_schedule,
    resume_schedule,
    trigger_schedule,
)
from flowweaver.domain.signals import receive_signal, record_wait_expired
from flowweaver.domain.spec import WorkflowSpec, workflow_from_builtins
from flowweaver.domain.subworkflow import child_key, record_child_started
from flowweaver.domain.tokens import AnyTokenEvent, TokenCreated, TokenRevoked
from flowweaver.ports import Append
from flowweaver.store.codec import snapshot_originator
from flowweaver.store.sqlite import SQLiteEventStore

HERE = Path(__file__).parent
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

RETRY_RUN = "00000000-0000-4000-8000-00000000a001"
FAIL_RUN = "00000000-0000-4000-8000-00000000a002"
CANCEL_RUN = "00000000-0000-4000-8000-00000000a003"
OPERATED_RUN = "00000000-0000-4000-8000-00000000a004"
FORKED_RUN = "00000000-0000-4000-8000-00000000a005"
CANCELLED_BY_RUN = "00000000-0000-4000-8000-00000000a006"
CHAINED_RUN = "00000000-0000-4000-8000-00000000a007"
TRIGGER_RUN = "00000000-0000-4000-8000-00000000a008"
QUEUED_RUN = "00000000-0000-4000-8000-00000000a009"
QUEUE_CANCELLED_RUN = "00000000-0000-4000-8000-00000000a00a"
SIGNAL_RUN = "00000000-0000-4000-8000-00000000c001"
SUB_PARENT_RUN = "00000000-0000-4000-8000-00000000c101"
SUB_CHILD_RUN = "00000000-0000-4000-8000-00000000c102"
MAP_RUN = "00000000-0000-4000-8000-00000000b004"
TRACED_RUN = "00000000-0000-4000-8000-000000014a01"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

RETRY_WORKFLOW: dict[str, Any] = {
    "id": "golden-retry",
    "name": "Retry then complete",
    "defaults": {"timeout": 30},
    "tasks": [
        {
            "id": "fetch",
            "handler": "fail",
            "inputs": {"times": 1, "source": "$.params.source"},
            "outputs": {"data": "$.inputs.source"},
            "retry": {"maxAttempts": 3, "initialDelay": 0.5, "backoffFactor": 2.0, "jitter": 0},
        },
        {
            "id": "process",
            "handler": "echo",
            "dependencies": ["fetch"],
            "inputs": {"data": "$.data", "all": "$.tasks.fetch"},
            "timeout": 2.5,
        },
    ],
}
FAIL_WORKFLOW: dict[str, Any] = {
    "id": "golden-fail",
    "description": "A failure for good skips what depends on it",
    "tasks": [
        {"id": "broken", "handler": "fail", "retry": {"nonRetryable": ["ValueError"]}},
        {"id": "after", "handler": "noop", "dependencies": ["broken"]},
        {"id": "aside", "handler": "noop"},
    ],
}
CANCEL_WORKFLOW: dict[str, Any] = {
    "id": "golden-cancel",
    "tasks": [
        {"id": "slow", "handler": "sleep", "inputs": {"seconds": 60}},
        {"id": "next", "handler": "noop", "dependencies": ["slow"]},
    ],
}


OPERATED_WORKFLOW: dict[str, Any] = {
    "id": "golden-operated",
    "onTaskFailure": "pause",
    "tasks": [
        {"id": "flaky", "handler": "fail", "retry": {"maxAttempts": 1}},
        {
            "id": "after",
            "handler": "echo",
            "dependencies": ["flaky"],
            "inputs": {"x": "$.result.x"},
        },
        {"id": "optional", "handler": "noop"},
        {"id": "manual", "handler": "noop", "dependencies": ["optional"]},
    ],
}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "handlers.py", line 12, in flaky\n'
    '    raise RuntimeError("upstream down")\n'
    "RuntimeError: upstream down\n"
)


def at(seconds: float) -> datetime:
    """Return the scenario time ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def spec(document: dict[str, Any]) -> WorkflowSpec:
    """Validate a workflow document."""
    return workflow_from_builtins(document)


def retry_run() -> tuple[RunState, list[RunEvent]]:
    """A run that completes after one retry: TaskFailed with retryAt, then TaskRetried."""
    state, events = start_run(
        RETRY_RUN,
        spec(RETRY_WORKFLOW),
        1,
        {"source": "golden"},
        at(0),
        idempotency_key="golden-key",
        request_hash="4f1c0de5",
        submitted_by="anonymous",
    )
    events += record_started(state, "fetch", 1, "worker-1", at(0.01))
    error = ErrorInfo(type="RuntimeError", message="fail: attempt 1 of 1", retryable=True)
    events += record_failed(state, "fetch", 1, error, at(0.02))
    events += record_retry_due(state, "fetch", 1, at(0.52))
    events += record_started(state, "fetch", 2, "worker-2", at(0.53))
    events += record_completed(state, "fetch", 2, {"ok": True}, 1.25, at(0.54))
    events += record_started(state, "process", 1, "worker-1", at(0.55))
    events += record_completed(state, "process", 1, {"data": "golden"}, 0.5, at(0.56))
    return state, events


def fail_run() -> tuple[RunState, list[RunEvent]]:
    """A run that fails: TaskFailed without retryAt, TaskSkipped downstream, RunFailed."""
    state, events = start_run(FAIL_RUN, spec(FAIL_WORKFLOW), 1, {}, at(10))
    events += record_started(state, "broken", 1, "worker-1", at(10.01))
    events += record_started(state, "aside", 1, "worker-2", at(10.01))
    error = ErrorInfo(type="ValueError", message="bad value", retryable=False)
    events += record_failed(state, "broken", 1, error, at(10.02))
    events += record_completed(state, "aside", 1, {}, 0.1, at(10.03))
    return state, events


def traced_run() -> tuple[RunState, list[RunEvent]]:
    """A run started under a W3C traceparent (issue 14): RunStarted with ``traceparent``."""
    state, events = start_run(
        TRACED_RUN, spec(FAIL_WORKFLOW), 1, {}, at(70), traceparent=TRACEPARENT
    )
    events += record_started(state, "broken", 1, "worker-1", at(70.01))
    events += record_started(state, "aside", 1, "worker-2", at(70.01))
    error = ErrorInfo(type="ValueError", message="bad value", retryable=False)
    events += record_failed(state, "broken", 1, error, at(70.02))
    events += record_completed(state, "aside", 1, {}, 0.1, at(70.03))
    return state, events


def cancel_run() -> tuple[RunState, list[RunEvent]]:
    """A run cancelled while a task runs: RunCancelRequested, the late outcome, RunCancelled."""
    state, events = start_run(CANCEL_RUN, spec(CANCEL_WORKFLOW), 1, {"why": "golden"}, at(20))
    events += record_started(state, "slow", 1, "worker-1", at(20.01))
    events += request_cancel(state, "operator asked", at(21))
    events += record_completed(state, "slow", 1, {"slept": 0.99}, 990.0, at(21.01))
    return state, events


def chained_run() -> tuple[RunState, list[list[RunEvent]]]:
    """A run that completes, decided in three steps so its events are stored in three appends
    (each event with its hash, chained across the appends)."""
    state, first = start_run(CHAINED_RUN, spec(CANCEL_WORKFLOW), 1, {"why": "chained"}, at(30))
    first += record_started(state, "slow", 1, "worker-1", at(30.01))
    second = record_completed(state, "slow", 1, {"slept": 0.5}, 500.0, at(30.51))
    third = record_started(state, "next", 1, "worker-2", at(30.52))
    third += record_completed(state, "next", 1, {}, 1.0, at(30.53))
    return state, [first, second, third]


def operated_run() -> tuple[RunState, list[RunEvent]]:
    """A run an operator steers: a failure with traceback and logs pauses it (onTaskFailure
    pause), an operator retries the task, pauses, resumes, skips one task and completes
    another by hand."""
    state, events = start_run(
        OPERATED_RUN, spec(OPERATED_WORKFLOW), 1, {}, at(30), submitted_by="alice"
    )
    events += record_started(state, "flaky", 1, "worker-1", at(30.01))
    events += record_started(state, "optional", 1, "worker-2", at(30.01))
    logs = [
        LogLine(timestamp=at(30.015), level="info", message="calling upstream", fields={"n": 1}),
        LogLine(timestamp=at(30.016), level="error", message="upstream down"),
    ]
    error = ErrorInfo(type="RuntimeError", message="upstream down", traceback=TRACEBACK)
    events += record_failed(state, "flaky", 1, error, at(30.02), logs=logs)
    events += retry_task(state, "flaky", at(31), by="alice", reason="upstream is back")
    events += record_started(state, "flaky", 2, "worker-1", at(31.01))
    done = [LogLine(timestamp=at(31.015), level="info", message="ok", fields={})]
    events += record_completed(state, "flaky", 2, {"x": 1}, 4.5, at(31.02), logs=done)
    events += resume_run(state, at(32), by="alice", reason="carry on")
    events += pause_run(state, at(32.5), by="bob", reason="look first")
    events += skip_task(state, "manual", at(33), by="bob", reason="not needed today")
    events += resume_run(state, at(34), by="bob")
    events += record_completed(state, "optional", 1, {}, 1.0, at(34.01))
    events += record_started(state, "after", 1, "worker-2", at(34.02))
    events += record_completed(state, "after", 1, {"x": 1}, 1.0, at(34.03))
    return state, events


def forked_run(parent: RunState) -> tuple[RunState, list[RunEvent]]:
    """A fork of the failed golden run: ``broken`` is reset, ``aside`` is carried with an
    overridden output, then ``broken`` is completed by hand."""
    state, events = fork_run(
        FORKED_RUN,
        parent,
        at(40),
        reset=["broken"],
        outputs={"aside": {"result": "overridden"}},
        parameters={"try": 2},
        by="carol",
        reason="rerun after the fix",
    )
    events += complete_task(state, "broken", {"result": "by hand"}, at(41), by="carol")
    events += record_started(state, "after", 1, "worker-1", at(41.01))
    events += record_completed(state, "after", 1, {}, 0.2, at(41.02))
    return state, events


TRIGGER_WORKFLOW: dict[str, Any] = {
    "id": "golden-trigger",
    "name": "Trigger rules",
    "tasks": [
        {"id": "extract", "handler": "fail"},
        {"id": "load", "handler": "noop", "dependencies": ["extract"]},
        {"id": "cleanup", "handler": "noop", "dependencies": ["load"], "trigger": "all_done"},
        {"id": "alert", "handler": "noop", "dependencies": ["extract"], "trigger": "one_failed"},
        {"id": "report", "handler": "noop", "dependencies": ["load"], "trigger": "none_failed"},
        {
            "id": "join",
            "handler": "noop",
            "dependencies": ["alert", "load"],
            "trigger": "one_success",
        },
    ],
}


def trigger_run() -> tuple[RunState, list[RunEvent]]:
    """A run with trigger rules (issue 13): extract fails for good, so load is skipped (it
    counts as failed), report (none_failed) is skipped naming its rule, cleanup (all_done)
    and alert (one_failed) run, and join (one_success) runs once alert completed."""
    state, events = start_run(TRIGGER_RUN, spec(TRIGGER_WORKFLOW), 1, {}, at(60))
    events += record_started(state, "extract", 1, "worker-1", at(60.01))
    error = ErrorInfo(type="ValueError", message="source unreachable", retryable=False)
    events += record_failed(state, "extract", 1, error, at(60.02))
    events += record_started(state, "cleanup", 1, "worker-1", at(60.03))
    events += record_started(state, "alert", 1, "worker-2", at(60.03))
    events += record_completed(state, "alert", 1, {"paged": True}, 0.5, at(60.04))
    events += record_completed(state, "cleanup", 1, {}, 0.5, at(60.05))
    events += record_started(state, "join", 1, "worker-2", at(60.06))
    events += record_completed(state, "join", 1, {}, 0.5, at(60.07))
    return state, events


CONCURRENCY_WORKFLOW: dict[str, Any] = {
    "id": "golden-concurrency",
    "concurrency": {"limit": 1, "key": "$.params.customer"},
    "tasks": [{"id": "work", "handler": "echo", "inputs": {"customer": "$.params.customer"}}],
}


def queued_run() -> tuple[RunState, list[RunEvent]]:
    """A run over its workflow's concurrency limit (issue 13): started with priority 5 and
    queued (RunQueued with its key), dequeued when a slot freed, then it completes."""
    first = start_run(
        QUEUED_RUN, spec(CONCURRENCY_WORKFLOW), 1, {"customer": "acme"}, at(70), priority=5
    )[1][0]
    assert isinstance(first, RunStarted)
    state, events = queue_run(QUEUED_RUN, first)
    events += dequeue_run(state, at(71))
    events += record_started(state, "work", 1, "worker-1", at(71.01))
    events += record_completed(state, "work", 1, {"customer": "acme"}, 0.4, at(71.02))
    return state, events


def queue_cancelled_run() -> tuple[RunState, list[RunEvent]]:
    """A queued run cancelled before it began: RunCancelRequested, RunCancelled."""
    first = start_run(
        QUEUE_CANCELLED_RUN, spec(CONCURRENCY_WORKFLOW), 1, {"customer": "acme"}, at(70.5)
    )[1][0]
    assert isinstance(first, RunStarted)
    state, events = queue_run(QUEUE_CANCELLED_RUN, first)
    events += request_cancel(state, "not needed", at(70.6), by="alice")
    return state, events


SIGNAL_WORKFLOW: dict[str, Any] = {
    "id": "golden-signal",
    "tasks": [
        {"id": "prepare", "handler": "noop"},
        {
            "id": "approve",
            "dependencies": ["prepare"],
            "wait": {"signal": "approval", "timeout": 60},
            "retry": {"maxAttempts": 2, "initialDelay": 1.0},
        },
        {"id": "confirm", "dependencies": ["approve"], "wait": {"signal": "confirmation"}},
    ],
}
SUB_CHILD_WORKFLOW: dict[str, Any] = {
    "id": "golden-sub-child",
    "tasks": [{"id": "leaf", "handler": "echo", "inputs": {"n": "$.params.n"}}],
}
SUB_PARENT_WORKFLOW: dict[str, Any] = {
    "id": "golden-sub-parent",
    "tasks": [
        {"id": "sub", "workflow": "golden-sub-child", "inputs": {"n": 7}},
        {"id": "after", "handler": "noop", "dependencies": ["sub"]},
    ],
}
MAP_WORKFLOW: dict[str, Any] = {
    "id": "golden-map",
    "name": "Map over a list",
    "tasks": [
        {
            "id": "fan",
            "handler": "double",
            "inputs": {"items": "$.params.xs", "factor": 2},
            "map": "$.items",
            "retry": {"maxAttempts": 2, "initialDelay": 0.5, "jitter": 0},
        },
        {"id": "total", "handler": "noop", "dependencies": ["fan"], "inputs": {"r": "$.result"}},
    ],
}


def signal_run() -> tuple[RunState, list[RunEvent]]:
    """A run with wait tasks (issue 13): the signal confirm waits for comes before confirm is
    reached and is kept; approve times out (SignalTimeout, retried), waits again and
    completes with alice's approval, and confirm completes at once with the kept signal."""
    state, events = start_run(SIGNAL_RUN, spec(SIGNAL_WORKFLOW), 1, {}, at(70))
    events += receive_signal(state, "confirmation", {"ok": True}, at(70.5), by="bob")
    events += record_started(state, "prepare", 1, "worker-1", at(71))
    events += record_completed(state, "prepare", 1, {}, 0.5, at(71.5))
    events += record_wait_expired(state, "approve", 1, at(131.5))
    events += record_retry_due(state, "approve", 1, at(132.5))
    events += receive_signal(state, "approval", {"approved": True}, at(140), by="alice")
    return state, events


def sub_runs() -> tuple[RunState, list[RunEvent], RunState, list[RunEvent]]:
    """A sub-workflow (issue 13): the parent's task ``sub`` starts a child run (its RunStarted
    names the parent task), records ChildRunStarted, and completes with the child's
    published outputs; then ``after`` runs."""
    parent, parent_events = start_run(SUB_PARENT_RUN, spec(SUB_PARENT_WORKFLOW), 1, {}, at(70))
    link = ParentTask(run_id=SUB_PARENT_RUN, task_id="sub", attempt=1, depth=1)
    child, child_events = start_run(
        SUB_CHILD_RUN,
        spec(SUB_CHILD_WORKFLOW),
        1,
        {"n": 7},
        at(70.01),
        idempotency_key=child_key(SUB_PARENT_RUN, "sub", 1),
        submitted_by="engine",
        parent=link,
    )
    parent_events += record_child_started(
        parent, "sub", 1, SUB_CHILD_RUN, "golden-sub-child", 1, at(70.02)
    )
    child_events += record_started(child, "leaf", 1, "worker-1", at(70.03))
    child_events += record_completed(child, "leaf", 1, {"n": 7}, 0.5, at(70.04))
    outputs = child.published_outputs()
    parent_events += record_completed(parent, "sub", 1, outputs, 30.0, at(70.05))
    parent_events += record_started(parent, "after", 1, "worker-1", at(70.06))
    parent_events += record_completed(parent, "after", 1, {}, 0.5, at(70.07))
    return parent, parent_events, child, child_events


def map_run() -> tuple[RunState, list[RunEvent]]:
    """A map over three elements (issue 13): element 1 fails, waits and is retried on its own,
    the others complete; the task publishes the results in order and ``total`` runs."""
    state, events = start_run(MAP_RUN, spec(MAP_WORKFLOW), 1, {"xs": [1, 2, 3]}, at(70))
    events += record_started(state, "fan[0]", 1, "worker-1", at(70.01))
    events += record_started(state, "fan[1]", 1, "worker-2", at(70.01))
    events += record_completed(state, "fan[0]", 1, 2, 0.5, at(70.02))
    error = ErrorInfo(type="ValueError", message="flaky", retryable=True)
    events += record_failed(state, "fan[1]", 1, error, at(70.03))
    events += record_started(state, "fan[2]", 1, "worker-1", at(70.04))
    events += record_completed(state, "fan[2]", 1, 6, 0.5, at(70.05))
    events += record_retry_due(state, "fan[1]", 1, at(70.53))
    events += record_started(state, "fan[1]", 2, "worker-2", at(70.54))
    events += record_completed(state, "fan[1]", 2, 4, 0.5, at(70.55))
    events += record_started(state, "total", 1, "worker-1", at(70.56))
    events += record_completed(state, "total", 1, {}, 0.5, at(70.57))
    return state, events


def cancelled_by_run() -> tuple[RunState, list[RunEvent]]:
    """A run cancelled by a named principal while paused."""
    state, events = start_run(CANCELLED_BY_RUN, spec(CANCEL_WORKFLOW), 1, {}, at(50))
    events += pause_run(state, at(50.5), by="dave")
    events += request_cancel(state, "not wanted", at(51), by="dave")
    return state, events


Line = dict[str, Any]


def token_events() -> list[AnyTokenEvent]:
    """Two tokens made by the CLI and one revoked by the other over HTTP."""
    return [
        TokenCreated(
            timestamp=at(0),
            name="ci-deploy",
            role="submitter",
            hash=hashlib.sha256(b"fw_" + b"A" * 43).hexdigest(),
            created_by="cli:root",
        ),
        TokenCreated(
            timestamp=at(1),
            name="alice",
            role="admin",
            hash=hashlib.sha256(b"fw_" + b"B" * 43).hexdigest(),
            created_by="cli:root",
        ),
        TokenRevoked(timestamp=at(2), name="ci-deploy", by="alice"),
    ]


def schedule_events() -> list[AnyScheduleEvent]:
    """Schedules (issue 13): one that fires, skips an overlap, buffers one, misses an outage,
    is replaced, paused, resumed, triggered by hand and deleted; one made paused."""
    state = Schedules()
    events: list[AnyScheduleEvent] = []

    def record(*decided: AnyScheduleEvent | None) -> None:
        for event in decided:
            if event is not None:
                apply_schedule_event(state, event)
                events.append(event)

    minute = datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    hourly = ScheduleSpec(
        id="hourly-sync",
        workflow_id="retry-wf",
        cron="0 * * * *",
        timezone="Europe/Berlin",
        parameters={"source": "crm"},
        overlap="buffer_one",
        catchup_window=600.0,
    )
    record(*put_schedule(state, hourly, paused=None, by="alice", now=minute))
    nightly = ScheduleSpec(id="nightly", workflow_id="fail-wf", cron="30 2 * * *")
    record(*put_schedule(state, nightly, paused=True, by="cli:root", now=minute))
    # 04:00 fires; by 06:00 the run still runs: 05:00 is buffered and 06:00 skipped.
    record(
        *decide_fires(
            state.by_id["hourly-sync"], minute + timedelta(hours=1), previous_running=False
        )
    )
    record(
        *decide_fires(
            state.by_id["hourly-sync"], minute + timedelta(hours=2), previous_running=True
        )
    )
    record(
        *decide_fires(
            state.by_id["hourly-sync"], minute + timedelta(hours=3), previous_running=True
        )
    )
    # The run ended: the buffered fire starts.
    record(
        *decide_fires(
            state.by_id["hourly-sync"],
            minute + timedelta(hours=3, seconds=5),
            previous_running=False,
        )
    )
    # Down from 06:00 to 10:05: 07:00 to 09:00 are missed, 10:00 is inside the window.
    record(
        *decide_fires(
            state.by_id["hourly-sync"],
            minute + timedelta(hours=7, minutes=5),
            previous_running=False,
        )
    )
    later = minute + timedelta(hours=8)
    record(*put_schedule(state, msgspec.structs.replace(hourly, overlap="skip"), paused=None,
                         by="alice", now=later))  # fmt: skip
    record(pause_schedule(state, "hourly-sync", by="bob", reason="maintenance", now=later))
    record(trigger_schedule(state, "hourly-sync", by="bob", now=later + timedelta(seconds=1)))
    record(resume_schedule(state, "hourly-sync", by="bob", now=later + timedelta(seconds=2)))
    record(delete_schedule(state, "hourly-sync", by="alice", now=later + timedelta(seconds=3)))
    return events


def stored_lines(
    store: SQLiteEventStore, aggregate: uuid.UUID, snapshots: bool = False
) -> list[Line]:
    """Return an aggregate's records as the store keeps them, one golden line each."""
    recorder = store._snapshots if snapshots else store._events
    return [
        {
            "id": str(row.originator_id),
            "version": row.originator_version,
            "topic": row.topic,
            "stored": row.state.decode(),
        }
        for row in recorder.select_events(aggregate)
    ]


def build(store: SQLiteEventStore) -> dict[str, list[Line]]:
    """Store every scenario and return the lines of each golden file, by file name."""
    workflows: list[Line] = []
    for document in (RETRY_WORKFLOW, FAIL_WORKFLOW, CANCEL_WORKFLOW):
        store.register_workflow(spec(document), at(-1))
        workflows += stored_lines(store, workflow_aggregate_id(document["id"]))
    store.register_workflow(spec(OPERATED_WORKFLOW), at(-1))
    operated_workflows = stored_lines(store, workflow_aggregate_id(OPERATED_WORKFLOW["id"]))
    runs: list[Line] = []
    snapshot: list[Line] = []
    scenarios: list[Callable[[], tuple[RunState, list[RunEvent]]]] = [
        retry_run,
        fail_run,
        cancel_run,
    ]
    states: dict[str, RunState] = {}
    for scenario in scenarios:
        state, events = scenario()
        states[state.id] = state
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
        runs += stored_lines(store, uuid.UUID(state.id))
        if scenario is retry_run:
            store.save_snapshot(state)
            snapshot = stored_lines(store, uuid.UUID(state.id), snapshots=True)
    # Written 2026-12 with the debugging and audit events (issue 11), and snapshot version 2.
    debug_runs: list[Line] = []
    snapshot_2: list[Line] = []
    for state, events in (
        operated_run(),
        forked_run(states[FAIL_RUN]),
        cancelled_by_run(),
    ):
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
        debug_runs += stored_lines(store, uuid.UUID(state.id))
        if state.id == OPERATED_RUN:
            store.save_snapshot(state)
            originator = snapshot_originator(uuid.UUID(state.id))
            snapshot_2 = stored_lines(store, originator, snapshots=True)
    # Written 2026-12 with hash chains (issue 11): every event stored with its "hash".
    state, steps = chained_run()
    version = 0
    for events in steps:
        store.append([Append(run_id=state.id, expected_version=version, events=events)])
        version += len(events)
    chained_runs = stored_lines(store, uuid.UUID(state.id))
    # Written 2026-12 with API tokens (issue 12): one revoked, one live; hashes of fake secrets.
    for version, event in enumerate(token_events()):
        store.append_token_event(version, event)
    tokens = stored_lines(store, TOKENS_AGGREGATE)
    # Written 2026-12 with trigger rules (issue 13): TaskSpec.trigger in the definitions.
    store.register_workflow(spec(TRIGGER_WORKFLOW), at(-1))
    trigger_workflows = stored_lines(store, workflow_aggregate_id(TRIGGER_WORKFLOW["id"]))
    state, events = trigger_run()
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    trigger_runs = stored_lines(store, uuid.UUID(state.id))
    # Written 2026-12 with concurrency limits (issue 13): RunQueued, RunDequeued, RunStarted
    # with priority, a definition with concurrency, and snapshot version 3 (priority, key).
    store.register_workflow(spec(CONCURRENCY_WORKFLOW), at(-1))
    concurrency_workflows = stored_lines(store, workflow_aggregate_id(CONCURRENCY_WORKFLOW["id"]))
    concurrency_runs: list[Line] = []
    snapshot_3: list[Line] = []
    for state, events in (queued_run(), queue_cancelled_run()):
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
        concurrency_runs += stored_lines(store, uuid.UUID(state.id))
        if state.id == QUEUED_RUN:
            store.save_snapshot(state)
            originator = snapshot_originator(uuid.UUID(state.id))
            snapshot_3 = stored_lines(store, originator, snapshots=True)
    # Written 2026-12 with signals and waits (issue 13): SignalReceived, TaskSpec.wait, and
    # RunState.signals in snapshot version 3.
    store.register_workflow(spec(SIGNAL_WORKFLOW), at(-1))
    signal_workflows = stored_lines(store, workflow_aggregate_id(SIGNAL_WORKFLOW["id"]))
    state, events = signal_run()
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    signal_runs = stored_lines(store, uuid.UUID(state.id))
    # Written 2026-12 with sub-workflows (issue 13): TaskSpec.workflow, ChildRunStarted,
    # RunStarted.parent; TaskState.childRunId and RunState.parentTaskId in snapshot version 3.
    sub_workflows: list[Line] = []
    for document in (SUB_CHILD_WORKFLOW, SUB_PARENT_WORKFLOW):
        store.register_workflow(spec(document), at(-1))
        sub_workflows += stored_lines(store, workflow_aggregate_id(document["id"]))
    parent, parent_events, child, child_events = sub_runs()
    store.append([Append(run_id=parent.id, expected_version=0, events=parent_events)])
    store.append([Append(run_id=child.id, expected_version=0, events=child_events)])
    sub_workflow_runs = stored_lines(store, uuid.UUID(parent.id))
    sub_workflow_runs += stored_lines(store, uuid.UUID(child.id))
    # Written 2026-12 with map tasks (issue 13): TaskSpec.map, the MapElement* events, and
    # TaskState.elements in snapshot version 3.
    store.register_workflow(spec(MAP_WORKFLOW), at(-1))
    map_workflows = stored_lines(store, workflow_aggregate_id(MAP_WORKFLOW["id"]))
    state, events = map_run()
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    map_runs = stored_lines(store, uuid.UUID(state.id))
    # Written 2026-12 with schedules (issue 13): every schedule event type at version 1.
    store.append_schedule_events(0, schedule_events())
    schedules = stored_lines(store, SCHEDULES_AGGREGATE)
    # Written 2026-12 with tracing (issue 14): RunStarted.traceparent.
    state, events = traced_run()
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    traced_runs = stored_lines(store, uuid.UUID(state.id))
    return {
        "runs-traced.jsonl": traced_runs,
        "schedules.jsonl": schedules,
        "runs-map.jsonl": map_runs,
        "workflows-map.jsonl": map_workflows,
        "runs-subworkflow.jsonl": sub_workflow_runs,
        "workflows-subworkflow.jsonl": sub_workflows,
        "runs-signal.jsonl": signal_runs,
        "workflows-signal.jsonl": signal_workflows,
        "runs-concurrency.jsonl": concurrency_runs,
        "workflows-concurrency.jsonl": concurrency_workflows,
        "snapshots-3.jsonl": snapshot_3,
        "runs-trigger.jsonl": trigger_runs,
        "workflows-trigger.jsonl": trigger_workflows,
        "tokens.jsonl": tokens,
        "runs-chained.jsonl": chained_runs,
        "runs.jsonl": runs,
        "workflows.jsonl": workflows,
        "snapshots.jsonl": snapshot,
        "runs-debug.jsonl": debug_runs,
        "workflows-debug.jsonl": operated_workflows,
        "snapshots-2.jsonl": snapshot_2,
    }


def main() -> int:
    """Write the golden files that are missing; return 0, or 1 when every file existed."""
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteEventStore(str(Path(directory) / "golden.db"))
        try:
            files = build(store)
        finally:
            store.close()
    written = 0
    for name, lines in files.items():
        path = HERE / name
        if path.exists():
            print(f"{path} exists: golden logs are never rewritten", file=sys.stderr)
            continue
        with path.open("wb") as out:
            for line in lines:
                out.write(msgspec.json.encode(line) + b"\n")
        print(f"wrote {path} ({len(lines)} records)")
        written += 1
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
