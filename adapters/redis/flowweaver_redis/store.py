"""The Flowweaver event store on Redis: this package's recorders, a run index, XREAD tailing.

Open it by URL::

    redis://[[user]:password@]host[:port][/db]?prefix=NAME

Options: ``prefix`` (default ``flowweaver``; every key starts with ``NAME:``, so stores with
other prefixes share a database without meeting), ``poll_interval`` (seconds between polls
of :meth:`RedisEventStore.wait_for_log`, only where the server refuses blocking reads),
``ping_timeout`` (seconds :meth:`RedisEventStore.ping` waits), and the redis-py connection
options ``socket_timeout`` (default 10), ``socket_connect_timeout`` (default 5),
``health_check_interval``, ``client_name`` and ``max_connections``.

Keys, under ``<prefix>:``:

==========================  ==========  ==================================================
key                         type        content
==========================  ==========  ==================================================
``events:log``              stream      the log: every run event and workflow
                                        registration, entry id ``<position>-0``
``events:seq``              string      the last position given
``events:v:<aggregate>``    sorted set  a run's (or workflow's) versions -> positions
``snapshots:e:<run>``       sorted set  saved run states, score = version
``index:position``          string      the log position the run index has caught up to
``index:rows``              hash        run id -> JSON ``[sequence, run row]``
``index:all``               sorted set  run ids by sequence (the RunStarted position)
``index:wf:<workflow>``     sorted set  the same, for one workflow
``index:status:<status>``   sorted set  the same, for one status
``index:ws:<status>:<wf>``  sorted set  the same, for one status of one workflow
``index:children:<run>``    sorted set  the same, for the runs forked from one run
``index:workflows``         hash        workflow id -> latest version
==========================  ==========  ==================================================

The log and the per-run sets are :class:`flowweaver_redis.RedisApplicationRecorder`'s: an
append over several runs is checked and written by one Lua script, positions are given in
commit order without gaps. The index is advanced by one Lua script that checks its position
first, so two processes catching up at once cannot apply a stretch of the log twice.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import msgspec
import redis
import redis.exceptions as rexc
import structlog
from eventsourcing.persistence import PersistenceError

from flowweaver.errors import StoreConfigError, StoreError
from flowweaver.ports import RunRow
from flowweaver.store.base import (
    ACTIVE_STATUSES,
    DEFAULT_SNAPSHOT_INTERVAL,
    IndexChanges,
    RecorderEventStore,
    RunIndex,
)
from flowweaver_redis.datastore import RedisDatastore
from flowweaver_redis.durability import durability_warnings
from flowweaver_redis.recorders import (
    UNBLOCK_BACKOFF,
    RedisAggregateRecorder,
    RedisApplicationRecorder,
)

log = structlog.get_logger(__name__)

DEFAULT_PREFIX: Final = "flowweaver"
EVENTS_NAME: Final = "events"
SNAPSHOTS_NAME: Final = "snapshots"
INDEX_NAME: Final = "index"
# Longest single XREAD BLOCK of wait_for_log: short enough that close() and deadlines are
# kept and a dead connection is noticed, long enough that an idle tailer costs nothing.
MAX_BLOCK: Final = 2.0
_PREFIX = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no spaces
# redis-py connection options a store URL may carry, and how to check each.
_CLIENT_OPTIONS: Final = {
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "health_check_interval": int,
    "max_connections": int,
    "client_name": str,
}
_STORE_OPTIONS: Final = {"poll_interval": float, "ping_timeout": float}


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Where the store connects and how; :func:`parse_url` reads them from a store URL."""

    base_url: str = "redis://127.0.0.1:6379/0"
    """The server and database, with credentials, without a query."""
    prefix: str = DEFAULT_PREFIX
    poll_interval: float = 0.25
    ping_timeout: float = 2.0
    client_options: dict[str, Any] = field(
        default_factory=lambda: {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
    )

    def connection_url(self, **overrides: Any) -> str:
        """Return the redis-py URL of the server with the client options (and overrides)."""
        options = {**self.client_options, **overrides}
        return f"{self.base_url}?{urlencode(options)}" if options else self.base_url

    @property
    def socket_timeout(self) -> float | None:
        """Return the read timeout of pooled connections, in seconds, if there is one."""
        value = self.client_options.get("socket_timeout")
        return float(value) if value else None

    def where(self) -> str:
        """Return the server, database and prefix, without credentials, for messages."""
        parts = urlsplit(self.base_url)
        host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        return f"{host}{parts.path or '/0'} prefix {self.prefix}"


def parse_url(url: str) -> RedisSettings:
    """Read the settings of a ``redis://`` store URL.

    Raises:
        StoreConfigError: the URL is not a Redis URL or has bad options.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "redis":
        raise StoreConfigError(f"not a Redis store URL (redis://host:port/db): {url!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as e:
        raise StoreConfigError(f"bad port in {url!r}") from e
    db = parts.path.strip("/") or "0"
    if not (db.isascii() and db.isdigit()):
        raise StoreConfigError(f"the database in {url!r} must be a number (redis://host:port/0)")
    options = {
        key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()
    }
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    if not _PREFIX.match(prefix):
        raise StoreConfigError(
            f"prefix must be 1 to 200 printable ASCII characters without spaces, not {prefix!r}"
        )
    store_options = {
        name: _number(name, options.pop(name), kind)
        for name, kind in _STORE_OPTIONS.items()
        if name in options
    }
    client_options: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
    for name, kind in _CLIENT_OPTIONS.items():
        if name in options:
            text = options.pop(name)
            client_options[name] = text if kind is str else _number(name, text, kind)
    if options:
        raise StoreConfigError(f"unknown Redis store option(s): {', '.join(sorted(options))}")
    netloc = parts.netloc or "127.0.0.1:6379"
    return RedisSettings(
        base_url=f"redis://{netloc}/{db}",
        prefix=prefix,
        client_options=client_options,
        **store_options,
    )


def _number(name: str, text: str, kind: Any) -> Any:
    try:
        value = kind(text)
    except ValueError as e:
        raise StoreConfigError(f"{name} must be a number, not {text!r}") from e
    if not math.isfinite(value) or value <= 0:
        raise StoreConfigError(f"{name} must be a positive number, not {text!r}")
    return value


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    try:
        yield
    except rexc.RedisError as e:
        raise StoreError(f"Redis failed to {what}: {e}") from e


# --- the run index ------------------------------------------------------------------------

ADVANCE: Final = """#!lua
-- KEYS[1]: the index position, KEYS[2]: rows hash, KEYS[3]: workflows hash,
-- KEYS[4..]: the sorted sets the changes touch.
-- ARGV[1]: expected position, ARGV[2]: new position, ARGV[3..6]: how many row writes,
-- set removals, set additions and workflow writes follow; then row writes (run id, row),
-- removals (key index, run id), additions (key index, sequence, run id), workflows
-- (workflow id, version). Returns 1, or 0 when the position is not the expected one.
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
local rows, removes, adds, workflows = tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), tonumber(ARGV[6])
local at = 6
for _ = 1, rows do
  redis.call('HSET', KEYS[2], ARGV[at + 1], ARGV[at + 2])
  at = at + 2
