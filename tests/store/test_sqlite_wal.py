"""The SQLite store's write-ahead log is checkpointed while a server runs, and stays bounded."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore
from flowweaver.testing.store_suite import marker_event, new_run_id
from tests.serve_process import ServeProcess

PAD = "w" * 3000  # about one page per event


def _append_runs(store: SQLiteEventStore, runs: int, events: int) -> None:
    for _ in range(runs):
        run_id = new_run_id()
        for version in range(events):
            store.append([Append(run_id, version, [marker_event(version + 1, worker=PAD)])])


@contextmanager
def _server_like_reads(store: SQLiteEventStore) -> Iterator[list[int]]:
    """Read the way a serving process does (tailer, SSE replays, run list) until the block ends."""
    stop = threading.Event()
    reads = [0]

    def read() -> None:
        while not stop.is_set():
            top = store.max_position()
            store.wait_for_log(top, 0.01)
            for record in store.read_log(after=max(0, top - 20), limit=100)[:3]:
                store.read_run(record.run_id)
            store.list_runs(limit=20)
            reads[0] += 1

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        yield reads
    finally:
        stop.set()
        for reader in readers:
            reader.join(10)


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.05)
    return True


def test_quiet_server_checkpoints_its_wal_into_the_database_file(tmp_path: Path) -> None:
    """Once a server's log is still, its events reach fw.db, not only fw.db-wal."""
    server = ServeProcess("sqlite:///fw.db", tmp_path)
    try:
        server.wait_started()
        database = tmp_path / "fw.db"
        empty = database.stat().st_size
        workflow = {"id": "pad", "tasks": [{"id": "t", "handler": "echo", "inputs": {"p": PAD}}]}
        assert server.request("POST", "/workflows", workflow)[0] == 201
        for _ in range(40):  # about 400 KB of events: far below SQLite's own 4 MiB mark
            assert server.request("POST", "/runs", {"workflowId": "pad"})[0] == 201
        assert _wait_until(lambda: database.stat().st_size > empty + 300_000), (
            empty,
            database.stat().st_size,
        )
    finally:
        server.close()


def test_wal_stays_bounded_and_checkpoints_progress_under_read_load(tmp_path: Path) -> None:
    """Under steady appends and overlapping reads, the WAL is restarted; it stays bounded."""
    path = tmp_path / "fw.db"
    store = SQLiteEventStore(str(path))
    largest = 0
    try:
        with _server_like_reads(store):
            for _ in range(80):  # 8,000 events, about 26 MB of pages
                _append_runs(store, runs=10, events=10)
                largest = max(largest, os.stat(f"{path}-wal").st_size)
        assert path.stat().st_size > 8000 * 3000  # checkpoints copied the events
        # Without restarts the WAL reached 23-30 MB in 5,000 events; with them, 6-15 MB.
        assert largest < 20 * 1024 * 1024, largest
        frames, copied = store.checkpoint()
        assert frames >= 0
        assert frames == copied  # no reader pins old frames: everything reached the file
    finally:
        store.close()
