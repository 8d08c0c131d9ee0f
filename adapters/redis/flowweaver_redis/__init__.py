"""A persistence module for the eventsourcing library that keeps everything in Redis.

Use it with ``PERSISTENCE_MODULE=flowweaver_redis``; see ``RedisFactory`` for the settings.
The Flowweaver event store on top of it is :mod:`flowweaver_redis.store` (``redis://`` URLs).
"""

from flowweaver_redis.datastore import RedisDatastore
from flowweaver_redis.durability import durability_warnings
from flowweaver_redis.factory import Factory, RedisFactory
from flowweaver_redis.recorders import (
    RedisAggregateRecorder,
    RedisApplicationRecorder,
    RedisProcessRecorder,
    RedisSubscription,
    RedisTrackingRecorder,
)

__all__ = [
    "Factory",
    "RedisAggregateRecorder",
    "RedisApplicationRecorder",
    "RedisDatastore",
    "RedisFactory",
    "RedisProcessRecorder",
    "RedisSubscription",
    "RedisTrackingRecorder",
    "durability_warnings",
]
