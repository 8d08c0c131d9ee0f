"""Schedules on every store (memory, SQLite, PostgreSQL, Redis): two registries on one store
(two nodes) share them, a decision made on an old version is refused, nothing is a run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flowweaver.domain.ids import SCHEDULES_AGGREGATE
from flowweaver.domain.schedule import ScheduleCreated, SchedulePaused, ScheduleSpec
from flowweaver.domain.spec import decode_workflow
from flowweaver.errors import ConcurrencyError, NotFoundError, ValidationError
from flowweaver.ports import EventStore, ScheduleLog
from flowweaver.schedules import ScheduleRegistry
from flowweaver.store import MemoryEventStore, open_store
from tests.store_urls import StoreUrls, store_kind, store_urls

__all__ = ["store_kind", "store_urls"]

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SPEC = ScheduleSpec(id="nightly", workflow_id="report", cron="0 3 * * *", timezone="Europe/Paris")


def check_schedule_log(first: EventStore, second: EventStore) -> None:
    """Schedules made through one store object are seen and changed through another."""
    assert isinstance(first, ScheduleLog) and isinstance(second, ScheduleLog)
    first.register_workflow(
        decode_workflow(b'{"id":"report","tasks":[{"id":"t","handler":"noop"}]}'), NOW
    )
    node_a = ScheduleRegistry(first, check_workflow=first.get_workflow)
    node_b = ScheduleRegistry(second, check_workflow=second.get_workflow)
    entry, created = node_a.put(SPEC, by="ann")
    assert created and entry.definition == SPEC
    with pytest.raises(ValidationError):
        node_b.put(ScheduleSpec(id="x", workflow_id="nope", cron="* * * * *"), by="ann")
    with pytest.raises(ValidationError):
        node_b.put(ScheduleSpec(id="x", workflow_id="report", cron="* * *"), by="ann")
    with pytest.raises(NotFoundError):
        node_b.pause("ghost", by="ann")
    assert [type(e) for e in second.schedule_events()] == [ScheduleCreated]
    node_b.pause("nightly", by="bob")
    node_a.refresh()
    assert node_a.get("nightly").paused
    late = SchedulePaused(timestamp=NOW, schedule_id="nightly", by="late")
    with pytest.raises(ConcurrencyError):
        first.append_schedule_events(1, [late])
    assert len(first.schedule_events()) == 2
    assert first.read_run(str(SCHEDULES_AGGREGATE)) == []
    assert first.run_state(str(SCHEDULES_AGGREGATE)) is None
    assert first.read_log() == []
    assert first.list_runs().runs == []


def test_memory_store_keeps_schedules() -> None:
    """The memory store passes the schedule checks (one store object seen as two nodes)."""
    store = MemoryEventStore()
    check_schedule_log(store, store)


def test_every_store_keeps_schedules(store_urls: StoreUrls, store_kind: str) -> None:
    """SQLite, PostgreSQL and Redis: two store objects on one store share their schedules."""
    url = store_urls(store_kind)
    first, second = open_store(url), open_store(url)
    try:
        check_schedule_log(first, second)
    finally:
        first.close()
        second.close()
