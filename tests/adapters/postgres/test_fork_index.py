"""A PostgreSQL run list made by an earlier release gains the fork columns when a store opens."""

from __future__ import annotations

from datetime import timedelta

import psycopg
from psycopg.sql import SQL, Identifier

from flowweaver.domain.run import fork_run, pause_run, start_run
from flowweaver.ports import Append
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import completed_run, new_run_id, wide_workflow
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import SERVER_URL


def test_an_old_run_list_gains_the_columns_and_reads_forks_and_pauses(
    open_pg_store: OpenStore, schema: str
) -> None:
    """Rows indexed by the old table keep working; forks and pauses after it are indexed."""
    store = open_pg_store()
    parent, events = completed_run(new_run_id())
    store.append([Append(parent.id, 0, events)])
    assert [r.id for r in store.list_runs().runs] == [parent.id]
    store.close()
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        runs = Identifier(schema, "fw_runs")
        conn.execute(SQL("DROP INDEX {0}").format(Identifier(schema, "fw_runs_by_parent")))
        conn.execute(SQL("ALTER TABLE {0} DROP COLUMN parent_run_id").format(runs))
        conn.execute(SQL("ALTER TABLE {0} DROP COLUMN parent_version").format(runs))

    store = open_pg_store()
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
