"""Global positions on PostgreSQL: strictly increasing in commit order, with holes, never late."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from flowweaver_postgres import PostgresEventStore
from flowweaver_postgres.leases import append_function_sql

from flowweaver.errors import ConcurrencyError
from flowweaver.ports import Append
from flowweaver.testing.store_suite import WAIT, marker_event, new_run_id
from tests.adapters.postgres.conftest import OpenStore

pytestmark = pytest.mark.postgres

Entry = tuple[str, int, int]


def test_a_tail_never_sees_a_position_below_one_it_read(open_pg_store: OpenStore) -> None:
    """Nodes appending at once (through their leases and through pooled connections), with
    rejected appends burning numbers as repeated idempotency keys do: a reader on another
    connection sees positions only increase, skipping numbers, and nothing commits below them."""
    node_a, node_b = open_pg_store(), open_pg_store()
    node_a.open_leases("a")
    node_b.open_leases("b")
    pooled = open_pg_store(pool_size=3)
    reader = open_pg_store()
    repeated = new_run_id()
    pooled.append([Append(run_id=repeated, expected_version=0, events=[marker_event(0)])])
    start = reader.max_position()
    writers = [node_a, node_b, pooled, pooled]
    barrier = threading.Barrier(len(writers) + 2, timeout=WAIT)
    done = threading.Event()
    rejected = [0] * len(writers)

    def write(index: int) -> list[Entry]:
        store = writers[index]
        written: list[Entry] = []
        barrier.wait()
        for run in range(6):
            run_id = new_run_id()
            for batch in range(4):
                events = [marker_event(batch * 2 + n, f"w{index}") for n in range(2)]
                positions = store.append(
                    [Append(run_id=run_id, expected_version=batch * 2, events=events)]
                )
                written += [(run_id, batch * 2 + n + 1, p) for n, p in enumerate(positions)]
                if (run + batch) % 2 == 0:
                    # The same first event again, like a POST repeating an idempotency key.
                    with contextlib.suppress(ConcurrencyError):
                        store.append(
                            [Append(run_id=repeated, expected_version=0, events=[marker_event(9)])]
                        )
                        raise AssertionError("a second version 1 was stored")
                    rejected[index] += 1
        return written

    def tail() -> list[Entry]:
        seen: list[Entry] = []
        after = start
        barrier.wait()
        while True:
            page = reader.read_log(after=after, limit=7)
            for recorded in page:
                assert recorded.position is not None
                assert recorded.position > after, f"{recorded.position} after {after}"
                after = recorded.position
                seen.append((recorded.run_id, recorded.version, recorded.position))
            if not page:
                if done.is_set() and after >= reader.max_position():
                    return seen
                reader.wait_for_log(after, timeout=0.05)

    def burn() -> int:
        """Reject appends on a connection of the reader's store while everything runs."""
        count = 0
        barrier.wait()
        while not done.is_set():
            with contextlib.suppress(ConcurrencyError):
                reader.append(
                    [Append(run_id=repeated, expected_version=0, events=[marker_event(8)])]
                )
                raise AssertionError("a second version 1 was stored")
            count += 1
        return count

    with ThreadPoolExecutor(len(writers) + 2) as pool:
        tailing = pool.submit(tail)
        burning = pool.submit(burn)
        writing = [pool.submit(write, i) for i in range(len(writers))]
        written = [entry for future in writing for entry in future.result(timeout=WAIT)]
        done.set()
        seen = tailing.result(timeout=WAIT)
        burnt = burning.result(timeout=WAIT)

    assert all(rejected) and burnt > 0, "the rejected appends did not happen"
    assert sorted(seen) == sorted(written)
    assert [p for _, _, p in seen] == sorted(p for _, _, p in seen)
    assert [(r.run_id, r.version, r.position) for r in reader.read_log(after=start)] == seen
    positions = [p for _, _, p in seen]
    assert positions[-1] - positions[0] + 1 > len(positions), "no position number was skipped"


def test_both_append_paths_lock_the_log(open_pg_store: OpenStore) -> None:
    """Appends without leases go through the recorder that locks the log, not the library's
    unlocked insert function, and fw_append locks it too: without the lock, positions are
    issued out of commit order (the test above then fails: its tail misses events)."""
    store: PostgresEventStore = open_pg_store()
    assert store._datastore.enable_db_functions is False
    assert any(
        "EXCLUSIVE" in statement.as_string(None)
        for statement in store._events.lock_table_statements
    )
    fenced = append_function_sql("s", "fw_events", "c").as_string(None)
    assert "LOCK TABLE" in fenced
    assert fenced.index("LOCK TABLE") < fenced.index("INSERT INTO")
