"""Live tailing of the log with XREAD BLOCK, and stopping it from any thread."""

from __future__ import annotations

import queue
import threading
import time
from uuid import uuid4

import pytest
from eventsourcing.persistence import Notification, StoredEvent
from flowweaver_redis import RedisApplicationRecorder, RedisDatastore, RedisSubscription

from tests.adapters.redis.support import REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

WAIT = 5.0  # seconds a test waits for something that should take milliseconds


def _events(n: int, topic: str = "t") -> list[StoredEvent]:
    originator_id = uuid4()
    return [StoredEvent(originator_id, v, topic, b"{}") for v in range(1, n + 1)]


def _tail(
    subscription: RedisSubscription, into: queue.Queue[Notification | None], count: int
) -> threading.Thread:
    """Start a thread that puts ``count`` notifications in the queue, then None when done."""

    def run() -> None:
        try:
            with subscription:
                for i, notification in enumerate(subscription, 1):
                    into.put(notification)
                    if i == count:
                        break
        finally:
            into.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def recorder(datastore: RedisDatastore) -> RedisApplicationRecorder:
    """An application recorder on the test's own keys."""
    return RedisApplicationRecorder(datastore, events_name="app:events")


def test_subscription_delivers_events_recorded_after_it_started(
    recorder: RedisApplicationRecorder,
) -> None:
    """A subscriber blocked on the log wakes for each new batch, in notification id order."""
    recorder.insert_events(_events(2))
    received: queue.Queue[Notification | None] = queue.Queue()
    thread = _tail(RedisSubscription(recorder, gt=2, block_ms=30_000), received, 5)

    recorder.insert_events(_events(3))
    first = [received.get(timeout=WAIT) for _ in range(3)]
    recorder.insert_events(_events(2))
    second = [received.get(timeout=WAIT) for _ in range(2)]

    assert [n.id for n in first + second if n] == [3, 4, 5, 6, 7]
    assert received.get(timeout=WAIT) is None
    thread.join(WAIT)
    assert not thread.is_alive()


def test_stop_from_another_thread_ends_a_blocked_iteration_promptly(
    recorder: RedisApplicationRecorder,
) -> None:
    """stop() wakes a reader blocked in XREAD at once, well before its block timeout."""
    for _ in range(10):
        subscription = RedisSubscription(
            recorder, gt=recorder.max_notification_id(), block_ms=60_000
        )
        received: queue.Queue[Notification | None] = queue.Queue()
        thread = _tail(subscription, received, 1_000)
        recorder.insert_events(_events(1))
        assert received.get(timeout=WAIT) is not None  # the reader is now about to block

        started = time.monotonic()
        subscription.stop()
        assert received.get(timeout=WAIT) is None
        thread.join(WAIT)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1.0


def test_subscription_with_topics_delivers_only_those_topics(
    recorder: RedisApplicationRecorder,
) -> None:
    """A topic filter applies to the backlog and to live events alike."""
    recorder.insert_events(_events(2, "a") + _events(1, "b"))
    received: queue.Queue[Notification | None] = queue.Queue()
    thread = _tail(RedisSubscription(recorder, topics=["b"], block_ms=30_000), received, 3)

    recorder.insert_events(_events(3, "a"))
    recorder.insert_events(_events(2, "b"))
    notifications = [received.get(timeout=WAIT) for _ in range(3)]

    assert [(n.id, n.topic) for n in notifications if n] == [(3, "b"), (7, "b"), (8, "b")]
    thread.join(WAIT)


def test_subscriber_sees_every_id_once_while_writers_race(
    recorder: RedisApplicationRecorder,
) -> None:
    """With four concurrent writers, the subscriber reads ids 1..N with no gap or repeat."""
    writers, batches, batch_size = 4, 50, 10
    total = writers * batches * batch_size
    received: queue.Queue[Notification | None] = queue.Queue()
    thread = _tail(RedisSubscription(recorder, page_size=64, block_ms=30_000), received, total)

    def write() -> None:
        for _ in range(batches):
            recorder.insert_events(_events(batch_size))

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)

    ids = [n.id for n in (received.get(timeout=WAIT) for _ in range(total)) if n]
    assert ids == list(range(1, total + 1))
    thread.join(WAIT)


def test_blocking_reads_end_before_the_socket_timeout(key_prefix: str) -> None:
    """With socket_timeout in the URL, a quiet XREAD gives up in time and finds nothing."""
    # A 1 s timeout leaves a loaded machine half a second of slack around the 0.5 s block.
    with RedisDatastore(f"{REDIS_URL}?socket_timeout=1", key_prefix=key_prefix) as datastore:
        recorder = RedisApplicationRecorder(datastore, events_name="app:events")
        with RedisSubscription(recorder, block_ms=30_000) as subscription:
            assert subscription._block_ms == 500
            assert subscription._read_blocking() == []
            recorder.insert_events(_events(1))
            assert next(subscription).id == 1
