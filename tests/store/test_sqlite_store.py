"""The SQLite store passes the store conformance suite; plus what only a file can show."""

from __future__ import annotations

import itertools
import re
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from flowweaver.domain.run import RunState, start_run
from flowweaver.errors import ConcurrencyError, StoreConfigError, StoreError
from flowweaver.ports import Append, EventStore
from flowweaver.store import MemoryEventStore, SQLiteEventStore, open_store
from flowweaver.testing.runs import T0
from flowweaver.testing.store_suite import (
    WAIT,
    EventStoreSuite,
    completed_run,
    marker_event,
    new_run_id,
    wide_workflow,
)

_numbers = itertools.count()


class TestSQLiteEventStore(EventStoreSuite):
    """Every conformance test against a fresh SQLite file."""

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path

    def create_store(self) -> EventStore:
        return SQLiteEventStore(str(self.directory / f"events-{next(_numbers)}.db"))


# --- what only a file shows --------------------------------------------------------------------


def fill(store: SQLiteEventStore) -> tuple[list[RunState], list[int]]:
    """Record a workflow, one completed run and one still running; return states and positions."""
    store.register_workflow(wide_workflow(2), T0)
    store.register_workflow(wide_workflow(3), T0)
    done, done_events = completed_run(new_run_id(), width=2)
    positions = EventStoreSuite.record(store, done, done_events)
    running, running_events = start_run(new_run_id(), wide_workflow(3), 2, {"p": 1}, T0)
    positions += EventStoreSuite.record(store, running, running_events)
    return [done, running], positions


@pytest.mark.parametrize("read_model_before_close", [True, False])
def test_reopening_the_file_keeps_events_workflows_and_the_run_list(
    tmp_path: Path, read_model_before_close: bool
) -> None:
    """A store reopened on the same file has every event, position, workflow and run row."""
    path = str(tmp_path / "events.db")
    store = SQLiteEventStore(path)
    (done, running), positions = fill(store)
    log_before = [(r.run_id, r.version, r.position, r.raw) for r in store.read_log(after=0)]
    if read_model_before_close:
        rows_before = store.list_runs().runs
    store.close()

    again = SQLiteEventStore(path)
    try:
        assert [
            (r.run_id, r.version, r.position, r.raw) for r in again.read_log(after=0)
        ] == log_before
        assert [p for _, _, p, _ in log_before] == positions
        assert again.max_position() == positions[-1]
        assert again.run_state(done.id) == done
        assert again.run_state(running.id) == running
        assert [(w.workflow_id, w.version) for w in again.list_workflows()] == [("wf", 2)]
        assert again.get_workflow("wf", 1).definition == wide_workflow(2)
        rows = again.list_runs().runs
        assert [(r.id, r.status) for r in rows] == [(running.id, "running"), (done.id, "completed")]
        if read_model_before_close:
            assert rows == rows_before
        assert again.active_run_ids() == [running.id]
        # Positions keep growing after a reopen; versions continue where the run stopped.
        more = again.append(
            [Append(run_id=running.id, expected_version=running.version, events=[marker_event(1)])]
        )
        assert more[0] > positions[-1]
        with pytest.raises(ConcurrencyError):
            again.append([Append(run_id=done.id, expected_version=1, events=[marker_event(2)])])
    finally:
        again.close()


def test_two_stores_on_one_file_share_everything(tmp_path: Path) -> None:
    """Two stores on one file (as two processes would) see each other's events and runs."""
    path = str(tmp_path / "shared.db")
    writer, reader = SQLiteEventStore(path), SQLiteEventStore(path)
    try:
        assert reader.list_runs().runs == []
        (done, running), _ = fill(writer)
        assert reader.run_state(done.id) == done
        assert {r.id for r in reader.list_runs().runs} == {done.id, running.id}
        assert writer.active_run_ids() == reader.active_run_ids() == [running.id]
        with pytest.raises(ConcurrencyError):
            reader.append([Append(run_id=done.id, expected_version=0, events=[marker_event(1)])])
    finally:
        writer.close()
        reader.close()


def test_wait_for_log_sees_appends_made_through_another_store_on_the_file(tmp_path: Path) -> None:
    """A store waiting on the log wakes when another store on the same file appends."""
    path = str(tmp_path / "shared.db")
    writer, waiter = SQLiteEventStore(path), SQLiteEventStore(path)
    waiting = threading.Event()

    def wait() -> bool:
        waiting.set()
        return waiter.wait_for_log(0, timeout=WAIT)

    try:
        with ThreadPoolExecutor(1) as pool:
            woken = pool.submit(wait)
            assert waiting.wait(WAIT)
            writer.append(
                [Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])]
            )
            assert woken.result(timeout=WAIT) is True
    finally:
        writer.close()
        waiter.close()


def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    """The SQLite file uses write-ahead logging."""
    path = tmp_path / "wal.db"
    SQLiteEventStore(str(path)).close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- open_store --------------------------------------------------------------------------------


def synchronous_of(store: EventStore) -> int:
    assert isinstance(store, SQLiteEventStore)
    # The level is set per connection, so ask one of the store's own.
    with store._transaction(False) as cursor:
        cursor.execute("PRAGMA synchronous")
        return int(cursor.fetchone()[0])


