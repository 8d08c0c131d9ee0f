"""Signals and waits end to end on a SQLite store: a wait task completes with a signal sent
before or after it is reached, times out on the engine's timers, and keeps its deadline
across a restart and a kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowweaver.domain.events import SignalReceived, TaskCompleted, TaskFailed, TaskScheduled
from flowweaver.engine import Engine
from flowweaver.errors import InvalidCommandError, NotFoundError, ValidationError
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import EventStore
from flowweaver.store import SQLiteEventStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """These tests run on a SQLite file (the restart tests open a second engine on it)."""
    store = SQLiteEventStore(str(tmp_path / "signals.db"))
    yield store
    store.close()


def approval(timeout: float | None = None, prepare: str = "noop") -> dict[str, Any]:
    """prepare -> approve (waits for "approval") -> ship (echoes the approval)."""
    wait: dict[str, Any] = {"signal": "approval"}
    if timeout is not None:
        wait["timeout"] = timeout
    return {
        "id": "approval",
        "tasks": [
            {"id": "prepare", "handler": prepare},
            {"id": "approve", "dependencies": ["prepare"], "wait": wait},
            {
                "id": "ship",
                "handler": "echo",
                "dependencies": ["approve"],
                "inputs": {"value": "$.result.approved"},
            },
        ],
    }


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


def events_of(store: EventStore, run_id: str) -> list[Any]:
    return [record.event for record in store.read_run(run_id)]


def status_of(engine: Engine, run_id: str, task_id: str) -> str:
    return engine.get_run(run_id).tasks[task_id].status


@pytest.fixture
def engine(store: EventStore, registry: HandlerRegistry) -> Iterator[Engine]:
    engine = Engine(store, handlers=registry, workers=2)
    yield engine
    engine.close(grace=2)


def test_a_signal_completes_the_waiting_task_and_the_run_goes_on(
    engine: Engine, store: EventStore
) -> None:
    """The task waits (no worker takes it); the signal's payload is its result downstream."""
    engine.register_workflow(approval(timeout=3600))
    run = engine.start_run("approval")
    wait_for(lambda: status_of(engine, run.run_id, "approve") == "waiting")
    state = engine.send_signal(run.run_id, "approval", {"approved": "yes"}, by="alice")
    assert state.tasks["approve"].status == "completed"
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert final.tasks["approve"].output == {"result": {"approved": "yes"}}
    assert final.tasks["ship"].output == {"result": {"value": "yes"}}
    [received] = [e for e in events_of(store, run.run_id) if isinstance(e, SignalReceived)]
    assert (received.name, received.payload, received.by) == (
        "approval",
        {"approved": "yes"},
        "alice",
    )
    assert not any(
        e.task_id == "approve" for e in events_of(store, run.run_id) if hasattr(e, "worker")
    )


def test_a_signal_sent_before_the_task_is_reached_is_kept(
    engine: Engine, gate: Any, store: EventStore
) -> None:
    """While an earlier task runs, the signal is recorded; the wait completes when reached."""
    engine.register_workflow(approval(prepare="gate"))
    run = engine.start_run("approval")
    assert gate.entered.wait(10)
    state = engine.send_signal(run.run_id, "approval", {"approved": 42})
    assert state.tasks["approve"].status == "pending"
    assert state.signals == {"approval": {"approved": 42}}
    gate.opened.set()
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert final.tasks["ship"].output == {"result": {"value": 42}}
    names = [type(e).__name__ for e in events_of(store, run.run_id)]
    assert names.index("SignalReceived") < names.index("TaskCompleted")


def test_without_a_signal_the_wait_times_out(engine: Engine, store: EventStore) -> None:
    """The engine's timer fails the task with SignalTimeout after its timeout; ship is skipped."""
    engine.register_workflow(approval(timeout=0.2))
    run = engine.start_run("approval")
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "failed"
    error = final.tasks["approve"].last_error
    assert error is not None and error.type == "SignalTimeout"
    assert final.tasks["ship"].status == "skipped"
    with pytest.raises(InvalidCommandError, match="ended"):
        engine.send_signal(run.run_id, "approval", {})


