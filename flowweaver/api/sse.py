"""Server-sent events: the one tailer of the process, and the streams it feeds.

A stream replays stored events after the client's offset straight from the store, then follows
live events from the :class:`Hub`. The switch has no gap and no duplicate because subscribing
and the hub's fan-out both happen on the loop: every event past the hub's position at the
moment of subscription is delivered live, and the store read that follows the subscription
holds everything before it; the offset of the last event sent removes the overlap. When the
tailer is running a stream subscribes first and reads once; otherwise it replays, subscribes
and reads again. Per-run streams count by run version, the global feed by log position.

The hub is one asyncio task that waits on the store in a thread of the bridge and fans each new
page of the log out: a small page straight to the connection of each stream that keeps up
(:class:`DirectWriter`, one place, with the response's framing and byte count), else into the
stream's queue, which its coroutine writes through its aiohttp ``StreamResponse``. A stream's
backlog (queued, being written, and waiting in its connection's buffer) is bounded in bytes: a
stream whose client stops reading is dropped with an ``event: error`` message and closed, so a
slow client never holds the others back nor grows the server's memory. The final flush of an
ended stream has a deadline too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from flowweaver.domain.events import TERMINAL_EVENT_NAMES
from flowweaver.errors import NotFoundError, StoreError
from flowweaver.observability import metrics
from flowweaver.ports import RecordedEvent

from .bridge import EngineBridge
from .errors import bad_request

log = structlog.get_logger("flowweaver.api.sse")

MAX_OFFSET = 2**63 - 1
HEARTBEAT = b": keep-alive\n\n"
_TERMINAL = frozenset(name.encode() for name in TERMINAL_EVENT_NAMES)
_encoder = msgspec.json.Encoder()


# --- the wire form of an event ----------------------------------------------------------------


def event_json(rec: RecordedEvent) -> bytes:
    """Return the event's API JSON: type, runId, version, timestamp, then its own fields.

    The stored JSON starts with ``{"type":"Name",``; the run id and version are spliced in
    after it, so nothing is decoded. A store that reformats JSON falls back to decoding. An
    event stored at an older schema version is upcast and re-encoded first (``current_raw``).
    """
    name = rec.name.encode()
    raw = rec.current_raw
    prefix_len = len(name) + 11  # len('{"type":"",')
    if raw[:prefix_len] == b'{"type":"' + name + b'",':
        return b'{"type":"%b","runId":"%b","version":%d,%b' % (
            name,
            rec.run_id.encode(),
            rec.version,
            raw[prefix_len:],
        )
    decoded = msgspec.json.decode(raw)
    fields = decoded if isinstance(decoded, dict) else {}
    out: dict[str, object] = {"type": rec.name, "runId": rec.run_id, "version": rec.version}
    out.update((k, v) for k, v in fields.items() if k not in out)
    return _encoder.encode(out)


def sse_frame(offset: int, rec: RecordedEvent, data: bytes | None = None) -> bytes:
    """Return one SSE message: ``id``, ``event`` and ``data`` lines and the blank line."""
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (
        offset,
        rec.name.encode(),
        event_json(rec) if data is None else data,
    )


class LiveEvent:
    """A new event of the log, with its frames built once for every subscriber."""

    __slots__ = ("_data", "_log_frame", "_run_frame", "rec")

    def __init__(self, rec: RecordedEvent) -> None:
        self.rec = rec
        self._data: bytes | None = None
        self._run_frame: bytes | None = None
        self._log_frame: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = event_json(self.rec)
        return self._data

    @property
    def run_frame(self) -> bytes:
        """The frame of a per-run stream (``id`` is the run version)."""
        if self._run_frame is None:
            self._run_frame = sse_frame(self.rec.version, self.rec, self.data)
        return self._run_frame

    @property
    def log_frame(self) -> bytes:
        """The frame of the global feed (``id`` is the log position)."""
        if self._log_frame is None:
            self._log_frame = sse_frame(self.rec.position or 0, self.rec, self.data)
        return self._log_frame


# --- the hub ----------------------------------------------------------------------------------


DIRECT_WRITE_LIMIT = 64 * 1024
"""The hub writes a round directly only if the connection's buffer stays within this.

Larger rounds are queued: the frames are shared by every stream, and each stream's coroutine
writes them in pieces as its connection drains, so no stream copies a whole round.
"""
WRITE_SLICE = 64 * 1024
"""The largest piece handed to the response at once: what waits in the transport stays small."""
QUICK_WRITE = 32 * 1024
"""A write no larger, to a transport with nothing waiting, cannot wait (high water: 64 KiB)."""


def _buffered(transport: asyncio.BaseTransport | None) -> int:
    """Return the bytes waiting in ``transport``'s write buffer (0 once it is closing)."""
    if transport is None or transport.is_closing():
        return 0
    assert isinstance(transport, asyncio.WriteTransport)
    return transport.get_write_buffer_size()


class DirectWriter:
    """Writes a round of live frames straight to a stream's connection, as aiohttp would.

    Everything else a stream sends goes through its aiohttp ``StreamResponse``, which frames,
    buffers and counts bytes. Live events to a stream that keeps up are the exception: with a
    thousand streams on a run, waking each stream's coroutine to write every round costs more
    than the writes (the fan-out benchmark in docs/benchmarks.md: p50 delay 9 ms this way,
    79 ms through each coroutine). So the hub writes the round's frames itself, here, and this
    writer keeps what the response would have guaranteed:

    - headers first: a stream hands out a writer only after its first write through the
      response (headers and ``retry:`` line) has returned;
    - framing: one chunk per write when the response is chunked (HTTP/1.1), the bare bytes
      otherwise; SSE responses are never compressed;
    - order: the hub uses it only while the stream's coroutine waits for news, so nothing the
      response writes is ever cut in two;
    - counting: what it writes is added to the response's byte count for the access log.
    """

    __slots__ = ("chunked", "response", "transport")

    def __init__(self, response: _SseResponse, transport: asyncio.Transport) -> None:
        assert not response.compression, "SSE responses are sent uncompressed"
        self.response = response
        self.transport = transport
        # What the response announced is how the client parses the body.
        self.chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"

    def buffered(self) -> int:
        """Return the bytes waiting in the connection's write buffer."""
        return _buffered(self.transport)

    def usable(self) -> bool:
        """Say whether the connection is open."""
        return not self.transport.is_closing()

    def write(self, framed: bytes) -> None:
        """Write bytes already framed for this response (see :meth:`_SharedFrames.framed`)."""
        self.transport.write(framed)
        self.response.direct_bytes += len(framed)


class Subscriber:
    """One stream's live side: a direct write while it keeps up, else a queue bounded in bytes.

    While the stream's coroutine waits for news (``idle``) with nothing queued, and the round
    fits in its connection's buffer with at most :data:`DIRECT_WRITE_LIMIT` waiting there, the
    hub writes the round's frames through the stream's :class:`DirectWriter`: no task switch
    per stream. Otherwise the events are queued for the coroutine, which writes them through
    its response, piece by piece as the connection drains.

    The subscriber's backlog is what its client has not yet taken in: the bytes queued, the
    bytes taken but not yet handed to the transport (``inflight``) and the bytes waiting in
    the transport's write buffer. A round that would take the backlog past ``limit`` is
    neither written nor queued: the subscriber is dropped instead. An empty backlog takes a
    round whatever its size, so that one large event (or page) does not cut off a client that
    keeps up. ``peak`` is the largest backlog the subscriber ever had.
    """

    __slots__ = (
        "beat",
        "by_position",
        "closed",
        "dropped",
        "ended",
        "idle",
        "inflight",
        "last",
        "last_write",
        "limit",
        "peak",
        "queue",
        "queued",
        "run_id",
        "transport",
        "wake",
        "writer",
    )

    def __init__(
        self, run_id: str | None, limit: int, transport: asyncio.BaseTransport | None = None
    ) -> None:
        self.run_id = run_id
        self.limit = limit
        self.transport = transport
        self.writer: DirectWriter | None = None
        self.queue: deque[LiveEvent] = deque()
        self.queued = 0
        self.inflight = 0
        self.peak = 0
        self.wake = asyncio.Event()
        self.dropped = False
        self.closed = False
        self.ended = False
        self.idle = False
        self.by_position = run_id is None
        self.last = 0
        self.last_write = time.monotonic()
        self.beat = False

    def attach(self, writer: DirectWriter | None, last: int) -> None:
        """Let the hub write to this stream directly, from offset ``last`` on."""
        self.writer = writer
        self.last = last

    def backlog(self) -> int:
        """Return the bytes this stream has been given and its client has not yet read."""
        return self.queued + self.inflight + _buffered(self.transport)

    def fits(self, size: int) -> bool:
        """Say whether ``size`` more bytes keep the backlog within the limit."""
        return self.backlog() + size <= self.limit

    def offset(self, event: LiveEvent) -> int:
        """Return the event's offset in this stream (log position or run version)."""
        return (event.rec.position or 0) if self.by_position else event.rec.version

    def offer(self, events: list[LiveEvent], shared: _SharedFrames) -> int:
        """Hand over one round's events: return how many were written directly, -1 if dropped."""
        if self.dropped or self.closed or self.ended:
            return 0
        writer = self.writer
        if self.idle and not self.queue and writer is not None and writer.usable():
            buffered = writer.buffered()
            if buffered + shared.size <= DIRECT_WRITE_LIMIT:
                start = 0
                while start < len(events) and self.offset(events[start]) <= self.last:
                    start += 1  # already sent by the replay
                if start == len(events):
                    return 0
                if self.by_position or self.offset(events[start]) == self.last + 1:
                    framed = shared.framed(start, writer.chunked)
                    writer.write(framed)
                    self.peak = max(self.peak, buffered + len(framed))
                    self.last = self.offset(events[-1])
                    self.last_write = time.monotonic()
                    if not self.by_position and shared.terminal:
                        self.ended = True
                        self.wake.set()
                    return len(events) - start
        backlog = self.backlog()
        if backlog and backlog + shared.size > self.limit:
            self.drop()
            return -1
        self.queue.extend(events)
        self.queued += shared.size
        self.peak = max(self.peak, backlog + shared.size)
        if not self.wake.is_set():
            self.wake.set()
        return 0

    def drop(self) -> None:
        """Give up on this stream's client: forget what is queued, and wake the stream.

        A write the stream's coroutine waits in goes on until the client takes it or the
        write timeout cuts the connection: cancelling it would leave aiohttp's connection
        unable to write again (its drain waiter is shared, and would stay cancelled).
        """
        self.dropped = True
        self.queue.clear()
        self.queued = 0
        self.wake.set()

    def take(self) -> list[LiveEvent]:
        """Return every queued event and empty the queue (its bytes are now in flight)."""
        items = list(self.queue)
        self.queue.clear()
        self.inflight += self.queued
        self.queued = 0
        self.wake.clear()
        return items

    def close(self) -> None:
        """End the stream (the server is shutting down)."""
        self.closed = True
        self.wake.set()


class _SharedFrames:
    """One round's frames for one kind of stream, joined (and chunk-framed) once for all."""

    __slots__ = ("_cache", "by_position", "events", "size", "terminal")

    def __init__(self, events: list[LiveEvent], *, by_position: bool) -> None:
        self.events = events
        self.by_position = by_position
        self.terminal = not by_position and events[-1].rec.name.encode() in _TERMINAL
        self.size = sum(len(e.log_frame if by_position else e.run_frame) for e in events)
        self._cache: dict[tuple[int, bool], bytes] = {}

    def framed(self, start: int, chunked: bool) -> bytes:
        """Return the frames from ``events[start]`` on, as one HTTP/1.1 chunk if ``chunked``."""
        key = (start, chunked)
        data = self._cache.get(key)
        if data is None:
            events = self.events[start:]
            body = b"".join(e.log_frame if self.by_position else e.run_frame for e in events)
            data = b"%x\r\n%b\r\n" % (len(body), body) if chunked else body
            self._cache[key] = data
        return data


class Hub:
    """The process's one tailer of the event log, fanning new events out to subscribers.

    With nobody subscribed for ``linger`` seconds the tailer parks and reads nothing, so that
    an API nobody follows costs the engine nothing per append. The first subscriber to arrive
    then moves :attr:`position` to the end of the log before it registers: what is stored up
    to there its own read from the store finds, and what comes after, the tailer delivers.
    """

    def __init__(
        self,
        bridge: EngineBridge,
        *,
        buffer: int = 1024 * 1024,
        page: int = 1000,
        wait: float = 1.0,
        linger: float = 5.0,
        heartbeat: float = 15.0,
    ) -> None:
        self.bridge = bridge
        self.buffer = buffer
        self.heartbeat = heartbeat
        self.page = page
        self.wait = wait
        self.linger = linger
        self._last_seen = 0.0
        self.position = 0
        self._by_run: dict[str, set[Subscriber]] = {}
        self._global: set[Subscriber] = set()
        self._count = 0
        self.peak = 0  # the largest backlog of any subscriber gone, in bytes
        self.direct_writes = 0  # rounds written to a stream by its DirectWriter
        self._task: asyncio.Task[None] | None = None
        self._beats: asyncio.Task[None] | None = None
        self._closing = False
        self._parked = True
        self._joining = 0
        self._active = asyncio.Event()
        self._resync: asyncio.Future[None] | None = None

    @property
    def subscribers(self) -> int:
        """Return how many streams follow live events."""
        return self._count

    def peak_backlog(self) -> int:
        """Return the largest backlog, in bytes, any subscriber has had (gone ones included)."""
        subs = [*self._global, *(s for subs in self._by_run.values() for s in subs)]
        return max([self.peak, *(sub.peak for sub in subs)])

    async def start(self) -> None:
        """Start the tailer (parked until someone subscribes)."""
        self._task = asyncio.create_task(self._tail(), name="flowweaver-sse-tailer")
        self._beats = asyncio.create_task(self._beat(), name="flowweaver-sse-heartbeat")

    async def subscribe(
        self, run_id: str | None, transport: asyncio.BaseTransport | None = None
    ) -> Subscriber:
        """Register a stream (a run's, or the global feed with None) for live events.

        ``transport`` is the stream's connection: what waits in its write buffer counts
        against the subscriber's backlog.

        Every event past :attr:`position` at the moment this returns will be delivered.

        Raises:
            StoreError: the log's end could not be read to wake the tailer.
        """
        self._joining += 1  # the tailer does not park while someone is joining
        try:
            while self._parked and not self._closing:
                if self._resync is None:
                    self._resync = asyncio.ensure_future(self._unpark())
                resync = self._resync
                try:
                    await asyncio.shield(resync)
                finally:
                    if self._resync is resync and resync.done():
                        self._resync = None
            if self._closing:
                sub = Subscriber(run_id, self.buffer, transport)
                sub.close()
                return sub
            return self._register(run_id, transport)
        finally:
            self._joining -= 1

    def try_subscribe(
        self, run_id: str | None, transport: asyncio.BaseTransport | None = None
    ) -> Subscriber | None:
        """Register at once if the tailer is running, else None (then use :meth:`subscribe`)."""
        if self._parked or self._closing:
            return None
        return self._register(run_id, transport)

    def _register(self, run_id: str | None, transport: asyncio.BaseTransport | None) -> Subscriber:
        sub = Subscriber(run_id, self.buffer, transport)
        if run_id is None:
            self._global.add(sub)
        else:
            self._by_run.setdefault(run_id, set()).add(sub)
        self._count += 1
        return sub

    async def _unpark(self) -> None:
        top = await self.bridge.max_position()
        self.position = max(self.position, top)
        self._parked = False
        self._active.set()

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop delivering to ``sub`` (idempotent)."""
        if sub.run_id is None:
            found = sub in self._global
            self._global.discard(sub)
        else:
            subs = self._by_run.get(sub.run_id)
            found = subs is not None and sub in subs
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_run[sub.run_id]
        if found:
            self._count -= 1
            self.peak = max(self.peak, sub.peak)

    async def close(self) -> None:
        """End every stream and stop tailing."""
        self._closing = True
        self._active.set()
        for sub in [*self._global, *(s for subs in self._by_run.values() for s in subs)]:
            sub.close()
        for task in (self._task, self._beats):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _beat(self) -> None:
        # One timer for every stream (a timeout per stream and wait costs more than the
        # writes themselves with a thousand streams): a stream that has sent nothing for
        # `heartbeat` seconds is told to send a keep-alive comment.
        while not self._closing:
            await asyncio.sleep(self.heartbeat / 4)
            due = time.monotonic() - self.heartbeat
            for subs in (self._global, *self._by_run.values()):
                for sub in subs:
                    if sub.last_write <= due and not sub.beat:
                        sub.beat = True
                        sub.wake.set()

    async def _tail(self) -> None:
        failures = 0
        while not self._closing:
            now = time.monotonic()
            if self._count or self._joining:
                self._last_seen = now
            elif now - self._last_seen >= self.linger:
                # Nobody has listened for a while: read nothing until a subscriber unparks
                # us at the log's end. (Lingering first spares clients that come and go,
                # one stream per run, the round trip of unparking.)
                self._parked = True
                self._active.clear()
                await self._active.wait()
                continue
            try:
                batch = await self.bridge.next_batch(self.position, wait=self.wait, limit=self.page)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the tailer must outlive store hiccups
                failures += 1
                delay = min(5.0, 0.05 * 2**failures)
                log.warning("sse_tail_failed", error=repr(e), retry_in=delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if batch is None:
                continue
            top, page = batch
            self._fan_out(page)
            if top is not None and len(page) < self.page:
                self.position = max(self.position, top)

    def _fan_out(self, page: Iterable[RecordedEvent]) -> None:
        every: list[LiveEvent] = []
        by_run: dict[str, list[LiveEvent]] = {}
        for rec in page:
            position = rec.position or 0
            if position <= self.position:
                continue
            self.position = position
            if not self._count:
                continue
            event = LiveEvent(rec)
            if self._global:
                every.append(event)
            if rec.run_id in self._by_run:
                by_run.setdefault(rec.run_id, []).append(event)
        written = 0
        dropped: list[Subscriber] = []
        for run_id, events in by_run.items():
            shared = _SharedFrames(events, by_position=False)
            for sub in self._by_run[run_id]:
                n = sub.offer(events, shared)
                if n < 0:
                    dropped.append(sub)
                elif n:
                    written += n
                    self.direct_writes += 1
        if every:
            shared = _SharedFrames(every, by_position=True)
            for sub in self._global:
                n = sub.offer(every, shared)
                if n < 0:
                    dropped.append(sub)
                elif n:
                    written += n
                    self.direct_writes += 1
        for sub in dropped:
            self.unsubscribe(sub)
            metrics.sse_dropped.inc()
            log.warning(
                "sse_subscriber_dropped", run_id=sub.run_id, last_event_id=sub.last, limit=sub.limit
            )
        if written:
            metrics.sse_events_sent.inc(written)


# --- the streams ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSettings:
    """How the streams of one app behave."""

    retry_ms: int = 3000
    heartbeat: float = 15.0
    write_timeout: float = 30.0
    drain_timeout: float = 5.0
    replay_page: int = 2000
    socket_buffer: int = 64 * 1024  # SO_SNDBUF of a stream's connection (Linux doubles it)


def parse_offset(request: web.Request, name: str = "after") -> int:
    """Return the resume offset: ``Last-Event-ID`` if sent, else ``?after=``, else 0.

    Raises:
        ApiError: the offset is not a non-negative integer (400).
    """
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        return _offset(header, "Last-Event-ID", "$.headers.Last-Event-ID")
    raw = request.query.get(name)
    if raw is None:
        return 0
    return _offset(raw, name, f"$.query.{name}")


def _offset(text: str, what: str, path: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_OFFSET:
        raise bad_request(f"{what} must be a non-negative integer, not {text[:40]!r}", path=path)
    return int(text)


class _SseResponse(web.StreamResponse):
    """A stream response whose byte count survives a connection the server aborts.

    aiohttp counts a response's bytes when its end is written; a stream cut off before that
    keeps the count of what was handed to the connection, for the access log.
    """

    cut_at = 0
    direct_bytes = 0  # written by the stream's DirectWriter

    @property
    def body_length(self) -> int:
        return (super().body_length or self.cut_at) + self.direct_bytes


def _pieces(frames: list[bytes]) -> Iterator[bytes]:
    """Group ``frames`` into pieces of at most :data:`WRITE_SLICE` bytes (a larger one alone)."""
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if group and size + len(frame) > WRITE_SLICE:
            yield group[0] if len(group) == 1 else b"".join(group)
            group, size = [], 0
        group.append(frame)
        size += len(frame)
    if group:
        yield group[0] if len(group) == 1 else b"".join(group)


class _Stream:
    """An open SSE response with bounded writes, through aiohttp's response writer.

    (Live pages the hub writes to a stream that keeps up go through its :class:`DirectWriter`.)
    """

    def __init__(self, request: web.Request, settings: StreamSettings) -> None:
        self.request = request
        self.settings = settings
        self.writer: AbstractStreamWriter | None = None
        self.sent = False
        self.finished = False
        self.response = _SseResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        if request.version >= (1, 1):
            self.response.enable_chunked_encoding()

    async def open(self) -> None:
        self._limit_kernel_buffer()
        self.writer = await self.response.prepare(self.request)
        metrics.sse_subscribers.inc()

    def _limit_kernel_buffer(self) -> None:
        """Cap the kernel's send buffer of the connection (Linux grows it up to 4 MiB).

        What a client has not read also waits there, out of reach of the backlog limit; a
        thousand stalled clients would pin gigabytes of kernel memory, and filling it costs
        the server time every other client waits for.
        """
        size = self.settings.socket_buffer
        transport = self.request.transport
        raw = transport.get_extra_info("socket") if transport is not None else None
        if size and raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def direct_writer(self) -> DirectWriter | None:
        """Return a writer for the hub, once the headers went out through the response."""
        transport = self.request.transport
        if not self.sent or transport is None:
            return None
        assert isinstance(transport, asyncio.Transport)
        return DirectWriter(self.response, transport)

    def retry_line(self) -> bytes:
        return b"retry: %d\n\n" % self.settings.retry_ms

    async def send(
        self,
        frames: bytes | list[bytes],
        events: int = 0,
        sub: Subscriber | None = None,
    ) -> None:
        """Write ``frames``; a client that does not take them within the write timeout is cut.

        They go to the response in pieces of at most :data:`WRITE_SLICE` bytes (a larger
        frame alone), each waiting for the connection to drain: the transport never holds
        much more than one piece, and a stream never copies a whole batch of shared frames.
        ``sub``'s bytes in flight go down as the pieces are handed over.
        """
        if isinstance(frames, bytes):
            frames = [frames]
        if sub is not None:
            sub.last_write = time.monotonic()
        try:
            if len(frames) == 1 and len(frames[0]) <= QUICK_WRITE and not self.buffered():
                # With nothing waiting in the transport, a write this small cannot fill it
                # past its high-water mark, so it does not wait to drain: no timer needed.
                await self.response.write(frames[0])
                self.sent = True
                return
            async with asyncio.timeout(self.settings.write_timeout):
                for piece in _pieces(frames):
                    await self.response.write(piece)
                    if sub is not None:
                        sub.inflight = max(0, sub.inflight - len(piece))
            self.sent = True
        except TimeoutError:
            # A cancelled drain leaves aiohttp's connection unable to write again: cut it.
            self.abort()
            raise
        finally:
            if sub is not None:
                sub.inflight = 0
            if events:
                metrics.sse_events_sent.inc(events)

    def buffered(self) -> int:
        """Return the bytes waiting in the connection's write buffer."""
        return _buffered(self.request.transport)

    async def finish(self, last: bytes = b"") -> None:
        """Write ``last`` and the end of the response, and wait until the client took it all.

        A client that does not take it within the drain timeout is cut: the server would
        otherwise hold the connection and its unsent bytes for as long as the client likes.
        """
        if self.finished:
            return
        self.finished = True
        transport = self.request.transport
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                if last:
                    await self.response.write(last)
                if transport is not None and not transport.is_closing():
                    # With no high-water mark, the end's drain waits for an empty buffer.
                    transport.set_write_buffer_limits(high=0)
                await self.response.write_eof()
        except TimeoutError:
            metrics.sse_flush_timeouts.inc()
            log.info("sse_flush_timeout", timeout=self.settings.drain_timeout)
            self.abort()
        except ConnectionResetError:
            pass
        finally:
            if transport is not None and not transport.is_closing():
                transport.set_write_buffer_limits()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.writer is not None and not self.response.cut_at:
            self.response.cut_at = self.writer.output_size
        self.response.force_close()
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def closed(self) -> None:
        metrics.sse_subscribers.dec()


async def run_stream(
    request: web.Request,
    bridge: EngineBridge,
    hub: Hub,
    settings: StreamSettings,
    run_id: str,
) -> web.StreamResponse:
    """Answer a per-run SSE request: replay after the offset, then follow until the run ends.

    Raises:
        ApiError: bad offset, or an offset beyond the run's last event (400), before streaming.
        NotFoundError: no such run (404), before streaming.
    """
    after = parse_offset(request)
    page_size = settings.replay_page
    # When the tailer is running, subscribing first lets one read of the store both check
    # the offset and replay everything before the live events (duplicates are skipped by
    # version). A long history, or a parked tailer, takes the two-step way in _follow_run.
    early = hub.try_subscribe(run_id, request.transport)
    try:
        # One read both checks the offset (version `after` must exist) and starts the replay.
        first = await bridge.read_run(
            run_id, after=max(after - 1, 0), limit=page_size + (1 if after else 0)
        )
        ended = False
        if after > 0 and first:
            ended = first[0].name.encode() in _TERMINAL
            first = first[1:]
        elif not first:
            if after <= 1 or not await bridge.read_run(run_id, upto=1):
                raise NotFoundError("run", run_id)
            raise bad_request(
                f"the run has fewer than {after} events; resume from an id it sent",
                path="$.after",
            )
        if early is not None and len(first) >= page_size:
            hub.unsubscribe(early)  # a long replay: do not let live events pile up meanwhile
            early = None
        stream = _Stream(request, settings)
        await stream.open()
        try:
            if request.method != "HEAD":  # a HEAD gets the headers only: the checks passed
                if ended:
                    await stream.send(stream.retry_line())
                else:
                    await _follow_run(stream, bridge, hub, settings, run_id, after, first, early)
            await stream.finish()
        except (ConnectionResetError, TimeoutError):
            pass
        except StoreError as e:
            await _send_store_error(stream, e)
        finally:
            stream.closed()
        return stream.response
    finally:
        if early is not None:
            hub.unsubscribe(early)


async def _follow_run(
    stream: _Stream,
    bridge: EngineBridge,
    hub: Hub,
    settings: StreamSettings,
    run_id: str,
    last: int,
    first: list[RecordedEvent],
    early: Subscriber | None,
) -> None:
    last, ended = await _send_page(stream, first, last, stream.retry_line())
    if ended:
        return
    if early is not None:
        sub = early  # subscribed before `first` was read: nothing can fall between
    else:
        if len(first) >= settings.replay_page:
            last, ended = await _replay_run(stream, bridge, settings, run_id, last)
            if ended:
                return
        sub = await hub.subscribe(run_id, stream.request.transport)
    try:
        if early is None:
            last, ended = await _replay_run(stream, bridge, settings, run_id, last)
            if ended:
                return
        sub.attach(stream.direct_writer(), last)
        await _live_run(stream, bridge, sub, run_id)
    finally:
        hub.unsubscribe(sub)


async def _live_run(stream: _Stream, bridge: EngineBridge, sub: Subscriber, run_id: str) -> None:
    """Write the run's live events until it ends (or the stream is dropped or closed)."""
    while True:
        items = await _next_live(stream, sub)
        if items is None:
            return
        frames: list[bytes] = []
        last = sub.last
        for event in items:
            version = event.rec.version
            if version <= last:
                continue  # already sent by the replay
            if version != last + 1:
                # The store has events the live feed skipped past (a page boundary
                # race in another store): fill the hole from the store, in order.
                hole = await bridge.read_run(run_id, after=last, upto=version - 1)
                for rec in hole:
                    frames.append(sse_frame(rec.version, rec))
                    last = rec.version
            frames.append(event.run_frame)
            last = version
            if event.rec.name.encode() in _TERMINAL:
                sub.ended = True
                break
        sub.last = last
        if frames:
            await stream.send(frames, len(frames), sub)
        if sub.ended:
            return


async def _send_page(
    stream: _Stream, page: list[RecordedEvent], last: int, prefix: bytes = b""
) -> tuple[int, bool]:
    """Send a page of stored events (stopping at a terminal one): (last version, ended)."""
    frames: list[bytes] = [prefix] if prefix else []
    ended = False
    for rec in page:
        frames.append(sse_frame(rec.version, rec))
        last = rec.version
        if rec.name.encode() in _TERMINAL:
            ended = True
            break
    if frames:
        await stream.send(frames, len(frames) - (1 if prefix else 0))
    return last, ended


async def _replay_run(
    stream: _Stream, bridge: EngineBridge, settings: StreamSettings, run_id: str, last: int
) -> tuple[int, bool]:
    """Send stored events after ``last`` in pages; return the new last version and if it ended."""
    page_size = settings.replay_page
    while True:
        page = await bridge.read_run(run_id, after=last, limit=page_size)
        last, ended = await _send_page(stream, page, last)
        if ended or len(page) < page_size:
            return last, ended


async def log_stream(
    request: web.Request, bridge: EngineBridge, hub: Hub, settings: StreamSettings
) -> web.StreamResponse:
    """Answer a global-feed SSE request: every run's events after a log position, forever.

    Raises:
        ApiError: bad offset, or one beyond the end of the log (400), before streaming.
    """
    after = parse_offset(request)
    top = await bridge.max_position()
    if after > top:
        raise bad_request(
            f"the log ends at position {top}; resume from an id it sent", path="$.after"
        )
    stream = _Stream(request, settings)
    await stream.open()
    try:
        if request.method != "HEAD":  # a HEAD gets the headers only: the checks passed
            await stream.send(stream.retry_line())
            await _follow_log(stream, bridge, hub, settings, after)
        await stream.finish()
    except (ConnectionResetError, TimeoutError):
        pass
    except StoreError as e:
        await _send_store_error(stream, e)
    finally:
        stream.closed()
    return stream.response


async def _follow_log(
    stream: _Stream, bridge: EngineBridge, hub: Hub, settings: StreamSettings, last: int
) -> None:
    last = await _replay_log(stream, bridge, settings, last, None)
    sub = await hub.subscribe(None, stream.request.transport)
    try:
        # Everything up to the hub's position at subscription is stored: read it; what
        # comes after is delivered live.
        last = await _replay_log(stream, bridge, settings, last, hub.position)
        sub.attach(stream.direct_writer(), last)
        while True:
            items = await _next_live(stream, sub)
            if items is None:
                return
            frames = [e.log_frame for e in items if (e.rec.position or 0) > sub.last]
            if frames:
                sub.last = max(sub.last, items[-1].rec.position or 0)
                await stream.send(frames, len(frames), sub)
    finally:
        hub.unsubscribe(sub)


async def _replay_log(
    stream: _Stream,
    bridge: EngineBridge,
    settings: StreamSettings,
    last: int,
    until: int | None,
) -> int:
    page_size = settings.replay_page
    while until is None or last < until:
        page = await bridge.read_log(after=last, limit=page_size)
        if not page:
            return last
        frames = [sse_frame(rec.position or 0, rec) for rec in page]
        last = page[-1].position or last
        await stream.send(frames, len(frames))
        if len(page) < page_size:
            return last
    return last


async def _next_live(stream: _Stream, sub: Subscriber) -> list[LiveEvent] | None:
    """Wait for queued events, sending heartbeats meanwhile; None when the stream must end."""
    while True:
        if sub.ended:
            return None
        if sub.closed:
            stream.response.force_close()
            await stream.finish(b": server shutting down\n\n")
            return None
        if sub.dropped:
            await _send_overflow(stream, sub)
            return None
        items = sub.take()
        if items:
            return items
        if sub.beat:
            sub.beat = False
            if not sub.fits(len(HEARTBEAT)):
                # Not even a heartbeat fits: the client has read nothing for a while.
                sub.drop()
                metrics.sse_dropped.inc()
                log.warning(
                    "sse_subscriber_dropped",
                    run_id=sub.run_id,
                    last_event_id=sub.last,
                    limit=sub.limit,
                )
                continue
            await stream.send(HEARTBEAT, sub=sub)
            continue
        sub.idle = True  # the hub may write to the connection directly meanwhile
        try:
            await sub.wake.wait()
        finally:
            sub.idle = False


async def _send_store_error(stream: _Stream, error: StoreError) -> None:
    """End a stream whose store failed once headers were sent: a last message, then close."""
    log.warning("sse_store_failed", error=str(error))
    body = _encoder.encode(
        {
            "type": "StoreUnavailable",
            "detail": "the event store failed; reconnect with Last-Event-ID to resume",
        }
    )
    stream.response.force_close()
    await stream.finish(b"event: error\ndata: %b\n\n" % body)


async def _send_overflow(stream: _Stream, sub: Subscriber) -> None:
    """End a dropped stream: a last error message (small, so past the limit), then close."""
    last = sub.last
    body = _encoder.encode(
        {
            "type": "SubscriberOverflow",
            "detail": "this client fell too far behind; reconnect with Last-Event-ID to resume",
            "lastEventId": last,
        }
    )
    stream.response.force_close()
    await stream.finish(b"event: error\ndata: %b\n\n" % body)


__all__ = [
    "Hub",
    "LiveEvent",
    "StreamSettings",
    "Subscriber",
    "event_json",
    "log_stream",
    "parse_offset",
    "run_stream",
    "sse_frame",
]
