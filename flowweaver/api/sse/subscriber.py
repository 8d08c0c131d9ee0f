"""One SSE stream's state, whole: its connection, its position, its live queue and its backlog.

A :class:`Subscriber` is made for each SSE request and is the only state its stream has. The
stream's coroutine (:mod:`.streams`) opens it, writes the replay through it and then waits in
:meth:`Subscriber.next_live`; the :class:`~.hub.Hub` hands it each round of live events
(:meth:`Subscriber.offer`), writing them to the connection itself while the stream keeps up.
Both run on the event loop, so nothing here is locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from flowweaver.observability import metrics

from .filters import EventFilter
from .framing import HEARTBEAT, SHUTDOWN, LiveEvent, Round, error_message, retry_line

log = structlog.get_logger("flowweaver.api.sse")

DIRECT_WRITE_LIMIT = 64 * 1024
"""The hub writes a round directly only if the connection's buffer stays within this.

Larger rounds are queued: the frames are shared by every stream, and each stream's coroutine
writes them in pieces as its connection drains, so no stream copies a whole round.
"""
WRITE_SLICE = 64 * 1024
"""The largest piece handed to the response at once: what waits in the transport stays small."""
QUICK_WRITE = 32 * 1024
"""A write no larger, to a transport with nothing waiting, cannot wait (high water: 64 KiB)."""


@dataclass(frozen=True)
class StreamSettings:
    """How the streams of one app behave."""

    retry_ms: int = 3000
    heartbeat: float = 15.0
    write_timeout: float = 30.0
    drain_timeout: float = 5.0
    replay_page: int = 2000
    socket_buffer: int = 64 * 1024  # SO_SNDBUF of a stream's connection (Linux doubles it)


def _buffered(transport: asyncio.BaseTransport | None) -> int:
    """Return the bytes waiting in ``transport``'s write buffer (0 once it is closing)."""
    if transport is None or transport.is_closing():
        return 0
    assert isinstance(transport, asyncio.WriteTransport)
    return transport.get_write_buffer_size()


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


class SseResponse(web.StreamResponse):
    """A stream response whose byte count survives a connection the server aborts.

    aiohttp counts a response's bytes when its end is written; a stream cut off before that
    keeps the count of what was handed to the connection, for the access log.
    """

    cut_at = 0
    direct_bytes = 0  # written by the stream's DirectWriter

    @property
    def body_length(self) -> int:
        return (super().body_length or self.cut_at) + self.direct_bytes


class DirectWriter:
    """Writes a round of live frames straight to a stream's connection, as aiohttp would.

    Everything else a stream sends goes through its aiohttp ``StreamResponse``, which frames,
    buffers and counts bytes. Live events to a stream that keeps up are the exception: with a
    thousand streams on a run, waking each stream's coroutine to write every round costs more
    than the writes (the fan-out benchmark in docs/benchmarks.md: p50 delay 9 ms this way,
    79 ms through each coroutine). So the hub writes the round's frames itself, here, and this
    writer keeps what the response would have guaranteed:

    - headers first: a subscriber makes its writer only after its first write through the
      response (headers and ``retry:`` line) has returned;
    - framing: one chunk per write when the response is chunked (HTTP/1.1), the bare bytes
      otherwise; SSE responses are never compressed;
    - order: the hub uses it only while the stream's coroutine waits for news, so nothing the
      response writes is ever cut in two;
    - counting: what it writes is added to the response's byte count for the access log.
    """

    __slots__ = ("chunked", "response", "transport")

    def __init__(self, response: SseResponse, transport: asyncio.Transport) -> None:
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
        """Write bytes already framed for this response (see :meth:`Round.framed`)."""
        self.transport.write(framed)
        self.response.direct_bytes += len(framed)


