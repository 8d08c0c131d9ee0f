"""Operator actions on live runs, end to end on a SQLite store: pause, resume, retry, skip and
complete by hand, cancel with ``by``; onTaskFailure "pause"; a paused run across a restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.domain.events import (
    ENGINE_PRINCIPAL,
    RunCancelRequested,
    RunPaused,
    RunResumed,
    TaskCompleted,
    TaskRetried,
    TaskSkipped,
    TaskStarted,
)
from flowweaver.engine import Engine
from flowweaver.errors import InvalidCommandError, NotFoundError, ValidationError
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import EventStore
from flowweaver.store import SQLiteEventStore
from tests.engine.conftest import EngineFactory


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """These tests run on a SQLite file (the restart test opens a second engine on it)."""
    store = SQLiteEventStore(str(tmp_path / "operator.db"))
    yield store
    store.close()


class Gate:
    """A handler that blocks until the test opens it; counts its calls."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.entered.set()
        if not self.opened.wait(30):
            raise RuntimeError("the test never opened the gate")
        return {"value": inputs.get("value")}


class Counter:
    """A handler that counts its calls and echoes its inputs."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.called = threading.Event()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(dict(inputs))
        self.called.set()
        return dict(inputs)


@pytest.fixture
def gate(registry: HandlerRegistry) -> Gate:
    g = Gate()
    registry.register("gate", g)
    return g


@pytest.fixture
def counter(registry: HandlerRegistry) -> Counter:
    c = Counter()
    registry.register("count", c)
    return c


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), else fail."""
    done = threading.Event()
    timer = threading.Timer(timeout, done.set)
    timer.start()
    try:
        while not condition():
            if done.wait(0.01):
                raise AssertionError("condition not reached in time")
    finally:
        timer.cancel()


def events_of(engine: Engine, run_id: str) -> list[Any]:
    return [rec.event for rec in engine.store.read_run(run_id)]


def status_of(engine: Engine, run_id: str, task_id: str) -> str:
    return engine.get_run(run_id).tasks[task_id].status


GATE_THEN_COUNT = {
    "id": "gate-then-count",
    "tasks": [
        {"id": "g", "handler": "gate"},
        {
            "id": "n",
            "handler": "count",
            "dependencies": ["g"],
            "inputs": {"value": "$.result.value"},
        },
    ],
}
TWO_ROOTS = {
    "id": "two-roots",
    "tasks": [{"id": "g", "handler": "gate"}, {"id": "q", "handler": "count"}],
}


def failing_then_count(workflow_id: str = "fail-then-count", **extra: Any) -> dict[str, Any]:
    """``f`` fails on its first attempt (no retry policy), ``d`` depends on it."""
    return {
        "id": workflow_id,
        "tasks": [
            {
                "id": "f",
                "handler": "fail",
                "inputs": {"times": 1},
                "outputs": {"attempt": "$.result.attempt"},
            },
            {"id": "d", "handler": "count", "dependencies": ["f"], "inputs": {"got": "$.attempt"}},
        ],
        **extra,
    }


# --- pause and resume ---------------------------------------------------------------------------


def test_pause_lets_running_attempts_finish_and_starts_nothing_new(
    engine: Engine, gate: Gate, counter: Counter
) -> None:
    """While paused, the running attempt finishes and is recorded; its dependent waits."""
    engine.register_workflow(GATE_THEN_COUNT)
    run = engine.start_run("gate-then-count")
    assert gate.entered.wait(10)
    state = engine.pause_run(run.run_id, by="alice", reason="look first")
    assert state.status == "paused"
    assert state.paused_by == "alice" and state.pause_reason == "look first"
    gate.opened.set()
    wait_for(lambda: status_of(engine, run.run_id, "g") == "completed")
    assert status_of(engine, run.run_id, "n") == "pending"
    assert counter.calls == []
    paused = [e for e in events_of(engine, run.run_id) if isinstance(e, RunPaused)]
    assert [(e.by, e.reason) for e in paused] == [("alice", "look first")]
    state = engine.resume_run(run.run_id, by="bob", reason="go on")
    assert state.status == "running"
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert len(counter.calls) == 1
    resumed = [e for e in events_of(engine, run.run_id) if isinstance(e, RunResumed)]
    assert [(e.by, e.reason) for e in resumed] == [("bob", "go on")]


