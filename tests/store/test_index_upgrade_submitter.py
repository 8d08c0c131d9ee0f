"""A run list table made before submittedBy was indexed gains the column on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flowweaver.domain.run import start_run
from flowweaver.ports import Append
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import new_run_id, wide_workflow


def test_an_old_run_list_gains_the_submitter_column_and_filters_new_runs(tmp_path: Path) -> None:
    """Rows indexed before the column have no submitter (they match no name); new rows do."""
    path = tmp_path / "old.db"
    store = SQLiteEventStore(str(path))
    old, events = start_run(new_run_id(), wide_workflow(1), 1, {}, T0, submitted_by="alice")
    store.append([Append(old.id, 0, events)])
    assert [r.id for r in store.list_runs().runs] == [old.id]
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX fw_runs_by_submitter")
        db.execute("ALTER TABLE fw_runs DROP COLUMN submitted_by")

    store = SQLiteEventStore(str(path))
    try:
        new, events = start_run(new_run_id(), wide_workflow(1), 1, {}, T0, submitted_by="alice")
        store.append([Append(new.id, 0, events)])
        assert [r.id for r in store.list_runs(submitted_by="alice").runs] == [new.id]
        assert {r.id: r.submitted_by for r in store.list_runs().runs} == {
            old.id: None,
            new.id: "alice",
        }
    finally:
        store.close()
