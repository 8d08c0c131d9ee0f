"""Crash recovery with real processes killed by SIGKILL at named fault points.

Each test runs a child engine on a SQLite file until it dies, then again until its runs
finish, and checks the log: every run ends, versions are contiguous, no completed task runs
again, and handler invocations are what at-least-once delivery allows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from flowweaver.domain.events import TaskFailed
from flowweaver.store import SQLiteEventStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_child(db: Path, log: Path, workflow: str, faults: str = "") -> int:
    env = {k: v for k, v in os.environ.items() if k != "FLOWWEAVER_FAULTS"}
    if faults:
        env["FLOWWEAVER_FAULTS"] = faults
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.crash_child", str(db), str(log), workflow],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def check_log(db: Path, log: Path, expected_status: str = "completed") -> SQLiteEventStore:
    store = SQLiteEventStore(str(db))
    invocations = Counter(
        tuple(line.split()[:2]) for line in log.read_text().splitlines() if line.strip()
    )
    runs = store.list_runs(limit=100).runs
    assert runs
    for row in runs:
        recorded = store.read_run(row.id)
        assert [e.version for e in recorded] == list(range(1, len(recorded) + 1))
        state = store.run_state(row.id)
        assert state is not None
        assert state.status == expected_status, state
        completed = Counter(e.event.task_id for e in recorded if e.name == "TaskCompleted")  # type: ignore[union-attr]
        started = Counter(e.event.task_id for e in recorded if e.name == "TaskStarted")  # type: ignore[union-attr]
        for task_id, task in state.tasks.items():
            calls = invocations[(row.id, task_id)]
            assert completed[task_id] == (1 if task.status == "completed" else 0)
            # At-least-once: every started attempt may have run its handler once, no more;
            # an attempt that never started never ran.
            assert calls <= started[task_id], (task_id, calls, started[task_id])
            if task.status == "completed":
                assert calls >= 1
    return store


@pytest.mark.parametrize("point", ["after_append=7", "before_append=7", "after_append=2"])
def test_killed_at_a_fault_point_every_run_finishes(tmp_path: Path, point: str) -> None:
    """Killed at a named point, then restarted on the same file: every run completes."""
    db, log = tmp_path / "crash.db", tmp_path / "calls.log"
    log.touch()
    assert run_child(db, log, "mixed", faults=point) == -signal.SIGKILL
    assert run_child(db, log, "mixed") == 0
    store = check_log(db, log)
    assert len(store.list_runs(limit=100).runs) == 10
    store.close()


def test_killed_inside_a_handler_the_attempt_is_interrupted_and_rerun(tmp_path: Path) -> None:
    """A process dying inside a handler leaves an Interrupted attempt that runs again."""
    db, log = tmp_path / "crash.db", tmp_path / "calls.log"
    log.touch()
    assert run_child(db, log, "suicide") == -signal.SIGKILL
    assert run_child(db, log, "suicide") == 0
    store = check_log(db, log)
    (row,) = store.list_runs().runs
    state = store.run_state(row.id)
    assert state is not None
    boom = state.tasks["boom"]
    assert (boom.attempts, boom.interruptions, boom.status) == (2, 1, "completed")
    assert state.tasks["a"].attempts == 1  # completed before the crash: never ran again
    store.close()


def test_a_handler_that_always_kills_its_process_fails_after_three_interruptions(
    tmp_path: Path,
) -> None:
    """Interrupted three times, a task fails for good instead of looping forever."""
    db, log = tmp_path / "crash.db", tmp_path / "calls.log"
    log.touch()
    codes = [run_child(db, log, "always") for _ in range(3)]
    assert codes == [-signal.SIGKILL] * 3
    assert run_child(db, log, "always") == 0
    store = check_log(db, log, expected_status="failed")
    (row,) = store.list_runs().runs
    failures = [e.event for e in store.read_run(row.id) if e.name == "TaskFailed"]
    assert all(isinstance(f, TaskFailed) and f.error.type == "Interrupted" for f in failures)
    assert [f.retry_at is None for f in failures if isinstance(f, TaskFailed)] == [
        False,
        False,
        True,
    ]
    assert len(log.read_text().splitlines()) == 3
    store.close()
