"""The store port's parts: every store is each of them; optional capabilities are asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowweaver.engine import Engine
from flowweaver.ports import (
    Checkpoints,
    DurabilityReport,
    EventStore,
    LeaseProvider,
    LocalLeases,
    LogFeed,
    LogReader,
    LogWriter,
    RunQueries,
    RunReader,
    SnapshotWriter,
    StoreLifecycle,
    StoreReader,
    WorkflowRegistry,
)
from flowweaver.store import MemoryEventStore, SQLiteEventStore

PARTS = (
    LogWriter,
    LogReader,
    LogFeed,
    RunReader,
    SnapshotWriter,
    WorkflowRegistry,
    RunQueries,
    StoreLifecycle,
    StoreReader,
    EventStore,
)


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.__name__)
def test_the_embedded_stores_are_every_part_of_the_event_store(tmp_path: Path, part: type) -> None:
    """The memory and SQLite stores each satisfy every narrow store Protocol."""
    memory, sqlite = MemoryEventStore(), SQLiteEventStore(str(tmp_path / "events.db"))
    try:
        assert isinstance(memory, part)
        assert isinstance(sqlite, part)
    finally:
        memory.close()
        sqlite.close()


def test_the_event_store_is_exactly_its_parts() -> None:
    """EventStore declares no method of its own: it is the union of the narrow Protocols."""
    members = {name for part in PARTS[:-2] for name in vars(part) if not name.startswith("_")}
    own = {name for name in vars(EventStore) if not name.startswith("_")}
    assert own == set()
    assert members == {
        "append",
        "read_run",
        "read_log",
        "max_position",
        "wait_for_log",
        "run_state",
        "save_snapshot",
        "register_workflow",
        "get_workflow",
        "workflow_versions",
        "list_workflows",
        "list_runs",
        "active_run_ids",
        "child_runs",
        "ping",
        "close",
    }


def test_sqlite_offers_leases_and_checkpoints_and_no_durability_report(tmp_path: Path) -> None:
    """A SQLite store has leases (its file lock) and a WAL to checkpoint."""
    store = SQLiteEventStore(str(tmp_path / "events.db"))
    try:
        assert isinstance(store, LeaseProvider)
        assert isinstance(store, Checkpoints)
        assert not isinstance(store, DurabilityReport)
    finally:
        store.close()


def test_the_memory_store_has_no_optional_capability() -> None:
    """A memory store has no leases, no checkpoints and no durability report."""
    store = MemoryEventStore()
    try:
        for capability in (LeaseProvider, Checkpoints, DurabilityReport):
            assert not isinstance(store, capability)
    finally:
        store.close()


def test_an_engine_on_a_store_without_leases_owns_every_run_locally() -> None:
    """On a store that is no LeaseProvider the engine takes LocalLeases."""
    engine = Engine(MemoryEventStore(), owns_store=True)
    try:
        assert isinstance(engine.leases, LocalLeases)
    finally:
        engine.close()
