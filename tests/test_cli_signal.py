"""`flowweaver signal RUN_ID NAME --payload JSON` on a SQLite store, run as a user runs it.

The run is made by an engine in this process that then closes, so no server drives the store:
the command records SignalReceived (by the OS user) and the waiting task's completion; the next
engine on the store carries the run on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from tests.test_cli_actions import (
    USER,
    events,
    fw,
    fw_here,
    log_length,
    state_of,
    wait_state,
)

WORKFLOW = {
    "id": "release",
    "tasks": [
        {"id": "approve", "wait": {"signal": "approval", "timeout": 3600}},
        {
            "id": "ship",
            "handler": "echo",
            "dependencies": ["approve"],
            "inputs": {"approved": "$.result.approved"},
        },
    ],
}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "signal.db"


@pytest.fixture
def run_id(store: Path) -> str:
    """A run whose ``approve`` waits, on an engine that then closes."""
    engine = Engine.open(f"sqlite:///{store}", handlers=builtin_registry(), workers=1)
    try:
        engine.register_workflow(WORKFLOW)
        run = engine.start_run("release")
        wait_state(engine, run.run_id, lambda s: s.tasks["approve"].status == "waiting")
    finally:
        engine.close(grace=1)
    return run.run_id


def test_signal_completes_the_wait_and_a_later_engine_finishes_the_run(
    store: Path, run_id: str
) -> None:
    """One line with the new status; SignalReceived by the OS user; the run completes later."""
    done = fw("signal", run_id, "approval", "--payload", '{"approved": true}', store=store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run {run_id} running"
    stored = events(store, run_id)
    assert ("SignalReceived", USER, None) in stored
    assert state_of(store, run_id).tasks["approve"].output == {"result": {"approved": True}}
    engine = Engine.open(f"sqlite:///{store}", handlers=builtin_registry(), workers=1)
    try:
        final = engine.wait_run_finished(run_id, timeout=10)
    finally:
        engine.close(grace=1)
    assert final.status == "completed"
    assert final.tasks["ship"].output == {"result": {"approved": True}}


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["approval", "--payload", "{nope"], 2, "--payload is not JSON"),
        (["bad name"], 2, "not a valid signal name"),
        (["nobody"], 1, "not found"),
    ],
)
def test_bad_signals_are_one_line_non_zero_and_store_nothing(
    store: Path, run_id: str, args: list[str], code: int, text: str
) -> None:
    """A bad payload or name, or a signal no task waits for: one line, exit code, nothing kept.
    (In this process: tests/cli_in_process.py.)"""
    before = log_length(store)
    done = fw_here("signal", run_id, *args, store=store)
    assert done.returncode == code, done.stderr
    assert text in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert log_length(store) == before


def test_a_second_signal_is_refused(store: Path, run_id: str) -> None:
    """The name is taken once: the second exits 1 saying so."""
    first = fw("signal", run_id, "approval", "--payload", '{"approved": 1}', store=store)
    assert first.returncode == 0, first.stderr
    again = fw_here("signal", run_id, "approval", "--payload", '{"approved": 2}', store=store)
    assert again.returncode == 1
    assert "already received" in again.stderr
