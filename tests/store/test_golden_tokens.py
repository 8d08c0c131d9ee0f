"""The golden token log (tests/golden/tokens.jsonl): as first stored it still decodes and folds."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from flowweaver.domain.ids import TOKENS_AGGREGATE
from flowweaver.domain.tokens import TOKEN_EVENT_TYPES, Tokens, apply_token_event
from flowweaver.store.codec import decode_token_event, encode, token_topic, topic
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.tokens import TokenRegistry

from .test_golden import Line, load

TOKEN_LINES = load("tokens*.jsonl")


def test_every_token_event_type_is_in_the_golden_log_at_its_current_version() -> None:
    """A new token event type or version needs a golden record (see tests/golden/README.md)."""
    wanted = {topic(t.__name__, t.schema_version) for t in TOKEN_EVENT_TYPES}
    assert wanted <= {line.topic for line in TOKEN_LINES}
    assert {line.id for line in TOKEN_LINES} == {str(TOKENS_AGGREGATE)}


@pytest.mark.parametrize("line", TOKEN_LINES, ids=lambda line: f"v{line.version}")
def test_current_encoder_writes_the_golden_token_bytes(line: Line) -> None:
    """Each golden token event decodes, and encodes back to its exact stored bytes."""
    event = decode_token_event(line.raw, line.topic)
    assert token_topic(event) == line.topic
    assert encode(event) == line.raw


def test_golden_tokens_fold_to_their_recorded_outcome() -> None:
    """ci-deploy was made and revoked by alice; alice is a live admin."""
    state = Tokens()
    for line in TOKEN_LINES:
        apply_token_event(state, decode_token_event(line.raw, line.topic))
    assert state.version == 3
    ci, alice = state.by_name["ci-deploy"], state.by_name["alice"]
    assert (ci.role, ci.revoked, ci.revoked_by) == ("submitter", True, "alice")
    assert (alice.role, alice.revoked, alice.created_by) == ("admin", False, "cli:root")


def test_a_store_holding_the_golden_token_rows_reads_them(tmp_path: Path) -> None:
    """Rows as an old database holds them are what a registry on that store knows."""
    store = SQLiteEventStore(str(tmp_path / "old.db"))
    try:
        store._events.insert_events(
            [
                StoredEvent(uuid.UUID(line.id), line.version, line.topic, line.raw)
                for line in TOKEN_LINES
            ]
        )
        registry = TokenRegistry(store)
        registry.refresh()
        assert [(e.name, e.revoked) for e in registry.entries()] == [
            ("alice", False),
            ("ci-deploy", True),
        ]
        assert registry.lookup("fw_" + "B" * 43) == registry.get("alice")
        assert store.read_log() == []
    finally:
        store.close()
