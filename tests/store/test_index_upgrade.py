"""A run list table made by an earlier release gains the fork columns on open and catches up."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from flowweaver.domain.run import fork_run, pause_run, start_run
from flowweaver.ports import Append
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import completed_run, new_run_id, wide_workflow


def _downgrade(path: Path) -> None:
    """Make the run list table look as the release before forks left it."""
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX fw_runs_by_parent")
        db.execute("ALTER TABLE fw_runs DROP COLUMN parent_run_id")
        db.execute("ALTER TABLE fw_runs DROP COLUMN parent_version")
        columns = {row[1] for row in db.execute("PRAGMA table_info(fw_runs)")}
    assert "parent_run_id" not in columns


def test_an_old_run_list_gains_the_columns_and_catches_up_with_forks_and_pauses(
    tmp_path: Path,
) -> None:
    """Opening a store whose run list lacks the parent columns adds them; rows indexed before
    keep working, and the forks and pauses the index had not read yet are read from the log."""
    path = tmp_path / "old.db"
    store = SQLiteEventStore(str(path))
    parent, events = completed_run(new_run_id())
    store.append([Append(parent.id, 0, events)])
    assert [r.id for r in store.list_runs().runs] == [parent.id]  # indexed by the old table
    store.close()
    _downgrade(path)

    store = SQLiteEventStore(str(path))
    try:
        fork, forked = fork_run(new_run_id(), parent, T0 + timedelta(minutes=1))
        other, started = start_run(new_run_id(), wide_workflow(1), 1, {}, T0)
        started += pause_run(other, T0 + timedelta(minutes=2), by="op")
        store.append([Append(fork.id, 0, forked), Append(other.id, 0, started)])
        rows = {r.id: r for r in store.list_runs().runs}
        assert rows[parent.id].parent_run_id is None
        assert (rows[fork.id].parent_run_id, rows[fork.id].parent_version) == (
            parent.id,
            parent.version,
        )
        assert rows[other.id].status == "paused"
        assert [r.id for r in store.child_runs(parent.id).runs] == [fork.id]
        assert store.active_run_ids() == [other.id]
    finally:
        store.close()
