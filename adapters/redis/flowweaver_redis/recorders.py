"""Recorders that keep eventsourcing's stored events, notifications and tracking in Redis.

Key layout, under ``<prefix>:<name>`` where the factory names are ``<app>:events``,
``<app>:snapshots`` and ``<app>:tracking``:

==========================  ==========  ==================================================
key                         type        content
==========================  ==========  ==================================================
``<events>:log``            stream      the application sequence: entry id
                                        ``<notification id>-0``, fields ``i`` (originator
                                        id), ``v`` (version), ``t`` (topic), ``s`` (state)
``<events>:seq``            string      the last notification id given
``<events>:v:<id>``         sorted set  one aggregate's events: score = version,
                                        member = notification id
``<name>:e:<id>``           sorted set  one aggregate's events in an aggregate recorder
                                        (snapshots): score = version, member =
                                        ``<version> NUL <topic> NUL <state>``
``<tracking>``              hash        upstream application name -> last notification id
==========================  ==========  ==================================================

Each stored event is kept once: an application recorder's per-aggregate set holds only
notification ids, and reads join it to the log inside one Lua script.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

import redis.exceptions as rexc
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    Notification,
    OperationalError,
    ProcessRecorder,
    Recorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from flowweaver.backoff import Backoff
from flowweaver_redis import scripts
from flowweaver_redis.datastore import RedisDatastore, translate_error, translated_errors

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    import redis

# Most log entries one topic-filtered read script looks at before giving the server back.
SCAN_BUDGET: Final = 10_000
# Waits between CLIENT UNBLOCKs sent to a read that may not have reached Redis yet: 1 ms,
# doubling to 50 ms.
UNBLOCK_BACKOFF: Final = Backoff(base=0.001, cap=0.05)


def _score_bounds(gt: int | None, lte: int | None) -> tuple[str, str]:
    return ("-inf" if gt is None else f"({gt}", "+inf" if lte is None else str(lte))


def _limit_arg(limit: int | None) -> int:
    return -1 if limit is None else limit


class RedisRecorder(Recorder):
    """Base class of the Redis recorders: holds the datastore."""

    def __init__(self, datastore: RedisDatastore) -> None:
        assert isinstance(datastore, RedisDatastore)
        self.datastore = datastore

    def create_table(self) -> None:
        """Prepare Redis for this recorder: Redis has no tables, so load the scripts.

        Raises:
            OperationalError: Redis cannot be reached, or evicts keys it should keep.
        """
        self.datastore.check_eviction_policy()
        self.datastore.load_scripts()


class RedisAggregateRecorder(RedisRecorder, AggregateRecorder):
    """Records stored events in one sorted set per aggregate, with no application sequence."""

    def __init__(
        self, datastore: RedisDatastore, *, events_name: str = "default:events", **kwargs: Any
    ) -> None:
        super().__init__(datastore, **kwargs)
        self.events_name = events_name

    def aggregate_key(self, originator_id: UUID | str) -> str:
        """Return the key of one aggregate's events."""
        return self.datastore.key(
            self.events_name, "e", self.datastore.encode_originator_id(originator_id)
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record the events atomically.

        Raises:
            IntegrityError: one of the (aggregate, version) pairs is already recorded, or
                appears twice in the batch; then nothing is recorded.
            OperationalError: Redis cannot be reached.
        """
        if not stored_events:
            return None
        keys: dict[str, int] = {}
        args: list[bytes | str | int] = []
        for s in stored_events:
            index = keys.setdefault(self.aggregate_key(s.originator_id), len(keys) + 1)
            version = s.originator_version
            member = b"%d\x00%s\x00%s" % (version, s.topic.encode(), s.state)
            args += (index, version, member)
        with translated_errors():
            result = self.datastore.insert_aggregate_events(keys=list(keys), args=args)
        if result != 0:
            raise self._version_conflict(stored_events, result)
        return None

    def _version_conflict(self, stored_events: Sequence[StoredEvent], result: Any) -> Exception:
        code, detail = int(result[0]), int(result[1])
        s = stored_events[detail - 1]
        if code == scripts.CONFLICT_VERSION_REPEATED:
            return IntegrityError(
                f"Version {s.originator_version} of aggregate {s.originator_id} "
                "appears twice in the events to record"
            )
        return IntegrityError(
            f"Version {s.originator_version} of aggregate {s.originator_id} is already recorded"
        )

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """Return an aggregate's events with versions in (gt, lte], in version order.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        low, high = _score_bounds(gt, lte)
        command = ["ZRANGE", self.aggregate_key(originator_id)]
        command += [high, low, "BYSCORE", "REV"] if desc else [low, high, "BYSCORE"]
        command += ["LIMIT", "0", str(_limit_arg(limit))]
        with translated_errors():
            members = cast("list[bytes]", self.datastore.execute(*command))
        oid = self.datastore.decode_originator_id(
            self.datastore.encode_originator_id(originator_id)
        )
        events = []
        for member in members:
            version, topic, state = member.split(b"\x00", 2)
            events.append(
                StoredEvent(
                    originator_id=oid,
                    originator_version=int(version),
                    topic=topic.decode(),
                    state=state,
                )
            )
        return events


class RedisApplicationRecorder(RedisAggregateRecorder, ApplicationRecorder):
    """Records stored events in an application sequence (a Redis stream) and per aggregate.

    Notification ids are given inside the insert script, so their order is commit order and
    there are no gaps.
    """

    def __init__(
        self, datastore: RedisDatastore, *, events_name: str = "default:events", **kwargs: Any
    ) -> None:
        super().__init__(datastore, events_name=events_name, **kwargs)
        self.log_key = datastore.key(events_name, "log")
        self.seq_key = datastore.key(events_name, "seq")

    def aggregate_key(self, originator_id: UUID | str) -> str:
        """Return the key of one aggregate's versions and notification ids."""
        return self.datastore.key(
            self.events_name, "v", self.datastore.encode_originator_id(originator_id)
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record the events atomically and return their notification ids.

        Raises:
            IntegrityError: one of the (aggregate, version) pairs is already recorded, or
                appears twice in the batch; then nothing is recorded.
            OperationalError: Redis cannot be reached.
        """
        return self._insert(stored_events, None)

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        if not stored_events and tracking is None:
            return []
        keys: dict[str, int] = {}
        ids: list[str] = []
        event_args: list[bytes | str | int] = []
        for s in stored_events:
            encoded_id = self.datastore.encode_originator_id(s.originator_id)
            key = self.datastore.key(self.events_name, "v", encoded_id)
            index = keys.get(key)
            if index is None:
                index = keys[key] = len(keys) + 1
                ids.append(encoded_id)
            event_args += (index, s.originator_version, s.topic, s.state)
        all_keys = [self.seq_key, self.log_key, *keys]
        args: list[bytes | str | int] = [len(keys), len(stored_events), *ids, *event_args]
        if tracking is not None:
            all_keys.append(self._tracking_key())
            args += (tracking.application_name, tracking.notification_id)
        with translated_errors():
            result = self.datastore.insert_notified_events(keys=all_keys, args=args)
        if isinstance(result, list):
            if int(result[0]) == scripts.COUNTER_BEHIND_LOG:
                msg = (
                    f"The notification counter {self.seq_key} ({int(result[1])}) does not "
                    f"match the end of the log {self.log_key}: keys were lost, as they are "
                    "when Redis evicts them; run it with maxmemory-policy noeviction"
                )
                raise OperationalError(msg)
            if int(result[0]) == scripts.CONFLICT_TRACKING:
                assert tracking is not None
                raise self._tracking_conflict(tracking, int(result[1]))
            raise self._version_conflict(stored_events, result)
        first = int(result)
        return list(range(first, first + len(stored_events)))

    def _tracking_key(self) -> str:
        msg = "This recorder does not record tracking"
        raise NotImplementedError(msg)

    def _tracking_conflict(self, tracking: Tracking, current: int) -> IntegrityError:
        return IntegrityError(
            f"Tracking notification ID {tracking.notification_id} for application "
            f"{tracking.application_name!r} is not greater than the recorded {current}"
        )

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """Return an aggregate's events with versions in (gt, lte], in version order.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        low, high = _score_bounds(gt, lte)
        bounds = [high, low, "desc"] if desc else [low, high, "asc"]
        with translated_errors():
            flat = cast(
                "list[bytes]",
                self.datastore.select_notified_events(
                    keys=[self.aggregate_key(originator_id), self.log_key],
                    args=[*bounds, _limit_arg(limit)],
                ),
            )
        oid = self.datastore.decode_originator_id(
            self.datastore.encode_originator_id(originator_id)
        )
        return [
            StoredEvent(
                originator_id=oid,
                originator_version=int(flat[i]),
                topic=flat[i + 1].decode(),
                state=flat[i + 2],
            )
            for i in range(0, len(flat), 3)
        ]

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Return up to ``limit`` notifications with ids from ``start`` to ``stop``.

        With ``inclusive_of_start=False`` the ids are greater than ``start``. With
        ``topics``, only the notifications of those topics count, filtered by Redis.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        notifications, _ = self._read_log(max(first, 1), limit, stop, topics)
        return notifications

    def _read_log(
        self, first: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> tuple[list[Notification], int]:
        """Return notifications from id ``first``, and the last notification id looked at."""
        if limit <= 0 or (stop is not None and stop < first):
            return [], first - 1
        high = "+" if stop is None else f"{stop}-0"
        if not topics:
            with translated_errors():
                entries = self.datastore.execute(
                    "XRANGE", self.log_key, f"{first}-0", high, "COUNT", limit
                )
            notifications = [self._notification(e) for e in entries]
            return notifications, notifications[-1].id if notifications else first - 1
        notifications = []
        looked_at = first - 1
        low = f"{first}-0"
        while len(notifications) < limit:
            with translated_errors():
                last, exhausted, entries = self.datastore.scan_notifications(
                    keys=[self.log_key],
                    args=[low, high, limit - len(notifications), SCAN_BUDGET, *topics],
                )
            notifications += [self._notification(e) for e in entries]
            if last:
                looked_at = _notification_id(last)
                low = f"({last.decode()}"
            if exhausted:
                break
        return notifications, looked_at

    def _notification(self, entry: list[Any]) -> Notification:
        entry_id, fields = entry
        return Notification(
            id=_notification_id(entry_id),
            originator_id=self.datastore.decode_originator_id(fields[1].decode()),
            originator_version=int(fields[3]),
            topic=fields[5].decode(),
            state=fields[7],
        )

    def max_notification_id(self) -> int | None:
        """Return the last notification id given, or None when nothing is recorded.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        with translated_errors():
            value = self.datastore.client.get(self.seq_key)
        return None if value is None else int(cast("bytes", value))

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        """Return an iterator of the notifications after ``gt``, that waits for new ones.

        It reads the log with XREAD BLOCK, so new notifications arrive without polling.
        """
        return RedisSubscription(recorder=self, gt=gt, topics=topics)


def _notification_id(entry_id: bytes) -> int:
    return int(entry_id.partition(b"-")[0])


class RedisSubscription(Subscription[RedisApplicationRecorder]):
    """Notifications after a position, read live from the log with XREAD BLOCK.

    Iterating blocks until a new notification is recorded. ``stop()``, from any thread,
    ends the iteration at once: it sets the flag and unblocks the pending read with CLIENT
    UNBLOCK. A read blocks at most ``block_ms`` in any case, so a lost wake-up only delays.
    """

    def __init__(
        self,
        recorder: RedisApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        *,
        page_size: int = 500,
        block_ms: int = 2_000,
    ) -> None:
        assert isinstance(recorder, RedisApplicationRecorder)
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._page_size = page_size
        timeout = recorder.datastore.socket_timeout()
        # A blocked read must end before redis-py's socket timeout would break it.
        if timeout is not None:
            block_ms = min(block_ms, int(timeout * 500))
        self._block_ms = max(block_ms, 1)  # BLOCK 0 would mean forever
        self._cursor = max(gt or 0, 0)  # the last notification id looked at
        self._topic_set = frozenset(topics)
        self._buffer: deque[Notification] = deque()
        self._lock = threading.Lock()
        self._reader: redis.Redis | None = None
        self._reader_id: int | None = None
        self._idle = threading.Event()
        self._idle.set()

    def __next__(self) -> Notification:
        while True:
            if self._has_been_stopped:
                self._close_reader()
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            self._fetch()

    def _fetch(self) -> None:
        if self._topics:
            # Let Redis skip the other topics while there is a backlog.
            recorder = self._recorder
            notifications, looked_at = recorder._read_log(
                self._cursor + 1, self._page_size, None, self._topics
            )
            self._cursor = max(self._cursor, looked_at)
            if notifications:
                self._buffer.extend(notifications)
                return
        for entry in self._read_blocking():
            notification = self._recorder._notification(entry)
            self._cursor = notification.id
            if not self._topic_set or notification.topic in self._topic_set:
                self._buffer.append(notification)

    def _read_blocking(self) -> list[Any]:
        if self._reader is None:
            with translated_errors():
                reader = self._recorder.datastore.blocking_client()
                try:
                    self._reader_id = int(reader.client_id())
                except BaseException:
                    reader.close()
                    raise
            self._reader = reader
        with self._lock:
            if self._has_been_stopped:
                return []
            # From here until the read returns, stop() knows to unblock it.
            self._idle.clear()
        try:
            with translated_errors():
                reply = self._recorder.datastore.execute(
                    "XREAD",
                    "COUNT",
                    self._page_size,
                    "BLOCK",
                    self._block_ms,
                    "STREAMS",
                    self._recorder.log_key,
                    f"{self._cursor}-0",
                    client=self._reader,
                )
        except BaseException:
            # The connection may be broken, or come back with another client id.
            self._close_reader()
            raise
        finally:
            self._idle.set()
        if not reply:
            return []
        # One stream was read: RESP2 answers [[name, entries]], RESP3 {name: entries}.
        streams = list(reply.values()) if isinstance(reply, dict) else [s[1] for s in reply]
        return cast("list[Any]", streams[0])

    def stop(self) -> None:
        """Stop the subscription; an iteration blocked in another thread ends promptly."""
        with self._lock:
            super().stop()
            reading = not self._idle.is_set()
            reader_id = self._reader_id
        if not reading or reader_id is None:
            return
        # The read may not have reached Redis yet, in which case CLIENT UNBLOCK misses it:
        # try again until the reader is idle, waiting a little longer each time.
        client = self._recorder.datastore.client
        waited = 0.0
        for attempt in itertools.count():
            if waited >= self._block_ms / 1000:
                return
            try:
                if client.client_unblock(reader_id):
                    return
            except rexc.RedisError:
                return  # the read ends by itself within block_ms
            delay = UNBLOCK_BACKOFF.delay(attempt)
            if self._idle.wait(delay):
                return
            waited += delay

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            if self._idle.is_set():
                self._close_reader()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        self._reader_id = None
        if reader is not None:
            try:
                reader.close()
            except rexc.RedisError as e:  # pragma: no cover - closing a broken connection
                raise translate_error(e) from e


class RedisTrackingRecorder(RedisRecorder, TrackingRecorder):
    """Records the last notification id processed from each upstream application, in a hash.

    Tracking ids only go up: recording an id not greater than the recorded one fails.
    """

    def __init__(
        self,
        datastore: RedisDatastore,
        *,
        tracking_name: str = "default:tracking",
        **kwargs: Any,
    ) -> None:
        super().__init__(datastore, **kwargs)
        self.tracking_name = tracking_name
        self.tracking_key = datastore.key(tracking_name)

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record that ``tracking.notification_id`` of the application has been processed.

        Raises:
            IntegrityError: that id, or a greater one, is already recorded.
            OperationalError: Redis cannot be reached.
        """
        with translated_errors():
            result = self.datastore.insert_tracking(
                keys=[self.tracking_key],
                args=[tracking.application_name, tracking.notification_id],
            )
        if result != 0:
            current = int(result[1])
            msg = (
                f"Tracking notification ID {tracking.notification_id} for application "
                f"{tracking.application_name!r} is not greater than the recorded {current}"
            )
            raise IntegrityError(msg)

    def max_tracking_id(self, application_name: str) -> int | None:
        """Return the last notification id recorded for the application, if any.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        with translated_errors():
            value = self.datastore.client.hget(self.tracking_key, application_name)
        return None if value is None else int(cast("bytes", value))

    def has_tracking_id(self, application_name: str, notification_id: int | None) -> bool:
        """Return True when ``notification_id`` is None or that id has been processed.

        Raises:
            OperationalError: Redis cannot be reached.
        """
        if notification_id is None:
            return True
        max_tracking_id = self.max_tracking_id(application_name)
        return max_tracking_id is not None and max_tracking_id >= notification_id


class RedisProcessRecorder(RedisTrackingRecorder, RedisApplicationRecorder, ProcessRecorder):
    """Records events and the tracking record of what caused them, in one atomic script."""

    def __init__(
        self,
        datastore: RedisDatastore,
        *,
        events_name: str = "default:events",
        tracking_name: str = "default:tracking",
    ) -> None:
        super().__init__(datastore, events_name=events_name, tracking_name=tracking_name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record the events and the optional ``tracking`` keyword argument atomically.

        Raises:
            IntegrityError: an (aggregate, version) pair is already recorded or repeated,
                or the tracking id is not greater than the recorded one; then nothing is
                recorded.
            OperationalError: Redis cannot be reached.
        """
        tracking: Tracking | None = kwargs.get("tracking")
        return self._insert(stored_events, tracking)

    def _tracking_key(self) -> str:
        return self.tracking_key
