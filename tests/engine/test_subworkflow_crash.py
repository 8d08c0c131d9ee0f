"""Sub-workflows survive kill -9: a restart never starts a second child for one attempt,
and the parent completes once its child has."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flowweaver.domain.events import ChildRunStarted
from flowweaver.store import SQLiteEventStore

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run_child(db: Path, marker: Path, faults: str = "") -> int:
    env = {k: v for k, v in os.environ.items() if k != "FLOWWEAVER_FAULTS"}
    if faults:
        env["FLOWWEAVER_FAULTS"] = faults
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.subworkflow_crash_child", str(db), str(marker)],
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


def check(db: Path) -> None:
    """One parent and exactly one child, both completed; the link stored once."""
    store = SQLiteEventStore(str(db))
    try:
        rows = store.list_runs(limit=10).runs
        parents = [r for r in rows if r.workflow_id == "crash-parent"]
        children = [r for r in rows if r.workflow_id == "crash-child"]
        assert len(parents) == 1
        assert len(children) == 1
        parent = store.run_state(parents[0].id)
        assert parent is not None
        assert parent.status == "completed"
        assert parent.tasks["sub"].child_run_id == children[0].id
        assert parent.tasks["sub"].attempts == 1
        assert children[0].parent_run_id == parent.id
        links = [e for e in store.read_run(parent.id) if isinstance(e.event, ChildRunStarted)]
        assert len(links) == 1
        child = store.run_state(children[0].id)
        assert child is not None
        assert child.status == "completed"
    finally:
        store.close()


@pytest.mark.parametrize("point", ["child_started=1", "after_append=3"])
def test_killed_around_the_child_start_one_child_runs(tmp_path: Path, point: str) -> None:
    """Killed once the child run is stored but before the parent heard of it, or once the
    child ended but before the parent heard of that (the third append of the run actors),
    the restart finds the same child (re-attached by replay): exactly one runs."""
    db, marker = tmp_path / "crash.db", tmp_path / "marker"
    assert run_child(db, marker, faults=point) == -signal.SIGKILL
    assert run_child(db, marker) == 0
    check(db)


def test_killed_inside_the_child_the_parent_completes_after_restart(tmp_path: Path) -> None:
    """Killed while the child's task runs (the link stored), the restart resumes both runs:
    the child's attempt is interrupted and runs again, and the parent completes with it."""
    db, marker = tmp_path / "crash.db", tmp_path / "marker"
    marker.write_text("die")
    assert run_child(db, marker) == -signal.SIGKILL
    assert marker.read_text() == "died"
    assert run_child(db, marker) == 0
    check(db)
