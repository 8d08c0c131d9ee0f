"""What the Redis recorders promise beyond the library's cases: atomic batches, key layout."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
import redis.exceptions as rexc
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent, Tracking
from flowweaver_redis import (
    RedisAggregateRecorder,
    RedisApplicationRecorder,
    RedisDatastore,
    RedisProcessRecorder,
    RedisTrackingRecorder,
)
from flowweaver_redis import recorders as recorders_module

from tests.adapters.redis.support import list_keys

pytestmark = pytest.mark.redis


def _event(
    originator_id: object, version: int, topic: str = "t", state: bytes = b"{}"
) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,  # type: ignore[arg-type]
        originator_version=version,
        topic=topic,
        state=state,
    )


def test_batch_over_several_aggregates_is_all_or_nothing(datastore: RedisDatastore) -> None:
    """A batch with one taken version records none of its events, on any aggregate."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    a, b = uuid4(), uuid4()
    recorder.insert_events([_event(a, 1)])

    with pytest.raises(IntegrityError):
        recorder.insert_events([_event(b, 1), _event(b, 2), _event(a, 2), _event(a, 1)])

    assert recorder.select_events(b) == []
    assert [e.originator_version for e in recorder.select_events(a)] == [1]
    assert recorder.max_notification_id() == 1
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1]


def test_notification_ids_stay_gap_free_after_a_conflict(datastore: RedisDatastore) -> None:
    """A rejected batch uses up no notification ids."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    a = uuid4()
    assert recorder.insert_events([_event(a, 1), _event(a, 2)]) == [1, 2]
    with pytest.raises(IntegrityError):
        recorder.insert_events([_event(uuid4(), 1), _event(a, 2)])
    assert recorder.insert_events([_event(a, 3)]) == [3]
    assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2, 3]


def test_conflict_names_the_aggregate_and_version(datastore: RedisDatastore) -> None:
    """The IntegrityError says which aggregate and version were taken or repeated."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    a = uuid4()
    recorder.insert_events([_event(a, 1)])
    with pytest.raises(IntegrityError, match=rf"Version 1 of aggregate {a} is already recorded"):
        recorder.insert_events([_event(a, 1)])
    with pytest.raises(IntegrityError, match=rf"Version 2 of aggregate {a} appears twice"):
        recorder.insert_events([_event(a, 2), _event(a, 2)])


def test_process_recorder_records_events_and_tracking_together(datastore: RedisDatastore) -> None:
    """A stale tracking id rejects the events that come with it, and the reverse."""
    recorder = RedisProcessRecorder(
        datastore, events_name="app:events", tracking_name="app:tracking"
    )
    a = uuid4()
    recorder.insert_events([_event(a, 1)], tracking=Tracking("up", 5))

    with pytest.raises(IntegrityError, match="not greater than the recorded 5"):
        recorder.insert_events([_event(a, 2)], tracking=Tracking("up", 5))
    assert [e.originator_version for e in recorder.select_events(a)] == [1]

    with pytest.raises(IntegrityError):
        recorder.insert_events([_event(a, 1)], tracking=Tracking("up", 6))
    assert recorder.max_tracking_id("up") == 5
    assert recorder.max_notification_id() == 1


def test_tracking_recorder_and_process_recorder_share_the_hash(datastore: RedisDatastore) -> None:
    """Tracking recorded with events is what a tracking recorder of the same name reads."""
    process = RedisProcessRecorder(
        datastore, events_name="app:events", tracking_name="app:tracking"
    )
    tracking = RedisTrackingRecorder(datastore, tracking_name="app:tracking")
    process.insert_events([_event(uuid4(), 1)], tracking=Tracking("up", 7))
    assert tracking.max_tracking_id("up") == 7
    assert tracking.has_tracking_id("up", 7)
    assert not tracking.has_tracking_id("up", 8)