def test_memory_url_opens_a_memory_store() -> None:
    """``memory://`` opens a fresh in-memory store each time."""
    one, two = open_store("memory://"), open_store("memory://")
    assert isinstance(one, MemoryEventStore)
    one.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
    assert two.max_position() == 0


def test_sqlite_url_with_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///name.db`` opens name.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    store = open_store("sqlite:///sub/rel.db")
    try:
        assert isinstance(store, SQLiteEventStore)
        assert (tmp_path / "sub" / "rel.db").exists()
    finally:
        store.close()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path: Path) -> None:
    """``sqlite:////abs/path.db`` opens the absolute path."""
    path = tmp_path / "abs.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert str(path).startswith("/")
        assert path.exists()
        assert synchronous_of(store) == 1  # NORMAL by default
    finally:
        store.close()


@pytest.mark.parametrize(("option", "level"), [("full", 2), ("FULL", 2), ("off", 0), ("extra", 3)])
def test_sqlite_url_sets_the_synchronous_level(tmp_path: Path, option: str, level: int) -> None:
    """``?synchronous=full`` (any case) sets that level on the store's connections."""
    store = open_store(f"sqlite:///{tmp_path}/s.db?synchronous={option}")
    try:
        assert synchronous_of(store) == level
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///{dir}/x.db?synchronous=sometimes", "synchronous must be one of"),
        ("sqlite:///{dir}/x.db?cache=big", "unknown SQLite option(s): cache"),
        ("sqlite:///{dir}/missing/x.db", "does not exist"),
        ("sqlite:///", "no database file"),
        ("sqlite://x.db", "sqlite:///path/to/file.db"),
    ],
)
def test_bad_sqlite_urls_raise_store_config_error(tmp_path: Path, url: str, message: str) -> None:
    """Bad SQLite options, missing directories and malformed URLs raise StoreConfigError."""
    with pytest.raises(StoreConfigError, match=re.escape(message)):
        open_store(url.format(dir=tmp_path))


@pytest.mark.parametrize("url", ["mysql://localhost/db", "ftp://x", "nonsense"])
def test_unknown_scheme_raises_store_config_error_naming_the_known_ones(url: str) -> None:
    """A URL scheme no store handles raises StoreConfigError that lists the known schemes."""
    with pytest.raises(StoreConfigError, match=r"unknown store URL scheme") as info:
        open_store(url)
    assert "memory" in str(info.value)
    assert "sqlite" in str(info.value)


@pytest.mark.parametrize("max_rows", [1, 3, None])
def test_an_append_returns_the_positions_its_events_have_in_the_log(
    tmp_path: Path, max_rows: int | None
) -> None:
    """The positions an append returns are the log's, whether its rows went in one INSERT
    (the usual way) or, past the rows one statement may carry, a row at a time."""
    store = SQLiteEventStore(str(tmp_path / "events.db"))
    if max_rows is not None:
        store._max_rows = max_rows  # SQLite's own limit, lowered to reach the other way
    one, two = new_run_id(), new_run_id()
    try:
        first = store.append([Append(run_id=one, expected_version=0, events=[marker_event(1)])])
        batch = store.append(
            [
                Append(run_id=two, expected_version=0, events=[marker_event(n) for n in (1, 2, 3)]),
                Append(run_id=one, expected_version=1, events=[marker_event(2)]),
            ]
        )
        with pytest.raises(ConcurrencyError):  # refused whole: no position is used up by it
            store.append(
                [
                    Append(run_id=one, expected_version=2, events=[marker_event(3)]),
                    Append(run_id=two, expected_version=2, events=[marker_event(9)]),
                ]
            )
        last = store.append([Append(run_id=one, expected_version=2, events=[marker_event(3)])])
        log = store.read_log(after=0)
        assert [r.position for r in log] == first + batch + last
        assert [(r.run_id, r.version) for r in log] == [
            (one, 1),
            (two, 1),
            (two, 2),
            (two, 3),
            (one, 2),
            (one, 3),
        ]
    finally:
        store.close()


@pytest.mark.timeout(30)
def test_appends_from_many_threads_share_the_appends_connection(tmp_path: Path) -> None:
    """Appends go through one connection of the store's own: callers on many threads at once
    each get their own positions, and every event is stored once."""
    store = SQLiteEventStore(str(tmp_path / "events.db"))
    runs = [new_run_id() for _ in range(8)]

    def write(run_id: str) -> list[int]:
        return [
            position
            for version in range(25)
            for position in store.append(
                [Append(run_id=run_id, expected_version=version, events=[marker_event(version)])]
            )
        ]

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            positions = [p for ps in pool.map(write, runs) for p in ps]
        assert store._writer is not None  # they did go through it
        log = store.read_log(after=0, limit=1000)
        assert sorted(positions) == [r.position for r in log]
        assert len(log) == 8 * 25
        for run_id in runs:
            assert [r.version for r in store.read_run(run_id)] == list(range(1, 26))
    finally:
        store.close()


def test_an_append_after_close_is_refused_and_opens_nothing(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "events.db"))
    store.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
    store.close()
    with pytest.raises(StoreError):
        store.append([Append(run_id=new_run_id(), expected_version=0, events=[marker_event(1)])])
    assert store._writer is None