end
for _ = 1, removes do
  redis.call('ZREM', KEYS[3 + tonumber(ARGV[at + 1])], ARGV[at + 2])
  at = at + 2
end
for _ = 1, adds do
  redis.call('ZADD', KEYS[3 + tonumber(ARGV[at + 1])], ARGV[at + 2], ARGV[at + 3])
  at = at + 3
end
for _ = 1, workflows do
  redis.call('HSET', KEYS[3], ARGV[at + 1], ARGV[at + 2])
  at = at + 2
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

RUNS_PAGE: Final = """#!lua flags=no-writes
-- KEYS[1]: a sorted set of run ids by sequence, KEYS[2]: the rows hash.
-- ARGV[1]: the highest score ('+inf' or '(<sequence>'), ARGV[2]: the most rows.
-- Returns the rows, newest first.
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #ids do
  local row = redis.call('HGET', KEYS[2], ids[i])
  if row then out[#out + 1] = row end
end
return out
"""

SUBMITTER_PAGE = 500
"""Rows read at a time when one principal's runs are filtered by workflow or status."""
_Row = tuple[int, RunRow]
_encode_row = msgspec.json.Encoder().encode
_decode_row = msgspec.json.Decoder(tuple[int, RunRow]).decode


class RedisRunIndex(RunIndex):
    """The run list read model in Redis: a JSON row per run, sorted sets to page through.

    Every change is applied by one script together with the move of the position, and only
    if the position is still the expected one. Rows change only that way, so a row read
    before the script is still current when the script finds the position unchanged.

    Raises (every method):
        StoreError: Redis failed or cannot be reached.
    """

    def __init__(self, datastore: RedisDatastore, name: str = INDEX_NAME) -> None:
        self._datastore = datastore
        self._client = datastore.client
        self._name = name
        self.position_key = datastore.key(name, "position")
        self.rows_key = datastore.key(name, "rows")
        self.workflows_key = datastore.key(name, "workflows")
        self.all_key = datastore.key(name, "all")
        self._advance = self._client.register_script(ADVANCE)
        self._runs_page = self._client.register_script(RUNS_PAGE)

    def load_scripts(self) -> None:
        """Load the scripts into Redis now."""
        with _store_errors("load the run index's scripts"):
            for script in (self._advance, self._runs_page):
                script.sha = self._client.script_load(script.script)

    def _key(self, workflow_id: str | None, status: str | None) -> str:
        if workflow_id is None and status is None:
            return self.all_key
        if status is None:
            return self._datastore.key(self._name, "wf", workflow_id or "")
        if workflow_id is None:
            return self._datastore.key(self._name, "status", status)
        return self._datastore.key(self._name, "ws", status, workflow_id)

    def position(self) -> int:
        with _store_errors("read the run index position"):
            value = self._client.get(self.position_key)
        return int(value) if value is not None else 0

    def advance(self, expected: int, new: int, changes: IndexChanges) -> bool:
        started = {row.id: (seq, row) for seq, row in changes.started}
        before: dict[str, _Row] = {}
        elsewhere = [run_id for run_id, _, _ in changes.changed if run_id not in started]
        if elsewhere:
            with _store_errors("read runs of the index"):
                found = self._client.hmget(self.rows_key, elsewhere)
            for packed in found:
                if packed is not None:
                    seq, row = _decode_row(packed)
                    before[row.id] = (seq, row)
        after = {**before, **started}
        for run_id, status, at in changes.changed:
            if run_id in after:  # else the log never started it: nothing to update, as in SQL
                seq, row = after[run_id]
                after[run_id] = (seq, msgspec.structs.replace(row, status=status, updated_at=at))
        keys: dict[str, int] = {}
        removes: list[tuple[int, str]] = []
        adds: list[tuple[int, int, str]] = []
        for run_id, (seq, row) in after.items():
            if run_id in before:
                old = before[run_id][1]
                removes += [
                    (keys.setdefault(k, len(keys) + 1), run_id) for k in self._status_keys(old)
                ]
                new_keys = self._status_keys(row)
            else:
                new_keys = self._keys_of(row)
            adds += [(keys.setdefault(k, len(keys) + 1), seq, run_id) for k in new_keys]
        args: list[Any] = [
            expected,
            new,
            len(after),
            len(removes),
            len(adds),
            len(changes.workflows),
        ]
        for run_id, seq_row in after.items():
            args += (run_id, _encode_row(seq_row))
        for key_index, run_id in removes:
            args += (key_index, run_id)
        for key_index, seq, run_id in adds:
            args += (key_index, seq, run_id)
        for workflow_id, version in changes.workflows.items():
            args += (workflow_id, version)
        with _store_errors("advance the run index"):
            done = self._advance(
                keys=[self.position_key, self.rows_key, self.workflows_key, *keys], args=args
            )
        return bool(done)

    def _keys_of(self, row: RunRow) -> list[str]:
        keys = [self.all_key, self._key(row.workflow_id, None), *self._status_keys(row)]
        if row.parent_run_id is not None:
            keys.append(self._children_key(row.parent_run_id))
        if row.submitted_by is not None:
            keys.append(self._submitter_key(row.submitted_by))
        return keys

    def _submitter_key(self, submitted_by: str) -> str:
        return self._datastore.key(self._name, "by", submitted_by)

    def _children_key(self, parent_run_id: str) -> str:
        return self._datastore.key(self._name, "children", parent_run_id)

    def _status_keys(self, row: RunRow) -> list[str]:
        return [self._key(None, row.status), self._key(row.workflow_id, row.status)]

    def runs(
        self,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
        submitted_by: str | None = None,
    ) -> list[tuple[int, RunRow]]:
        if submitted_by is not None:
            return self._runs_of(submitted_by, workflow_id, status, limit, before)
        high = "+inf" if before is None else f"({before}"
        with _store_errors("list runs"):
            packed = self._runs_page(
                keys=[self._key(workflow_id, status), self.rows_key], args=[high, limit]
            )
        return [_decode_row(p) for p in packed]

    def _runs_of(
        self,
        submitted_by: str,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        before: int | None,
    ) -> list[tuple[int, RunRow]]:
        """Page through one principal's runs, keeping those of the workflow and status asked.

        A set per principal and workflow and status would multiply the keys every run
        touches; the principal's own set, filtered here, reads at most that principal's runs.
        """
        found: list[tuple[int, RunRow]] = []
        page = max(limit, SUBMITTER_PAGE)
        while len(found) < limit:
            high = "+inf" if before is None else f"({before}"
            with _store_errors("list runs"):
                packed = self._runs_page(
                    keys=[self._submitter_key(submitted_by), self.rows_key], args=[high, page]
                )
            rows = [_decode_row(p) for p in packed]
            found += [
                (seq, row)
                for seq, row in rows
                if (workflow_id is None or row.workflow_id == workflow_id)
                and (status is None or row.status == status)
            ]
            if len(rows) < page:
                break
            before = rows[-1][0]
        return found[:limit]

    def children(
        self, parent_run_id: str, limit: int, before: int | None
    ) -> list[tuple[int, RunRow]]:
        high = "+inf" if before is None else f"({before}"
        with _store_errors("list child runs"):
            packed = self._runs_page(
                keys=[self._children_key(parent_run_id), self.rows_key], args=[high, limit]
            )
        return [_decode_row(p) for p in packed]

    def active(self) -> list[str]:
        found: list[tuple[float, str]] = []
        with _store_errors("list active runs"):
            for status in ACTIVE_STATUSES:
                pairs = cast(
                    "list[tuple[bytes, float]]",
                    self._client.zrange(self._key(None, status), 0, -1, withscores=True),
                )
                found += [(score, i.decode()) for i, score in pairs]
        return [run_id for _, run_id in sorted(found)]

    def workflow_ids(self) -> list[str]:
        with _store_errors("list workflows"):
            ids = cast("list[bytes]", self._client.hkeys(self.workflows_key))
        return sorted(i.decode() for i in ids)