@pytest.mark.parametrize("recorder_class", [RedisAggregateRecorder, RedisApplicationRecorder])
@pytest.mark.parametrize(
    ("gt", "lte", "desc", "limit"),
    [
        (None, None, False, None),
        (3, None, False, None),
        (None, 7, False, None),
        (3, 7, False, None),
        (3, 7, True, None),
        (None, None, True, 1),
        (None, 5, True, 1),
        (2, None, False, 3),
        (2, 9, True, 2),
        (10, None, False, None),
        (0, 0, False, None),
    ],
)
def test_select_events_by_version_range(
    datastore: RedisDatastore,
    recorder_class: type[RedisAggregateRecorder],
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> None:
    """Versions in (gt, lte], ascending or descending, up to limit, as the library means."""
    recorder = recorder_class(datastore, events_name="app:things")
    a = uuid4()
    recorder.insert_events([_event(a, v, state=b"s%d" % v) for v in range(1, 11)])
    recorder.insert_events([_event(uuid4(), v) for v in range(1, 4)])

    expected = [v for v in range(1, 11) if (gt is None or v > gt) and (lte is None or v <= lte)]
    if desc:
        expected.reverse()
    if limit is not None:
        expected = expected[:limit]
    events = recorder.select_events(a, gt=gt, lte=lte, desc=desc, limit=limit)
    assert [e.originator_version for e in events] == expected
    assert [e.state for e in events] == [b"s%d" % v for v in expected]
    assert all(e.originator_id == a for e in events)


def test_topic_filter_reads_past_the_scan_budget(
    datastore: RedisDatastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic filter finds matches far after the start, over several bounded scripts."""
    monkeypatch.setattr(recorders_module, "SCAN_BUDGET", 7)
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    a = uuid4()
    topics = ["other"] * 30 + ["wanted"] + ["other"] * 30 + ["wanted"] * 3
    recorder.insert_events([_event(a, v, topic) for v, topic in enumerate(topics, 1)])

    found = recorder.select_notifications(None, 3, topics=["wanted"])
    assert [n.id for n in found] == [31, 62, 63]
    found = recorder.select_notifications(32, 10, topics=["wanted"], stop=62)
    assert [n.id for n in found] == [62]
    found = recorder.select_notifications(63, 10, topics=["wanted"], inclusive_of_start=False)
    assert [n.id for n in found] == [64]
    assert recorder.select_notifications(65, 10, topics=["wanted"]) == []


def test_empty_log_and_odd_bounds_give_nothing(datastore: RedisDatastore) -> None:
    """Zero limits, stops before starts and empty logs read as empty lists."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    assert recorder.select_notifications(None, 10) == []
    recorder.insert_events([_event(uuid4(), 1), _event(uuid4(), 1)])
    assert recorder.select_notifications(None, 0) == []
    assert recorder.select_notifications(2, 10, stop=1) == []
    assert [n.id for n in recorder.select_notifications(-5, 10)] == [1, 2]
    assert recorder.insert_events([]) == []


def test_keys_follow_the_documented_layout(datastore: RedisDatastore) -> None:
    """Every key sits under the prefix, in the layout the recorders module documents."""
    events = RedisApplicationRecorder(datastore, events_name="app:events")
    snapshots = RedisAggregateRecorder(datastore, events_name="app:snapshots")
    tracking = RedisTrackingRecorder(datastore, tracking_name="app:tracking")
    a, b = uuid4(), uuid4()
    events.insert_events([_event(a, 1), _event(a, 2), _event(b, 1)])
    snapshots.insert_events([_event(a, 2)])
    tracking.insert_tracking(Tracking("up", 1))

    assert list_keys(datastore.key_prefix) == {
        "app:events:log",
        "app:events:seq",
        f"app:events:v:{a}",
        f"app:events:v:{b}",
        f"app:snapshots:e:{a}",
        "app:tracking",
    }
    assert datastore.client.xlen(datastore.key("app:events", "log")) == 3


def test_a_lost_counter_refuses_to_insert_rather_than_corrupt(datastore: RedisDatastore) -> None:
    """If the id counter disappears (eviction), inserts fail before writing anything."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    a = uuid4()
    recorder.insert_events([_event(a, 1), _event(a, 2)])
    datastore.client.delete(recorder.seq_key)

    with pytest.raises(OperationalError, match="maxmemory-policy noeviction"):
        recorder.insert_events([_event(a, 3), _event(uuid4(), 1)])

    assert datastore.client.xlen(recorder.log_key) == 2
    assert [e.originator_version for e in recorder.select_events(a)] == [1, 2]


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        ([b"maxmemory-policy", b"noeviction"], False),
        ([b"maxmemory-policy", b"volatile-lru"], False),
        ({"maxmemory-policy": "allkeys-lru"}, True),
        ([b"maxmemory-policy", b"allkeys-random"], True),
        (rexc.ResponseError("unknown command 'CONFIG'"), False),
    ],
)
def test_create_table_refuses_a_redis_that_evicts_any_key(
    datastore: RedisDatastore,
    monkeypatch: pytest.MonkeyPatch,
    reply: object,
    refused: bool,
) -> None:
    """An allkeys-* eviction policy could drop events: preparing a recorder says so."""
    real_execute = datastore.execute

    def execute(*args: Any, **kwargs: Any) -> Any:
        if args[:2] != ("CONFIG", "GET"):
            return real_execute(*args, **kwargs)
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(datastore, "execute", execute)
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    if refused:
        with pytest.raises(OperationalError, match="noeviction"):
            recorder.create_table()
    else:
        recorder.create_table()