class Subscriber:
    """One SSE stream: its connection, position, live queue and byte count, in one place.

    - The connection: the request, the aiohttp response every write but one goes through
      (framing, buffering, byte count, bounded by the write and drain timeouts), and the
      :class:`DirectWriter` the hub uses once the stream follows live events (:meth:`go_live`).
    - The position: :attr:`last`, the offset (run version, or log position for the global feed)
      of the last event sent or handed to the connection; the replay and the live side both
      move it, and the hub skips what is at or before it.
    - The live queue: while the stream's coroutine waits for news (``idle``) with nothing
      queued, and the round fits in its connection's buffer with at most
      :data:`DIRECT_WRITE_LIMIT` waiting there, the hub writes the round's frames through the
      DirectWriter: no task switch per stream. Otherwise the events are queued for the
      coroutine, which writes them through the response, piece by piece as it drains.
    - The byte count: the backlog is what the client has not yet taken in: the bytes queued,
      the bytes taken but not yet handed to the transport (``inflight``) and the bytes waiting
      in the transport's write buffer. A round that would take the backlog past ``limit`` is
      neither written nor queued: the subscriber is dropped instead. An empty backlog takes a
      round whatever its size, so that one large event (or page) does not cut off a client
      that keeps up. ``peak`` is the largest backlog the subscriber ever had.

    The hub calls :meth:`offer`, :meth:`drop`, :meth:`close` and sets ``beat``; everything
    else is the stream's coroutine's.
    """

    __slots__ = (
        "beat",
        "by_position",
        "closed",
        "direct",
        "dropped",
        "ended",
        "filter",
        "finished",
        "http_writer",
        "idle",
        "inflight",
        "last",
        "last_write",
        "limit",
        "opened",
        "peak",
        "queue",
        "queued",
        "request",
        "response",
        "run_id",
        "sent",
        "settings",
        "transport",
        "wake",
    )

    def __init__(
        self,
        request: web.Request,
        settings: StreamSettings,
        *,
        run_id: str | None,
        limit: int,
        last: int = 0,
        filter: EventFilter | None = None,
    ) -> None:
        self.request = request
        self.settings = settings
        self.run_id = run_id
        self.by_position = run_id is None
        # The global feed's hub hands a filtered subscriber only the events that match; a
        # run's stream gets every event of its run (to see its end) and skips the others.
        self.filter = filter
        self.last = last
        self.limit = limit
        # the connection
        self.transport = request.transport
        self.response = SseResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        if request.version >= (1, 1):
            self.response.enable_chunked_encoding()
        self.http_writer: AbstractStreamWriter | None = None
        self.direct: DirectWriter | None = None
        self.opened = False
        self.sent = False
        self.finished = False
        self.last_write = time.monotonic()
        # the live queue and its bytes
        self.queue: deque[LiveEvent] = deque()
        self.queued = 0
        self.inflight = 0
        self.peak = 0
        self.wake = asyncio.Event()
        self.idle = False
        self.beat = False
        # how it ends
        self.ended = False
        self.dropped = False
        self.closed = False

    # --- the hub's side ---------------------------------------------------------------------

    def backlog(self) -> int:
        """Return the bytes this stream has been given and its client has not yet read."""
        return self.queued + self.inflight + _buffered(self.transport)

    def fits(self, size: int) -> bool:
        """Say whether ``size`` more bytes keep the backlog within the limit."""
        return self.backlog() + size <= self.limit

    def offset(self, event: LiveEvent) -> int:
        """Return the event's offset in this stream (log position or run version)."""
        return (event.rec.position or 0) if self.by_position else event.rec.version

    def offer(self, batch: Round) -> int:
        """Hand over one round's events: return how many were written directly, -1 if dropped."""
        if self.dropped or self.closed or self.ended:
            return 0
        events = batch.events
        writer = self.direct
        if self.idle and not self.queue and writer is not None and writer.usable():
            buffered = writer.buffered()
            if buffered + batch.size <= DIRECT_WRITE_LIMIT:
                start = 0
                while start < len(events) and self.offset(events[start]) <= self.last:
                    start += 1  # already sent by the replay
                if start == len(events):
                    return 0
                if self.by_position or self.offset(events[start]) == self.last + 1:
                    framed = batch.framed(start, writer.chunked)
                    writer.write(framed)
                    self.peak = max(self.peak, buffered + len(framed))
                    self.last = self.offset(events[-1])
                    self.last_write = time.monotonic()
                    if not self.by_position and batch.terminal:
                        self.ended = True
                        self.wake.set()
                    return len(events) - start
        backlog = self.backlog()
        if backlog and backlog + batch.size > self.limit:
            self.drop()
            return -1
        self.queue.extend(events)
        self.queued += batch.size
        self.peak = max(self.peak, backlog + batch.size)
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

    def close(self) -> None:
        """End the stream (the server is shutting down)."""
        self.closed = True
        self.wake.set()

    def reset_live(self) -> None:
        """Forget what the hub handed over (after unsubscribing, before subscribing again)."""
        self.queue.clear()
        self.queued = 0
        self.dropped = False
        self.wake.clear()

    # --- the stream's side ------------------------------------------------------------------

    async def open(self) -> None:
        """Send the response's headers."""
        self._limit_kernel_buffer()
        self.http_writer = await self.response.prepare(self.request)
        self.opened = True
        metrics.sse_subscribers.inc()

    def release(self) -> None:
        """Count the stream as gone (once it was opened)."""
        if self.opened:
            self.opened = False
            metrics.sse_subscribers.dec()

    def _limit_kernel_buffer(self) -> None:
        """Cap the kernel's send buffer of the connection (Linux grows it up to 4 MiB).

        What a client has not read also waits there, out of reach of the backlog limit; a
        thousand stalled clients would pin gigabytes of kernel memory, and filling it costs
        the server time every other client waits for.
        """
        size = self.settings.socket_buffer
        transport = self.transport
        raw = transport.get_extra_info("socket") if transport is not None else None
        if size and raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def retry_line(self) -> bytes:
        return retry_line(self.settings.retry_ms)

    def go_live(self) -> None:
        """Let the hub write live rounds to the connection directly, from :attr:`last` on.

        Only once the headers went out through the response (see :class:`DirectWriter`).
        """
        transport = self.transport
        if not self.sent or transport is None or (self.filter and not self.by_position):
            self.direct = None  # a filtered run stream writes what matches itself
            return
        assert isinstance(transport, asyncio.Transport)
        self.direct = DirectWriter(self.response, transport)

    async def send(self, frames: bytes | list[bytes], events: int = 0) -> None:
        """Write ``frames``; a client that does not take them within the write timeout is cut.

        They go to the response in pieces of at most :data:`WRITE_SLICE` bytes (a larger
        frame alone), each waiting for the connection to drain: the transport never holds
        much more than one piece, and a stream never copies a whole batch of shared frames.
        The bytes in flight go down as the pieces are handed over.
        """
        if isinstance(frames, bytes):
            frames = [frames]
        self.last_write = time.monotonic()
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
                    self.inflight = max(0, self.inflight - len(piece))
            self.sent = True
        except TimeoutError:
            # A cancelled drain leaves aiohttp's connection unable to write again: cut it.
            self.abort()
            raise
        finally:
            self.inflight = 0
            if events:
                metrics.sse_events_sent.inc(events)

    def buffered(self) -> int:
        """Return the bytes waiting in the connection's write buffer."""
        return _buffered(self.transport)

    def take(self) -> list[LiveEvent]:
        """Return every queued event and empty the queue (its bytes are now in flight)."""
        items = list(self.queue)
        self.queue.clear()
        self.inflight += self.queued
        self.queued = 0
        self.wake.clear()
        return items

    async def next_live(self) -> list[LiveEvent] | None:
        """Wait for queued events, sending heartbeats meanwhile; None when the stream must end.

        A stream the server shuts down, or the hub dropped, gets its last message here.
        """
        while True:
            if self.ended:
                return None
            if self.closed:
                await self.end(SHUTDOWN)
                return None
            if self.dropped:
                await self.end(
                    error_message(
                        "SubscriberOverflow",
                        "this client fell too far behind; reconnect with Last-Event-ID to resume",
                        lastEventId=self.last,
                    )
                )
                return None
            items = self.take()
            if items:
                return items
            if self.beat:
                self.beat = False
                if not self.fits(len(HEARTBEAT)):
                    # Not even a heartbeat fits: the client has read nothing for a while.
                    self.drop()
                    metrics.sse_dropped.inc()
                    log.warning(
                        "sse_subscriber_dropped",
                        run_id=self.run_id,
                        last_event_id=self.last,
                        limit=self.limit,
                    )
                    continue
                await self.send(HEARTBEAT)
                continue
            self.idle = True  # the hub may write to the connection directly meanwhile
            try:
                await self.wake.wait()
            finally:
                self.idle = False

    async def end(self, last: bytes) -> None:
        """End the stream early: ``last`` (a small message, so past the limit), then close."""
        self.response.force_close()
        await self.finish(last)

    async def finish(self, last: bytes = b"") -> None:
        """Write ``last`` and the end of the response, and wait until the client took it all.

        A client that does not take it within the drain timeout is cut: the server would
        otherwise hold the connection and its unsent bytes for as long as the client likes.
        """
        if self.finished:
            return
        self.finished = True
        transport = self.transport
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
        if self.http_writer is not None and not self.response.cut_at:
            self.response.cut_at = self.http_writer.output_size
        self.response.force_close()
        transport = self.transport
        if transport is not None:
            transport.abort()