# --- the store ----------------------------------------------------------------------------


class RedisEventStore(RecorderEventStore):
    """Runs and workflows in one Redis database, under one key prefix.

    Several processes may share a prefix: appends are atomic and checked in Redis, positions
    are in commit order, and :meth:`wait_for_log` wakes on any process's append through a
    blocking read of the log. What survives a crash of Redis is up to its persistence
    settings: see :meth:`durability_warnings` and docs/redis.md.
    """

    def __init__(
        self,
        settings: RedisSettings,
        *,
        snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL,
    ) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        try:
            self._datastore = RedisDatastore(settings.connection_url(), key_prefix=settings.prefix)
        except PersistenceError as e:
            raise StoreError(f"cannot open the Redis store at {settings.where()}: {e}") from e
        events = RedisApplicationRecorder(self._datastore, events_name=EVENTS_NAME)
        snapshots = RedisAggregateRecorder(self._datastore, events_name=SNAPSHOTS_NAME)
        index = RedisRunIndex(self._datastore)
        try:
            events.create_table()  # checks the eviction policy and loads the scripts
            index.load_scripts()
        except (PersistenceError, StoreError) as e:
            self._datastore.close()
            raise StoreError(f"cannot open the Redis store at {settings.where()}: {e}") from e
        super().__init__(
            events,
            snapshots,
            index,
            snapshot_interval=snapshot_interval,
            poll_interval=settings.poll_interval,
        )
        self.log_key = events.log_key
        self.waiter_name = f"flowweaver-wait:{settings.prefix}"
        """The client name of the connections that wait in XREAD BLOCK (see CLIENT LIST)."""
        socket_timeout = settings.socket_timeout
        # A blocked read must end before the socket timeout would break its connection.
        self.max_block = MAX_BLOCK if socket_timeout is None else min(MAX_BLOCK, socket_timeout / 2)
        self._waiters = threading.Condition()
        self._idle: list[tuple[redis.Redis, int]] = []
        self._busy: dict[int, redis.Redis] = {}  # Redis client id -> client, while reading
        self._blocking_refused = False

    # --- waiting for the log -----------------------------------------------------------

    def _await_append(self, after: int, seen: int, timeout: float) -> None:
        """Block in ``XREAD BLOCK`` on the log stream, at most :attr:`max_block` seconds.

        An append by any process that shares the prefix ends the read at once, so
        :meth:`wait_for_log` wakes without polling. Where the server refuses blocking reads
        (an ACL without ``@blocking``), it polls every ``poll_interval`` seconds instead.

        Raises:
            StoreError: Redis cannot be reached.
        """
        if self._blocking_refused:
            super()._await_append(after, seen, timeout)
            return
        waiter = self._borrow_waiter()
        if waiter is None:
            return  # closed: wait_for_log answers False
        client, client_id = waiter
        healthy = False
        try:
            block = max(1, int(min(timeout, self.max_block) * 1000))
            self._datastore.execute(
                "XREAD",
                "COUNT",
                1,
                "BLOCK",
                block,
                "STREAMS",
                self.log_key,
                f"{max(after, 0)}-0",
                client=client,
            )
            healthy = True
        except rexc.ResponseError as e:
            healthy = True
            if not _refused(e):
                raise StoreError(f"Redis failed to read the log: {e}") from e
            self._blocking_refused = True
            log.warning("store_blocking_read_refused", error=str(e), poll=self.poll_interval)
        except rexc.RedisError as e:
            if not self._closed:
                raise StoreError(f"Redis failed to read the log: {e}") from e
        finally:
            self._return_waiter(client, client_id, keep=healthy)

    def _borrow_waiter(self) -> tuple[redis.Redis, int] | None:
        with self._waiters:
            closed = self._closed
            waiter = self._idle.pop() if self._idle and not closed else None
        if closed:
            return None
        if waiter is None:
            with _store_errors("open a connection for waiting"):
                client = self._datastore.blocking_client()
                try:
                    client.client_setname(self.waiter_name)
                    waiter = (client, int(client.client_id()))
                except BaseException:
                    client.close()
                    raise
        with self._waiters:
            if not self._closed:  # close() may have come while the connection was opened
                self._busy[waiter[1]] = waiter[0]
                return waiter
        _close_quietly(waiter[0])
        return None

    def _return_waiter(self, client: redis.Redis, client_id: int, *, keep: bool) -> None:
        with self._waiters:
            self._busy.pop(client_id, None)
            self._waiters.notify_all()
            if keep and not self._closed:
                self._idle.append((client, client_id))
                return
        _close_quietly(client)

    # --- the rest ----------------------------------------------------------------------

    def durability_warnings(self) -> list[str]:
        """Return how the server's persistence settings can lose acknowledged events.

        Never raises: a failure to ask becomes a warning of its own.
        """
        try:
            return durability_warnings(self._datastore.client)
        except rexc.RedisError as e:
            return [f"cannot read the Redis persistence settings: {e}"]

    def ping(self) -> None:
        """Return when Redis answers, within about ``ping_timeout`` seconds.

        A fresh connection, not a pooled one, so that the timeouts are the short ones.

        Raises:
            StoreError: Redis does not answer in time, or answers with an error.
        """
        timeout = self.settings.ping_timeout
        url = self.settings.connection_url(socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client = redis.Redis.from_url(url, protocol=2)
            try:
                client.ping()
            finally:
                client.close()
        except rexc.RedisError as e:
            raise StoreError(f"Redis at {self.settings.where()} does not answer: {e}") from e

    def close(self) -> None:
        """Wake every waiter, then close every connection."""
        with self._waiters:
            self._closed = True
            idle, self._idle = self._idle, []
        for client, _ in idle:
            _close_quietly(client)
        self._unblock_waiters()
        super().close()

    def _unblock_waiters(self) -> None:
        # A read may not have reached Redis when CLIENT UNBLOCK is sent: send it again until
        # every waiter has left, or a blocked read ends by itself.
        deadline = time.monotonic() + self.max_block + 1.0
        for attempt in itertools.count():
            with self._waiters:
                busy = list(self._busy)
                if not busy or time.monotonic() > deadline:
                    return
            for client_id in busy:
                try:
                    self._datastore.client.client_unblock(client_id)
                except rexc.RedisError:
                    return  # Redis is gone: the reads fail by themselves
            with self._waiters:
                self._waiters.wait(UNBLOCK_BACKOFF.delay(attempt))


def _refused(error: rexc.ResponseError) -> bool:
    """Say whether Redis refused a command as such (unknown or not permitted)."""
    text = str(error).upper()
    return (
        isinstance(error, rexc.NoPermissionError) or "NOPERM" in text or "UNKNOWN COMMAND" in text
    )


def _close_quietly(client: redis.Redis) -> None:
    with contextlib.suppress(rexc.RedisError):  # closing a broken connection
        client.close()


def open_store(url: str) -> RedisEventStore:
    """Open the store a ``redis://`` URL names (the ``flowweaver.stores`` entry point).

    Raises:
        StoreConfigError: the URL has bad options.
        StoreError: Redis cannot be reached, or may evict recorded events.
    """
    return RedisEventStore(parse_url(url))


__all__ = [
    "RedisEventStore",
    "RedisRunIndex",
    "RedisSettings",
    "open_store",
    "parse_url",
]