def test_bad_signals_are_refused_and_nothing_is_stored(engine: Engine, store: EventStore) -> None:
    """Unknown run or signal: NotFoundError; bad name or payload: ValidationError; twice: 409."""
    engine.register_workflow(approval(timeout=3600))
    run = engine.start_run("approval")
    wait_for(lambda: status_of(engine, run.run_id, "approve") == "waiting")
    version = engine.get_run(run.run_id).version
    with pytest.raises(NotFoundError):
        engine.send_signal("00000000-0000-4000-8000-000000000000", "approval")
    with pytest.raises(NotFoundError):
        engine.send_signal(run.run_id, "nobody-waits")
    with pytest.raises(ValidationError):
        engine.send_signal(run.run_id, "bad name")
    with pytest.raises(ValidationError):
        engine.send_signal(run.run_id, "approval", {"x": object()})
    assert engine.get_run(run.run_id).version == version
    engine.send_signal(run.run_id, "approval", {"approved": 1})
    with pytest.raises(InvalidCommandError, match="already received"):
        engine.send_signal(run.run_id, "approval", {"approved": 2})
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"


class HourLater:
    """A clock one hour ahead: the restarted engine is past every deadline of the first."""

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)


def test_the_deadline_comes_from_the_events_across_a_restart(
    store: EventStore, registry: HandlerRegistry
) -> None:
    """An engine that stops with a task waiting leaves the deadline in the log; the next one
    fails the task as soon as it sees the deadline passed, not a full timeout later."""
    first = Engine(store, handlers=registry, workers=2)
    try:
        first.register_workflow(approval(timeout=1800))
        run = first.start_run("approval")
        wait_for(lambda: status_of(first, run.run_id, "approve") == "waiting")
    finally:
        first.close(grace=0.5)
    second = Engine(store, handlers=registry, workers=2, clock=HourLater())
    try:
        final = second.wait_run_finished(run.run_id, timeout=10)
    finally:
        second.close(grace=2)
    assert final.status == "failed"
    events = events_of(store, run.run_id)
    [scheduled] = [e for e in events if isinstance(e, TaskScheduled) and e.task_id == "approve"]
    [failed] = [e for e in events if isinstance(e, TaskFailed)]
    assert failed.error.type == "SignalTimeout"
    assert failed.timestamp - scheduled.timestamp >= timedelta(seconds=1800)


KILLED_CHILD = """
import os, signal, sys, threading
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.store import SQLiteEventStore

engine = Engine(SQLiteEventStore(sys.argv[1]), handlers=builtin_registry(), workers=2)
engine.register_workflow(WORKFLOW)
run = engine.start_run("approval")
while engine.get_run(run.run_id).tasks["approve"].status != "waiting":
    threading.Event().wait(0.01)
print("RUN", run.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_wait_times_out_after_its_process_is_killed(
    tmp_path: Path, registry: HandlerRegistry
) -> None:
    """SIGKILL while a task waits: the next engine re-arms the timer from the log, and the
    task fails with SignalTimeout at the deadline the first engine's events set."""
    db = tmp_path / "killed.db"
    code = f"WORKFLOW = {approval(timeout=1.5)!r}\n{KILLED_CHILD}"
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
    engine = Engine(SQLiteEventStore(str(db)), handlers=registry, workers=2, owns_store=True)
    try:
        final = engine.wait_run_finished(run_id, timeout=15)
        events = [record.event for record in engine.store.read_run(run_id)]
    finally:
        engine.close(grace=2)
    assert final.status == "failed"
    assert final.tasks["approve"].last_error is not None
    assert final.tasks["approve"].last_error.type == "SignalTimeout"
    [scheduled] = [e for e in events if isinstance(e, TaskScheduled) and e.task_id == "approve"]
    [failed] = [e for e in events if isinstance(e, TaskFailed)]
    assert failed.timestamp - scheduled.timestamp >= timedelta(seconds=1.5)
    assert not [e for e in events if isinstance(e, TaskCompleted) and e.task_id == "approve"]
