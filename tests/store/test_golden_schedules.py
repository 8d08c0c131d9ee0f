"""The golden schedule log (tests/golden/schedules.jsonl): as first stored it decodes and folds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from flowweaver.domain.ids import SCHEDULES_AGGREGATE
from flowweaver.domain.schedule import SCHEDULE_EVENT_TYPES, Schedules, apply_schedule_event
from flowweaver.schedules import ScheduleRegistry
from flowweaver.store.codec import decode_schedule_event, encode, schedule_topic, topic
from flowweaver.store.sqlite import SQLiteEventStore

from .test_golden import Line, load

SCHEDULE_LINES = load("schedules*.jsonl")


def test_every_schedule_event_type_is_in_the_golden_log_at_its_current_version() -> None:
    """A new schedule event type or version needs a golden record (see tests/golden/README.md)."""
    wanted = {topic(t.__name__, t.schema_version) for t in SCHEDULE_EVENT_TYPES}
    assert wanted <= {line.topic for line in SCHEDULE_LINES}
    assert {line.id for line in SCHEDULE_LINES} == {str(SCHEDULES_AGGREGATE)}


@pytest.mark.parametrize("line", SCHEDULE_LINES, ids=lambda line: f"v{line.version}")
def test_current_encoder_writes_the_golden_schedule_bytes(line: Line) -> None:
    """Each golden schedule event decodes, and encodes back to its exact stored bytes."""
    event = decode_schedule_event(line.raw, line.topic)
    assert schedule_topic(event) == line.topic
    assert encode(event) == line.raw


def test_golden_schedules_fold_to_their_recorded_outcome() -> None:
    """hourly-sync fired 4 times and skipped 4 before it was deleted; nightly stays paused."""
    state = Schedules()
    for line in SCHEDULE_LINES[:-1]:
        apply_schedule_event(state, decode_schedule_event(line.raw, line.topic))
    hourly = state.by_id["hourly-sync"]
    assert (hourly.fired, hourly.skipped, hourly.version, hourly.paused) == (4, 4, 2, False)
    assert hourly.definition.overlap == "skip"
    assert hourly.cursor == datetime(2026, 1, 2, 11, 0, 2, tzinfo=UTC)  # resumed then
    assert [f.idempotency_key for f in hourly.recent] == [
        "schedule:hourly-sync:2026-01-02T04:00:00Z",
        "schedule:hourly-sync:2026-01-02T05:00:00Z",
        "schedule:hourly-sync:2026-01-02T10:00:00Z",
        "schedule:hourly-sync:trigger:2026-01-02T11:00:01Z",
    ]
    last = SCHEDULE_LINES[-1]
    apply_schedule_event(state, decode_schedule_event(last.raw, last.topic))
    assert state.version == 13
    assert list(state.by_id) == ["nightly"]
    assert state.by_id["nightly"].paused


def test_a_store_holding_the_golden_schedule_rows_reads_them(tmp_path: Path) -> None:
    """Rows as an old database holds them are what a registry on that store knows."""
    store = SQLiteEventStore(str(tmp_path / "old.db"))
    try:
        store._events.insert_events(
            [
                StoredEvent(uuid.UUID(line.id), line.version, line.topic, line.raw)
                for line in SCHEDULE_LINES
            ]
        )
        registry = ScheduleRegistry(store)
        registry.refresh()
        assert [e.definition.id for e in registry.entries()] == ["nightly"]
        assert store.read_log() == []  # no schedule event is served as a run's
        assert store.read_run(str(SCHEDULES_AGGREGATE)) == []
    finally:
        store.close()