def test_resume_dispatches_a_job_declined_while_paused(
    make_engine: EngineFactory, gate: Gate, counter: Counter
) -> None:
    """A job queued for the only worker is declined while paused and runs after resume."""
    engine = make_engine(workers=1)
    assert engine.actions.relay is None  # one process: every action goes to the run's actor
    engine.register_workflow(TWO_ROOTS)
    run = engine.start_run("two-roots")
    assert gate.entered.wait(10)
    assert status_of(engine, run.run_id, "q") == "scheduled"
    engine.pause_run(run.run_id)
    gate.opened.set()  # the worker comes free and is offered the queued job of q
    wait_for(lambda: status_of(engine, run.run_id, "g") == "completed")
    wait_for(lambda: engine.pool.idle() == 1)  # the offer was declined
    assert counter.calls == [] and status_of(engine, run.run_id, "q") == "scheduled"
    assert engine.pool.queue_depth() == 0
    engine.resume_run(run.run_id)
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
    assert len(counter.calls) == 1


def test_a_retry_that_comes_due_while_paused_begins_at_resume(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """A retry whose time comes during the pause waits; resume starts it, once."""
    release = threading.Event()
    entered = threading.Event()
    calls: list[int] = []

    def flaky(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(context.attempt)
        if context.attempt == 1:
            entered.set()
            release.wait(30)
            raise RuntimeError("first attempt fails")
        return {"attempt": context.attempt}

    registry.register("flaky", flaky)
    engine.register_workflow(
        {
            "id": "flaky",
            "tasks": [
                {
                    "id": "f",
                    "handler": "flaky",
                    "retry": {"maxAttempts": 2, "initialDelay": 0.05},
                }
            ],
        }
    )
    run = engine.start_run("flaky")
    assert entered.wait(10)
    engine.pause_run(run.run_id)
    release.set()
    wait_for(lambda: status_of(engine, run.run_id, "f") == "waiting_retry")
    retry_at = engine.get_run(run.run_id).tasks["f"].retry_at
    assert retry_at is not None
    wait_for(lambda: engine.clock.now() > retry_at)  # the timer fires while paused
    assert calls == [1]
    engine.resume_run(run.run_id)
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert calls == [1, 2]
    retried = [e for e in events_of(engine, run.run_id) if isinstance(e, TaskRetried)]
    assert len(retried) == 1 and retried[0].by is None  # the engine's own retry


def test_resume_before_the_retry_is_due_keeps_one_retry(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """Resuming re-arms the retry timer of a waiting task; the retry still happens once."""
    calls: list[int] = []

    def flaky(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(context.attempt)
        if context.attempt == 1:
            raise RuntimeError("first attempt fails")
        return {}

    registry.register("flaky", flaky)
    engine.register_workflow(
        {
            "id": "flaky-slow",
            "tasks": [
                {"id": "f", "handler": "flaky", "retry": {"maxAttempts": 2, "initialDelay": 0.3}}
            ],
        }
    )
    run = engine.start_run("flaky-slow")
    wait_for(lambda: status_of(engine, run.run_id, "f") == "waiting_retry")
    engine.pause_run(run.run_id)
    engine.resume_run(run.run_id)
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed" and calls == [1, 2]
    assert sum(isinstance(e, TaskRetried) for e in events_of(engine, run.run_id)) == 1


# --- retry, skip, complete ------------------------------------------------------------------


def test_retry_now_of_a_task_waiting_for_its_retry(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """An operator's retry starts the next attempt now instead of in an hour."""
    registry.register("flaky", _fails_first)
    engine.register_workflow(
        {
            "id": "slow-retry",
            "tasks": [
                {
                    "id": "f",
                    "handler": "flaky",
                    "retry": {"maxAttempts": 2, "initialDelay": 3600, "maxDelay": 3600},
                }
            ],
        }
    )
    run = engine.start_run("slow-retry")
    wait_for(lambda: status_of(engine, run.run_id, "f") == "waiting_retry")
    state = engine.retry_task(run.run_id, "f", by="carol", reason="fixed the upstream")
    assert state.tasks["f"].attempts == 2
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    retried = [e for e in events_of(engine, run.run_id) if isinstance(e, TaskRetried)]
    assert [(e.attempt, e.by, e.reason) for e in retried] == [(2, "carol", "fixed the upstream")]


def _fails_first(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": context.attempt}


def test_on_task_failure_pause_then_retry_then_resume_completes(
    engine: Engine, counter: Counter
) -> None:
    """With onTaskFailure "pause", a failure pauses; a retry runs while paused; resume ends it."""
    engine.register_workflow(failing_then_count(onTaskFailure="pause"))
    run = engine.start_run("fail-then-count")
    wait_for(lambda: engine.get_run(run.run_id).status == "paused")
    state = engine.get_run(run.run_id)
    assert state.tasks["f"].status == "failed" and state.tasks["d"].status == "pending"
    paused = [e for e in events_of(engine, run.run_id) if isinstance(e, RunPaused)]
    assert [e.by for e in paused] == [ENGINE_PRINCIPAL]
    engine.retry_task(run.run_id, "f", by="dave", reason="try again")
    wait_for(lambda: status_of(engine, run.run_id, "f") == "completed")
    state = engine.get_run(run.run_id)
    assert state.status == "paused" and state.tasks["d"].status == "pending"
    assert counter.calls == []
    engine.resume_run(run.run_id)
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert counter.calls == [{"got": 2}]


def test_start_run_on_task_failure_overrides_the_workflow(engine: Engine, counter: Counter) -> None:
    """``on_task_failure="pause"`` on start_run pauses a workflow that says nothing."""
    engine.register_workflow(failing_then_count("plain"))
    run = engine.start_run("plain", on_task_failure="pause")
    wait_for(lambda: engine.get_run(run.run_id).status == "paused")
    other = engine.start_run("plain")
    assert engine.wait_run_finished(other.run_id, timeout=10).status == "failed"


def test_complete_by_hand_feeds_the_output_downstream(engine: Engine, counter: Counter) -> None:
    """A failed task completed by hand gives its output to what depends on it."""
    engine.register_workflow(failing_then_count(onTaskFailure="pause"))
    run = engine.start_run("fail-then-count")
    wait_for(lambda: engine.get_run(run.run_id).status == "paused")
    state = engine.complete_task(run.run_id, "f", {"attempt": 42}, by="erin", reason="done by hand")
    assert state.tasks["f"].status == "completed" and state.tasks["f"].output == {"attempt": 42}
    engine.resume_run(run.run_id)
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
    assert counter.calls == [{"got": 42}]
    done = [e for e in events_of(engine, run.run_id) if isinstance(e, TaskCompleted)]
    assert (done[0].task_id, done[0].attempt, done[0].by, done[0].reason) == (
        "f",
        0,
        "erin",
        "done by hand",
    )


def test_skip_by_hand_skips_downstream_and_the_run_completes(
    engine: Engine, counter: Counter
) -> None:
    """A failed task skipped by hand skips what depends on it; resuming ends the run."""
    engine.register_workflow(failing_then_count(onTaskFailure="pause"))
    run = engine.start_run("fail-then-count")
    wait_for(lambda: engine.get_run(run.run_id).status == "paused")
    state = engine.skip_task(run.run_id, "f", by="frank", reason="not needed today")
    assert state.tasks["f"].status == "skipped" and state.tasks["d"].status == "skipped"
    final = engine.resume_run(run.run_id)
    assert final.status == "completed"
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
    assert counter.calls == []
    skipped = [e for e in events_of(engine, run.run_id) if isinstance(e, TaskSkipped)]
    assert (skipped[0].task_id, skipped[0].by, skipped[0].reason) == (
        "f",
        "frank",
        "not needed today",
    )


@pytest.mark.parametrize("action", ["skip", "complete"])
def test_a_queued_job_skipped_or_completed_by_hand_never_runs(
    make_engine: EngineFactory, gate: Gate, counter: Counter, action: str
) -> None:
    """A task whose job waits for a worker, skipped or completed by hand, never runs."""
    engine = make_engine(workers=1)
    engine.register_workflow(TWO_ROOTS)
    run = engine.start_run("two-roots")
    assert gate.entered.wait(10)
    assert engine.pool.queue_depth() == 1
    if action == "skip":
        engine.skip_task(run.run_id, "q")
    else:
        engine.complete_task(run.run_id, "q", {"by": "hand"})
    gate.opened.set()
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    wait_for(lambda: engine.pool.idle() == 1)
    assert counter.calls == []
    started = [e.task_id for e in events_of(engine, run.run_id) if isinstance(e, TaskStarted)]
    assert started == ["g"]


def test_cancel_records_by_and_reason_and_returns_the_state(
    engine: Engine, gate: Gate, counter: Counter
) -> None:
    """cancel_run stores RunCancelRequested with by and reason; a paused run cancels too."""
    engine.register_workflow(GATE_THEN_COUNT)
    run = engine.start_run("gate-then-count")
    assert gate.entered.wait(10)
    engine.pause_run(run.run_id)
    state = engine.cancel_run(run.run_id, "no longer needed", by="grace")
    assert state.cancel_requested and state.cancel_by == "grace"
    gate.opened.set()
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "cancelled"
    requested = [e for e in events_of(engine, run.run_id) if isinstance(e, RunCancelRequested)]
    assert [(e.by, e.reason) for e in requested] == [("grace", "no longer needed")]


# --- refusals -----------------------------------------------------------------------------------


def test_every_refused_action_stores_nothing(engine: Engine, gate: Gate, counter: Counter) -> None:
    """Each action the state does not allow is a 409 (or 404, 422) and stores nothing."""
    engine.register_workflow(GATE_THEN_COUNT)
    run = engine.start_run("gate-then-count")
    run_id = run.run_id
    assert gate.entered.wait(10)
    version = engine.get_run(run_id).version
    refused: list[tuple[type[Exception], Callable[[], Any]]] = [
        (InvalidCommandError, lambda: engine.resume_run(run_id)),  # running, not paused
        (InvalidCommandError, lambda: engine.retry_task(run_id, "g")),  # running
        (InvalidCommandError, lambda: engine.skip_task(run_id, "g")),  # running
        (InvalidCommandError, lambda: engine.complete_task(run_id, "g", {})),  # running
        (InvalidCommandError, lambda: engine.retry_task(run_id, "n")),  # pending
        (NotFoundError, lambda: engine.skip_task(run_id, "nope")),
        (NotFoundError, lambda: engine.pause_run("00000000-0000-4000-8000-000000000000")),
        (NotFoundError, lambda: engine.pause_run("not-a-run")),
        (ValidationError, lambda: engine.pause_run(run_id, reason="x" * 5000)),
        (ValidationError, lambda: engine.pause_run(run_id, by="")),
    ]
    for error, call in refused:
        with pytest.raises(error):
            call()
    assert engine.get_run(run_id).version == version
    engine.pause_run(run_id)
    version = engine.get_run(run_id).version
    with pytest.raises(InvalidCommandError, match="only a running run pauses"):
        engine.pause_run(run_id)
    with pytest.raises(ValidationError):
        engine.complete_task(run_id, "n", {"big": "x" * (engine.max_task_io_bytes + 1)})
    with pytest.raises(ValidationError):
        engine.complete_task(run_id, "n", {"x": object()})  # not JSON
    assert engine.get_run(run_id).version == version
    engine.resume_run(run_id)
    gate.opened.set()
    assert engine.wait_run_finished(run_id, timeout=10).status == "completed"
    version = engine.get_run(run_id).version
    for call in (
        lambda: engine.pause_run(run_id),
        lambda: engine.resume_run(run_id),
        lambda: engine.cancel_run(run_id),
        lambda: engine.skip_task(run_id, "n"),
        lambda: engine.complete_task(run_id, "n", {}),
        lambda: engine.retry_task(run_id, "n"),
    ):
        with pytest.raises(InvalidCommandError, match="has ended"):
            call()
    assert engine.get_run(run_id).version == version


def test_retry_of_a_failed_task_needs_a_paused_run(engine: Engine, gate: Gate) -> None:
    """A task failed for good in a run that goes on (other work running) is not retried."""
    engine.register_workflow(
        {
            "id": "fail-beside-gate",
            "tasks": [
                {"id": "g", "handler": "gate"},
                {"id": "f", "handler": "fail", "inputs": {"times": 1}},
            ],
        }
    )
    run = engine.start_run("fail-beside-gate")
    wait_for(lambda: status_of(engine, run.run_id, "f") == "failed")
    with pytest.raises(InvalidCommandError, match="not paused"):
        engine.retry_task(run.run_id, "f")
    engine.pause_run(run.run_id)
    engine.retry_task(run.run_id, "f")
    wait_for(lambda: status_of(engine, run.run_id, "f") == "completed")
    gate.opened.set()
    engine.resume_run(run.run_id)
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"


# --- restart ------------------------------------------------------------------------------------


def test_a_paused_run_stays_paused_across_a_restart_and_resumes_later(
    store: EventStore, registry: HandlerRegistry, gate: Gate, counter: Counter
) -> None:
    """An engine that stops with a paused run leaves it paused; the next one resumes it."""
    first = Engine(store, handlers=registry, workers=2)
    try:
        first.register_workflow(GATE_THEN_COUNT)
        run = first.start_run("gate-then-count")
        assert gate.entered.wait(10)
        first.pause_run(run.run_id, reason="maintenance")
    finally:
        first.close(grace=0.05)  # the gate is still closed: its attempt is lost
    second = Engine(store, handlers=registry, workers=2)
    try:
        wait_for(lambda: status_of(second, run.run_id, "g") == "waiting_retry")
        state = second.get_run(run.run_id)
        assert state.status == "paused" and state.pause_reason == "maintenance"
        assert gate.calls == 1 and counter.calls == []
        gate.opened.set()  # the first engine's stuck handler returns; nobody hears it
        second.resume_run(run.run_id)
        final = second.wait_run_finished(run.run_id, timeout=10)
        assert final.status == "completed"
        assert gate.calls == 2 and len(counter.calls) == 1
    finally:
        gate.opened.set()
        second.close(grace=2)


CRASHING_CHILD = """
import os, signal, sys, threading
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.store import SQLiteEventStore

entered = threading.Event()
registry = builtin_registry()
registry.register("gate", lambda inputs: entered.set() or threading.Event().wait())
registry.register("count", lambda inputs: dict(inputs))
engine = Engine(SQLiteEventStore(sys.argv[1]), handlers=registry, workers=2)
engine.register_workflow(WORKFLOW)
run = engine.start_run("gate-then-count")
entered.wait(10)
engine.pause_run(run.run_id, by="alice", reason="before the crash")
print("RUN", run.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_paused_run_stays_paused_after_its_process_is_killed(
    tmp_path: Path, registry: HandlerRegistry, gate: Gate, counter: Counter
) -> None:
    """SIGKILL while paused: the next engine keeps the run paused until someone resumes it."""
    db = tmp_path / "crash.db"
    code = f"WORKFLOW = {GATE_THEN_COUNT!r}\n{CRASHING_CHILD}"
    child = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    [run_id] = [line.split()[1] for line in child.stdout.splitlines() if line.startswith("RUN ")]
    gate.opened.set()
    engine = Engine(SQLiteEventStore(str(db)), handlers=registry, workers=2, owns_store=True)
    try:
        wait_for(lambda: status_of(engine, run_id, "g") == "waiting_retry")  # Interrupted
        state = engine.get_run(run_id)
        assert (state.status, state.paused_by) == ("paused", "alice")
        assert gate.calls == 0 and counter.calls == []
        engine.resume_run(run_id)
        assert engine.wait_run_finished(run_id, timeout=10).status == "completed"
        assert gate.calls == 1 and len(counter.calls) == 1
    finally:
        engine.close(grace=2)
