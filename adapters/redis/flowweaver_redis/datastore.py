"""The connection to Redis that recorders share: client, key names, scripts, error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Literal
from uuid import UUID

import redis
import redis.exceptions as rexc
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)

from flowweaver_redis import scripts

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_KEY_PREFIX: Final = "eventsourcing"

OriginatorIDType = Literal["uuid", "text"]


def _raw(response: Any, **_: Any) -> Any:
    return response


def translate_error(error: rexc.RedisError) -> PersistenceError:
    """Return the eventsourcing error that stands for a redis-py error."""
    if isinstance(
        error,
        rexc.ConnectionError  # refused, reset, auth failed, server loading
        | rexc.TimeoutError
        | rexc.ReadOnlyError  # a replica, or a primary demoted during fail-over
        | rexc.OutOfMemoryError
        | rexc.BusyLoadingError,
    ):
        return OperationalError(str(error))
    if isinstance(error, rexc.ResponseError):  # the server refused the command as sent
        return ProgrammingError(str(error))
    return InterfaceError(str(error))  # bad arguments, protocol errors: the client side


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise redis-py errors as eventsourcing's persistence errors.

    Raises:
        OperationalError: Redis is unreachable, timed out, read-only or out of memory.
        ProgrammingError: Redis refused a command (wrong key type, script error).
        InterfaceError: redis-py rejected the call before or after talking to Redis.
    """
    try:
        yield
    except rexc.RedisError as e:
        raise translate_error(e) from e


class RedisDatastore:
    """A pool of connections to one Redis database, and the names of keys under one prefix.

    Every key a recorder touches starts with ``key_prefix + ":"``. In Redis Cluster, put a
    hash tag in the prefix (``{fw}``) so that every key lands in one slot, as the atomic
    scripts need. Extra connection options go in the URL's query string
    (``?socket_timeout=5&health_check_interval=30``).

    Commands are not retried: a write whose reply was lost must not be sent twice, and the
    caller sees an ``OperationalError`` it can act on.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        originator_id_type: OriginatorIDType = "uuid",
    ) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.originator_id_type: OriginatorIDType = originator_id_type
        with translated_errors():
            # RESP2 unless the URL asks otherwise: its replies have one shape in every
            # redis-py version (redis-py 8 speaks RESP3 by default).
            self.pool = redis.ConnectionPool.from_url(url, protocol=2)
            self.client = self._new_client(self.pool)
        self.insert_aggregate_events = self.client.register_script(scripts.INSERT_AGGREGATE_EVENTS)
        self.insert_notified_events = self.client.register_script(scripts.INSERT_NOTIFIED_EVENTS)
        self.insert_tracking = self.client.register_script(scripts.INSERT_TRACKING)
        self.select_notified_events = self.client.register_script(scripts.SELECT_NOTIFIED_EVENTS)
        self.scan_notifications = self.client.register_script(scripts.SCAN_NOTIFICATIONS)

    @staticmethod
    def _new_client(pool: redis.ConnectionPool, **kwargs: Any) -> redis.Redis:
        client = redis.Redis(connection_pool=pool, **kwargs)
        # Stream replies stay in their wire shape, rather than each redis-py version's
        # parsed shape.
        client.set_response_callback("XRANGE", _raw)
        client.set_response_callback("XREAD", _raw)
        return client

    def execute(self, *args: bytes | str | int, client: redis.Redis | None = None) -> Any:
        """Send one command, by default on the shared client, and return its raw reply."""
        target = self.client if client is None else client
        return target.execute_command(*args)  # type: ignore[no-untyped-call]

    def key(self, *parts: str) -> str:
        """Return the full name of a key under the prefix."""
        return ":".join((self.key_prefix, *parts))

    def encode_originator_id(self, originator_id: UUID | str) -> str:
        """Return the text that stands for an aggregate id in keys and in the log."""
        return str(originator_id)

    def decode_originator_id(self, text: str) -> UUID | str:
        """Return the aggregate id stored as ``text``, typed as configured."""
        return UUID(text) if self.originator_id_type == "uuid" else text

    def load_scripts(self) -> None:
        """Load the Lua scripts into Redis now, so that the first calls need no retry."""
        with translated_errors():
            for script in (
                self.insert_aggregate_events,
                self.insert_notified_events,
                self.insert_tracking,
                self.select_notified_events,
                self.scan_notifications,
            ):
                script.sha = self.client.script_load(script.script)

    def check_eviction_policy(self) -> None:
        """Refuse a Redis that may evict keys without a TTL, as recorded events have none.

        Raises:
            OperationalError: the maxmemory-policy is an ``allkeys-*`` one.
        """
        try:
            reply = self.execute("CONFIG", "GET", "maxmemory-policy")
        except rexc.ResponseError:
            return  # CONFIG is often disabled on managed Redis: nothing to check with
        except rexc.RedisError as e:
            raise translate_error(e) from e
        # RESP2 answers [name, value], RESP3 {name: value}; redis-py may decode either.
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1:]
        policy = values[0] if values else b""
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        if policy.startswith("allkeys-"):
            msg = (
                f"Redis at {self.url} has maxmemory-policy {policy}, which can evict "
                "recorded events; use noeviction (or a volatile-* policy)"
            )
            raise OperationalError(msg)

    def blocking_client(self) -> redis.Redis:
        """Return a client that holds one connection of its own, for blocking reads.

        Close it with ``close()``, which puts the connection back in the pool.
        """
        with translated_errors():
            return self._new_client(self.pool, single_connection_client=True)

    def socket_timeout(self) -> float | None:
        """Return the read timeout of the pool's connections, in seconds, if there is one."""
        timeout = self.pool.connection_kwargs.get("socket_timeout")
        return float(timeout) if timeout else None

    def close(self) -> None:
        """Close every connection in the pool."""
        self.client.close()
        self.pool.disconnect()

    def __enter__(self) -> RedisDatastore:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()
