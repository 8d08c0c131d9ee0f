"""Tokens in the embedded stores (memory, SQLite), and kept out of every run read."""

from __future__ import annotations

from pathlib import Path

from flowweaver.domain.ids import TOKENS_AGGREGATE
from flowweaver.store.memory import MemoryEventStore
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.tokens import TokenRegistry

from .token_cases import check_token_log


def test_memory_store_keeps_tokens() -> None:
    """The memory store passes the token checks (one store object seen as two nodes)."""
    store = MemoryEventStore()
    check_token_log(store, store)


def test_sqlite_store_keeps_tokens_seen_by_a_second_connection(tmp_path: Path) -> None:
    """Two SQLite store objects on one file (a server and the CLI) share their tokens."""
    path = str(tmp_path / "fw.db")
    first, second = SQLiteEventStore(path), SQLiteEventStore(path)
    try:
        check_token_log(first, second)
    finally:
        first.close()
        second.close()


def test_the_token_registry_is_no_run_and_stays_out_of_the_log(tmp_path: Path) -> None:
    """Run reads never serve the token events: not by id, not in the log, not in the run list."""
    store = SQLiteEventStore(str(tmp_path / "fw.db"))
    try:
        TokenRegistry(store).create("ci", "reader", by="t")
        registry_id = str(TOKENS_AGGREGATE)
        assert store.read_run(registry_id) == []
        assert store.read_stored(registry_id) == []
        assert store.run_state(registry_id) is None
        assert store.last_version(registry_id) == 0
        assert store.read_log() == []
        assert store.list_runs().runs == []
    finally:
        store.close()
