"""The eventsourcing library's own reusable recorder and factory test cases, run on Redis."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.utils import Environment
from flowweaver_redis import (
    RedisAggregateRecorder,
    RedisApplicationRecorder,
    RedisFactory,
    RedisProcessRecorder,
    RedisTrackingRecorder,
)

from tests.adapters.redis.support import REDIS_URL, RedisKeys, delete_keys, new_key_prefix

# The library's test cases import its AES cipher, which needs pycryptodome: say so plainly
# rather than fail to collect when the dev environment lacks it.
pytest.importorskip(
    "Crypto", reason="eventsourcing.tests.persistence needs pycryptodome (eventsourcing[crypto])"
)

from eventsourcing.tests import persistence as cases

pytestmark = pytest.mark.redis


class WithTextOriginatorID:
    """Uses string aggregate ids, read back as strings."""

    originator_id_type = "text"

    def new_originator_id(self) -> UUID | str:
        return f"test-{uuid4()}"


class TestRedisAggregateRecorder(RedisKeys, cases.AggregateRecorderTestCase):
    """The library's aggregate recorder cases (as used for snapshots)."""

    def create_recorder(self) -> AggregateRecorder:
        return RedisAggregateRecorder(self.new_datastore(), events_name="app:snapshots")


class TestRedisAggregateRecorderWithTextOriginatorID(
    WithTextOriginatorID, TestRedisAggregateRecorder
):
    """The library's aggregate recorder cases, with string aggregate ids."""


class TestRedisApplicationRecorder(
    RedisKeys, cases.ApplicationRecorderTestCase[RedisApplicationRecorder]
):
    """The library's application recorder cases, subscriptions included."""

    def create_recorder(self) -> RedisApplicationRecorder:
        return RedisApplicationRecorder(self.new_datastore(), events_name="app:events")

    def test_insert_subscribe(self) -> None:
        super().optional_test_insert_subscribe()


class TestRedisApplicationRecorderWithTextOriginatorID(
    WithTextOriginatorID, TestRedisApplicationRecorder
):
    """The library's application recorder cases, with string aggregate ids."""


class TestRedisNonInterleavingNotificationIDs(
    RedisKeys, cases.NonInterleavingNotificationIDsBaseCase
):
    """Two concurrent batches get two unbroken runs of notification ids."""

    def create_recorder(self) -> ApplicationRecorder:
        return RedisApplicationRecorder(self.new_datastore(), events_name="app:events")


class TestRedisTrackingRecorder(RedisKeys, cases.TrackingRecorderTestCase):
    """The library's tracking recorder cases."""

    def create_recorder(self) -> TrackingRecorder:
        return RedisTrackingRecorder(self.new_datastore(), tracking_name="app:tracking")


class TestRedisProcessRecorder(RedisKeys, cases.ProcessRecorderTestCase):
    """The library's process recorder cases: events and tracking recorded together."""

    def create_recorder(self) -> ProcessRecorder:
        return RedisProcessRecorder(
            self.new_datastore(), events_name="app:events", tracking_name="app:tracking"
        )


class TestRedisProcessRecorderWithTextOriginatorID(WithTextOriginatorID, TestRedisProcessRecorder):
    """The library's process recorder cases, with string aggregate ids."""


class TestRedisInfrastructureFactory(cases.InfrastructureFactoryTestCase[RedisFactory]):
    """The library's factory cases, with PERSISTENCE_MODULE=flowweaver_redis."""

    class RedisTrackingRecorderSubclass(RedisTrackingRecorder):
        """A tracking recorder subclass, chosen by argument or by topic."""

    def setUp(self) -> None:
        self.key_prefix = new_key_prefix()
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "flowweaver_redis"
        self.env[RedisFactory.REDIS_URL] = REDIS_URL
        self.env[RedisFactory.REDIS_KEY_PREFIX] = self.key_prefix
        super().setUp()

    def tearDown(self) -> None:
        try:
            super().tearDown()
        finally:
            delete_keys(self.key_prefix)

    def expected_factory_class(self) -> type[RedisFactory]:
        return RedisFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return RedisAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return RedisApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return RedisTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return self.RedisTrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return RedisProcessRecorder
