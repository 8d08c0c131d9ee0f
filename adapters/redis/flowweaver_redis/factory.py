"""The eventsourcing infrastructure factory that builds the Redis recorders."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from flowweaver_redis.datastore import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_URL,
    OriginatorIDType,
    RedisDatastore,
)
from flowweaver_redis.recorders import (
    RedisAggregateRecorder,
    RedisApplicationRecorder,
    RedisProcessRecorder,
    RedisTrackingRecorder,
)

if TYPE_CHECKING:
    from eventsourcing.persistence import (
        AggregateRecorder,
        ApplicationRecorder,
        ProcessRecorder,
    )

_TRedisTrackingRecorder = TypeVar("_TRedisTrackingRecorder", bound=RedisTrackingRecorder)


class RedisFactory(InfrastructureFactory[RedisTrackingRecorder]):
    """Builds Redis recorders for an application, configured by its environment.

    ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) says where Redis is,
    ``REDIS_KEY_PREFIX`` (default ``eventsourcing``) starts every key, and
    ``ORIGINATOR_ID_TYPE`` (``uuid`` or ``text``) types the ids read back from the log.
    Each application's keys are under ``<prefix>:<application name, lower case>``.
    """

    REDIS_URL = "REDIS_URL"
    REDIS_KEY_PREFIX = "REDIS_KEY_PREFIX"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    aggregate_recorder_class = RedisAggregateRecorder
    application_recorder_class = RedisApplicationRecorder
    tracking_recorder_class = RedisTrackingRecorder
    process_recorder_class = RedisProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        """Read the environment and make the connection pool (it connects lazily).

        Raises:
            OSError: ORIGINATOR_ID_TYPE is neither ``uuid`` nor ``text``.
        """
        super().__init__(env)
        originator_id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if originator_id_type not in ("uuid", "text"):
            msg = (
                f"Invalid {self.ORIGINATOR_ID_TYPE} '{originator_id_type}', "
                "must be 'uuid' or 'text'"
            )
            raise OSError(msg)
        self.datastore = RedisDatastore(
            self.env.get(self.REDIS_URL) or DEFAULT_URL,
            key_prefix=self.env.get(self.REDIS_KEY_PREFIX) or DEFAULT_KEY_PREFIX,
            originator_id_type=cast("OriginatorIDType", originator_id_type),
        )

    def _name(self, purpose: str) -> str:
        return f"{self.env.name.lower() or 'default'}:{purpose}"

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """Return a recorder of aggregate events with no application sequence (snapshots)."""
        recorder = type(self).aggregate_recorder_class(
            self.datastore, events_name=self._name(purpose)
        )
        self._maybe_prepare(recorder)
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        """Return the application's recorder of events and notifications."""
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        recorder_class: type[RedisApplicationRecorder] = (
            resolve_topic(topic) if topic else type(self).application_recorder_class
        )
        assert issubclass(recorder_class, RedisApplicationRecorder)
        recorder = recorder_class(self.datastore, events_name=self._name("events"))
        self._maybe_prepare(recorder)
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[_TRedisTrackingRecorder] | None = None
    ) -> _TRedisTrackingRecorder:
        """Return a recorder of the positions processed in upstream applications."""
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = cast(
                "type[_TRedisTrackingRecorder]",
                resolve_topic(topic) if topic else type(self).tracking_recorder_class,
            )
        assert issubclass(tracking_recorder_class, RedisTrackingRecorder)
        recorder = tracking_recorder_class(self.datastore, tracking_name=self._name("tracking"))
        self._maybe_prepare(recorder)
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        """Return the recorder of events with the tracking of what caused them."""
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        recorder_class: type[RedisProcessRecorder] = (
            resolve_topic(topic) if topic else type(self).process_recorder_class
        )
        assert issubclass(recorder_class, RedisProcessRecorder)
        recorder = recorder_class(
            self.datastore,
            events_name=self._name("events"),
            tracking_name=self._name("tracking"),
        )
        self._maybe_prepare(recorder)
        return recorder

    def _maybe_prepare(self, recorder: RedisAggregateRecorder | RedisTrackingRecorder) -> None:
        if strtobool(self.env.get(self.CREATE_TABLE) or "yes"):
            recorder.create_table()

    def close(self) -> None:
        """Close the connections to Redis."""
        self.datastore.close()


Factory = RedisFactory
