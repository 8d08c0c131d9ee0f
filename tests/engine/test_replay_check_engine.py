"""The replay check on histories a real engine stored in a SQLite file: parallel tasks,
retries with jitter, timeouts, failures at scheduling and publication, cancels while a task
runs, attempts interrupted by a closed engine, a fork and a paused run steered by an
operator all check clean; a decision changed in the code is found at its version."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowweaver.domain import run as commands
from flowweaver.domain.events import TaskFailed
from flowweaver.domain.replay_check import ReplayReport, check_run
from flowweaver.domain.spec import RetryPolicy, WorkflowSpec
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import Append, EventStore
from flowweaver.store import SQLiteEventStore
from tests.engine.conftest import EngineFactory, Gate
from tests.engine.test_crash import run_child


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """A SQLite file: histories as a server stores them."""
    store = SQLiteEventStore(str(tmp_path / "replay.db"))
    yield store
    store.close()


def check(store: EventStore, run_id: str, **options: Any) -> ReplayReport:
    """Check one stored run."""
    return check_run(run_id, (rec.event for rec in store.read_run(run_id)), **options)


def assert_all_check_clean(store: EventStore, count: int) -> None:
    """Every run in the store (there are ``count``) checks clean."""
    runs = store.list_runs(limit=1000).runs
    assert len(runs) == count
    for row in runs:
        report = check(store, row.id)
        assert report.difference is None, report.difference
        assert report.events == len(store.read_run(row.id))


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, re-checking every 10 ms."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                raise AssertionError("condition not reached in time")
    finally:
        deadline.cancel()


def test_parallel_tasks_passing_data_check_clean(engine: Engine) -> None:
    """Fan-out and fan-in with outputs mappings, three runs at once on four workers."""
    wide = 6
    engine.register_workflow(
        {
            "id": "fan",
            "tasks": [
                {"id": "src", "handler": "echo", "inputs": {"n": "$.params.n"}},
                *(
                    {
                        "id": f"p{i}",
                        "handler": "echo",
                        "dependencies": ["src"],
                        "inputs": {"n": "$.result.n", "i": i},
                        "outputs": {f"v{i}": "$.inputs.i", "n": "$.result.n"},
                    }
                    for i in range(wide)
                ),
                {
                    "id": "join",
                    "handler": "echo",
                    "dependencies": [f"p{i}" for i in range(wide)],
                    "inputs": {"all": "$.tasks", "v0": "$.v0"},
                },
            ],
        }
    )
    runs = [engine.start_run("fan", parameters={"n": n}) for n in range(3)]
    for run in runs:
        assert engine.wait_run_finished(run.run_id, timeout=20).status == "completed"
    assert_all_check_clean(engine.store, 3)


def test_retries_timeouts_and_failures_check_clean(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """Jittered retries that succeed, retries that run out and skip downstream, a timeout,
    a non-retryable error, an input path and an output path that match nothing."""

    release = threading.Event()

    def slow(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        release.wait(10)  # past its timeout; set once the run ended, so no thread outlives us
        return {}

    registry.register("slow", slow)
    retry = {"maxAttempts": 3, "initialDelay": 0.02, "backoffFactor": 2.0, "jitter": 0.5}
    engine.register_workflow(
        {
            "id": "flaky",
            "tasks": [
                {"id": "f", "handler": "fail", "inputs": {"times": 2}, "retry": retry},
                {"id": "g", "handler": "echo", "dependencies": ["f"], "inputs": {"r": "$.result"}},
            ],
        }
    )
    engine.register_workflow(
        {
            "id": "doomed",
            "defaults": {"retry": {"maxAttempts": 2, "initialDelay": 0.01, "jitter": 1.0}},
            "tasks": [
                {"id": "bad", "handler": "fail"},
                {"id": "after", "handler": "noop", "dependencies": ["bad"]},
                {"id": "later", "handler": "noop", "dependencies": ["after"]},
                {"id": "sibling", "handler": "noop"},
                {"id": "stuck", "handler": "slow", "timeout": 0.1},
                {
                    "id": "fatal",
                    "handler": "fail",
                    "retry": {"maxAttempts": 3, "nonRetryable": ["FailError"]},
                },
                {"id": "no_input", "handler": "echo", "inputs": {"x": "$.params.nowhere"}},
                {"id": "no_output", "handler": "echo", "outputs": {"x": "$.result.nowhere"}},
            ],
        }
    )
    ok = engine.start_run("flaky")
    bad = engine.start_run("doomed")
    assert engine.wait_run_finished(ok.run_id, timeout=20).status == "completed"
    state = engine.wait_run_finished(bad.run_id, timeout=20)
    release.set()
    assert state.status == "failed"
    errors = {t.id: t.last_error.type for t in state.tasks.values() if t.last_error}
    assert errors == {
        "bad": "FailError",
        "stuck": "Timeout",
        "fatal": "FailError",
        "no_input": "InputError",
        "no_output": "OutputError",
    }
    assert_all_check_clean(engine.store, 2)


def test_cancel_while_a_task_runs_checks_clean(engine: Engine, gate: Gate) -> None:
    """A cancel recorded while the gate runs, the late outcome, then RunCancelled."""
    engine.register_workflow(
        {
            "id": "long",
            "tasks": [
                {"id": "g", "handler": "gate"},
                {"id": "quick", "handler": "noop"},
                {"id": "next", "handler": "noop", "dependencies": ["g"]},
            ],
        }
    )
    run = engine.start_run("long")
    assert gate.entered.wait(10)
    engine.cancel_run(run.run_id, reason="enough")
    gate.opened.set()
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "cancelled"
    assert_all_check_clean(engine.store, 1)


def test_attempts_interrupted_by_a_closed_engine_check_clean(
    make_engine: EngineFactory, gate: Gate
) -> None:
    """An engine closed while a task runs; the next one records it Interrupted and runs it
    again. Twice, so the interruption count matters too."""
    workflow = {
        "id": "resume",
        "tasks": [
            {"id": "g", "handler": "gate"},
            {"id": "h", "handler": "noop", "dependencies": ["g"]},
        ],
    }
    first = make_engine()
    first.register_workflow(workflow)
    run = first.start_run("resume")
    for _ in range(2):
        assert gate.entered.wait(10)
        gate.entered.clear()
        engine = first
        engine.close(grace=0)
        first = make_engine()
    gate.opened.set()
    state = first.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert state.tasks["g"].interruptions == 2
    assert_all_check_clean(first.store, 1)


def test_interruptions_up_to_the_limit_check_clean_with_the_engines_limit(
    make_engine: EngineFactory, gate: Gate
) -> None:
    """An engine whose interruption limit is 1 fails the task at its first interruption;
    the check with the same limit agrees, the check with the default one does not."""
    first = make_engine(interruption_limit=1)
    first.register_workflow({"id": "once", "tasks": [{"id": "g", "handler": "gate"}]})
    run = first.start_run("once")
    assert gate.entered.wait(10)
    first.close(grace=0)
    gate.opened.set()
    second = make_engine(interruption_limit=1)
    assert second.wait_run_finished(run.run_id, timeout=10).status == "failed"
    assert check(second.store, run.run_id, interruption_limit=1).ok
    found = check(second.store, run.run_id).difference
    assert found is not None
    assert (found.event_type, found.field) == ("TaskFailed", "retryAt")


def test_a_fork_the_engine_drives_checks_clean(make_engine: EngineFactory) -> None:
    """A fork of a failed run, stored as the fork command decides it and run by the engine:
    the failed task and what follows run again, the completed one is carried."""
    first = make_engine()
    first.register_workflow(
        {
            "id": "broken",
            "tasks": [
                {"id": "a", "handler": "echo", "inputs": {"v": "$.params.v"}},
                {"id": "b", "handler": "fail", "dependencies": ["a"], "inputs": {"times": 1}},
                {"id": "c", "handler": "echo", "dependencies": ["b"], "inputs": {"r": "$.result"}},
            ],
        }
    )
    parent = first.start_run("broken", parameters={"v": 1})
    parent_state = first.wait_run_finished(parent.run_id, timeout=10)
    assert parent_state.status == "failed"
    fork_id = "00000000-0000-4000-8000-00000000f0f0"
    state, events = commands.fork_run(fork_id, parent_state, first.clock.now(), by="carol")
    first.store.append([Append(fork_id, 0, events)])
    first.supervisor.spawn(fork_id, state)  # as a fork request will
    assert first.wait_run_finished(fork_id, timeout=10).status == "failed"
    for run_id in (parent.run_id, fork_id):
        report = check(first.store, run_id)
        assert report.difference is None, report.difference


def test_a_paused_run_steered_by_an_operator_checks_clean(make_engine: EngineFactory) -> None:
    """onTaskFailure pause: the engine pauses the run; an operator skips one task, completes
    another by hand, retries the failed one and resumes (stored while no engine drives the
    run); the next engine finishes it."""
    first = make_engine()
    first.register_workflow(
        {
            "id": "steered",
            "onTaskFailure": "pause",
            "tasks": [
                {"id": "flaky", "handler": "fail", "inputs": {"times": 1}},
                {"id": "after", "handler": "echo", "dependencies": ["flaky"]},
                {"id": "manual", "handler": "noop", "dependencies": ["flaky"]},
                {"id": "report", "handler": "echo", "dependencies": ["after"]},
            ],
        }
    )
    run = first.start_run("steered")
    wait_for(lambda: first.get_run(run.run_id).status == "paused")
    first.close()
    store = first.store
    state = store.run_state(run.run_id)
    assert state is not None
    now = first.clock.now()
    for decide in (
        lambda: commands.skip_task(state, "manual", now, by="bob", reason="not today"),
        lambda: commands.complete_task(state, "after", {"ok": 1}, now, by="bob"),
        lambda: commands.retry_task(state, "flaky", now, by="bob"),
        lambda: commands.resume_run(state, now, by="bob"),
    ):
        base = state.version
        store.append([Append(run.run_id, base, decide())])
    second = make_engine()
    final = second.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert {t.id: t.status for t in final.tasks.values()} == {
        "flaky": "completed",
        "after": "completed",
        "manual": "skipped",
        "report": "completed",
    }
    assert_all_check_clean(second.store, 1)


def test_a_long_chain_checks_clean(engine: Engine) -> None:
    """Forty tasks in a chain, each reading the one before."""
    n = 40
    engine.register_workflow(
        {
            "id": "chain",
            "tasks": [
                {"id": "t1", "handler": "echo", "inputs": {"value": 0}},
                *(
                    {
                        "id": f"t{i}",
                        "handler": "echo",
                        "dependencies": [f"t{i - 1}"],
                        "inputs": {"value": "$.result.value", "step": i},
                    }
                    for i in range(2, n + 1)
                ),
            ],
        }
    )
    run = engine.start_run("chain")
    assert engine.wait_run_finished(run.run_id, timeout=30).status == "completed"
    assert_all_check_clean(engine.store, 1)


def test_a_changed_retry_policy_is_found_at_the_engines_first_failure(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code that reads maxAttempts as one attempt differs at the stored run's first
    TaskFailed, which it would not retry."""
    engine.register_workflow(
        {
            "id": "flaky",
            "tasks": [
                {
                    "id": "f",
                    "handler": "fail",
                    "inputs": {"times": 1},
                    "retry": {"maxAttempts": 2, "initialDelay": 0.01},
                }
            ],
        }
    )
    run = engine.start_run("flaky")
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
    stored = engine.store.read_run(run.run_id)
    first_failure = next(rec.version for rec in stored if isinstance(rec.event, TaskFailed))
    assert check(engine.store, run.run_id).ok
    policy_of = WorkflowSpec.retry_policy

    def one_attempt(self: WorkflowSpec, task_spec: Any) -> RetryPolicy:
        return msgspec.structs.replace(policy_of(self, task_spec), max_attempts=1)

    monkeypatch.setattr(WorkflowSpec, "retry_policy", one_attempt)
    found = check(engine.store, run.run_id).difference
    assert found is not None
    assert (found.version, found.event_type, found.field) == (
        first_failure,
        "TaskFailed",
        "retryAt",
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workflow", "faults", "lives"),
    [("mixed", "after_append=7", 1), ("mixed", "before_append=5", 1), ("always", "", 3)],
)
def test_runs_of_processes_killed_by_sigkill_check_clean(
    tmp_path: Path, workflow: str, faults: str, lives: int
) -> None:
    """Processes killed at a fault point or inside a handler, then restarted until their
    runs end (tests/engine/crash_child.py): every stored run checks clean."""
    db, log = tmp_path / "crash.db", tmp_path / "calls.log"
    log.touch()
    for _ in range(lives):
        assert run_child(db, log, workflow, faults=faults) == -signal.SIGKILL
    assert run_child(db, log, workflow) == 0
    store = SQLiteEventStore(str(db))
    try:
        rows = store.list_runs(limit=100).runs
        assert rows
        interrupted = 0
        for row in rows:
            report = check(store, row.id)
            assert report.difference is None, report.difference
            interrupted += sum(
                1
                for rec in store.read_run(row.id)
                if isinstance(rec.event, TaskFailed) and rec.event.error.type == "Interrupted"
            )
        if workflow == "always":
            assert interrupted == 3
    finally:
        store.close()
