"""redis-py errors surface as eventsourcing's persistence errors; the factory's settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
import redis
import redis.exceptions as rexc
from eventsourcing.persistence import (
    InfrastructureFactory,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.utils import Environment
from flowweaver_redis import (
    RedisApplicationRecorder,
    RedisDatastore,
    RedisFactory,
    RedisProcessRecorder,
    RedisSubscription,
)
from flowweaver_redis.datastore import translate_error

from tests.adapters.redis.support import REDIS_URL, UNREACHABLE_URL, delete_keys

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]


@pytest.fixture
def unreachable() -> Iterator[RedisProcessRecorder]:
    """A process recorder whose Redis refuses connections."""
    with RedisDatastore(UNREACHABLE_URL, key_prefix="unused") as datastore:
        yield RedisProcessRecorder(datastore, events_name="app:events")


CALLS: dict[str, Callable[[RedisProcessRecorder], Any]] = {
    "insert_events": lambda r: r.insert_events([StoredEvent(uuid4(), 1, "t", b"")]),
    "insert_events_with_tracking": lambda r: r.insert_events([], tracking=Tracking("up", 1)),
    "select_events": lambda r: r.select_events(uuid4()),
    "select_notifications": lambda r: r.select_notifications(None, 10),
    "select_notifications_by_topic": lambda r: r.select_notifications(None, 10, topics=["t"]),
    "max_notification_id": lambda r: r.max_notification_id(),
    "insert_tracking": lambda r: r.insert_tracking(Tracking("up", 1)),
    "max_tracking_id": lambda r: r.max_tracking_id("up"),
    "create_table": lambda r: r.create_table(),
    "subscribe": lambda r: next(iter(r.subscribe())),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_unreachable_redis_raises_operational_error(
    unreachable: RedisProcessRecorder, call: Callable[[RedisProcessRecorder], Any]
) -> None:
    """Every recorder call on a Redis that refuses connections raises OperationalError."""
    with pytest.raises(OperationalError) as caught:
        call(unreachable)
    assert isinstance(caught.value.__cause__, rexc.ConnectionError)


def test_wrong_key_type_raises_programming_error(datastore: RedisDatastore) -> None:
    """A key of the wrong type under the prefix makes Redis refuse: ProgrammingError."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    originator_id = uuid4()
    datastore.client.set(recorder.aggregate_key(originator_id), b"not a sorted set")
    with pytest.raises(ProgrammingError) as caught:
        recorder.select_events(originator_id)
    assert isinstance(caught.value.__cause__, rexc.ResponseError)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (rexc.ConnectionError("refused"), OperationalError),
        (rexc.AuthenticationError("bad password"), OperationalError),
        (rexc.BusyLoadingError("loading"), OperationalError),
        (rexc.TimeoutError("timed out"), OperationalError),
        (rexc.ReadOnlyError("replica"), OperationalError),
        (rexc.OutOfMemoryError("OOM"), OperationalError),
        (rexc.ResponseError("WRONGTYPE"), ProgrammingError),
        (rexc.DataError("bad argument"), InterfaceError),
        (rexc.InvalidResponse("garbled"), InterfaceError),
    ],
)
def test_redis_errors_map_to_persistence_errors(
    error: rexc.RedisError, expected: type[Exception]
) -> None:
    """Each redis-py error class maps to the eventsourcing error a caller can act on."""
    translated = translate_error(error)
    assert type(translated) is expected
    assert str(error) in str(translated)


def test_subscription_on_a_closed_datastore_reconnects(datastore: RedisDatastore) -> None:
    """Closing the pool only drops idle connections; recorders reconnect when used again."""
    recorder = RedisApplicationRecorder(datastore, events_name="app:events")
    recorder.insert_events([StoredEvent(uuid4(), 1, "t", b"")])
    datastore.close()
    with RedisSubscription(recorder, block_ms=1_000) as subscription:
        assert next(subscription).id == 1


def test_factory_reads_its_settings_from_the_application_environment() -> None:
    """REDIS_URL and REDIS_KEY_PREFIX are read with the application's name first."""
    env = Environment("Kennel", {"PERSISTENCE_MODULE": "flowweaver_redis"})
    env["KENNEL_REDIS_KEY_PREFIX"] = "kennel-prefix"
    env["REDIS_KEY_PREFIX"] = "general-prefix"
    env["REDIS_URL"] = REDIS_URL
    factory = InfrastructureFactory.construct(env)
    try:
        assert isinstance(factory, RedisFactory)
        assert factory.datastore.key_prefix == "kennel-prefix"
        recorder = factory.application_recorder()
        assert isinstance(recorder, RedisApplicationRecorder)
        assert recorder.log_key == "kennel-prefix:kennel:events:log"
    finally:
        factory.close()
        delete_keys("kennel-prefix")


def test_factory_defaults() -> None:
    """Without settings the factory uses Redis on localhost and the 'eventsourcing' prefix."""
    factory = RedisFactory(Environment("", {"CREATE_TABLE": "no"}))
    try:
        assert factory.datastore.key_prefix == "eventsourcing"
        kwargs = factory.datastore.pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6379, 0)
        assert factory.datastore.originator_id_type == "uuid"
        recorder = factory.process_recorder()
        assert isinstance(recorder, RedisProcessRecorder)
        assert recorder.tracking_key == "eventsourcing:default:tracking"
    finally:
        factory.close()


def test_factory_rejects_an_unknown_originator_id_type() -> None:
    """ORIGINATOR_ID_TYPE must be 'uuid' or 'text', as for the library's own modules."""
    with pytest.raises(OSError, match="Invalid ORIGINATOR_ID_TYPE 'int'"):
        RedisFactory(Environment("App", {"ORIGINATOR_ID_TYPE": "int"}))


def test_no_command_is_retried_after_a_failure() -> None:
    """The pool does not resend commands, so a lost reply never records a batch twice."""
    with RedisDatastore(REDIS_URL, key_prefix="unused") as datastore:
        connection = datastore.pool.make_connection()
        try:
            assert isinstance(connection, redis.Connection)
            assert connection.retry.get_retries() == 0
        finally:
            connection.disconnect()
