"""The process's one tailer of the event log, fanning each new page out to the subscribers.

The hub is one asyncio task that waits on the store in a thread of the bridge and hands each
new page of the log to every :class:`~.subscriber.Subscriber` that follows it: a small round
straight to the connection of each stream that keeps up, else into the stream's queue (see
:meth:`Subscriber.offer`). A subscriber whose backlog would pass its limit is dropped here.
One timer tells every idle stream when to send a keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

import structlog
from aiohttp import web

from flowweaver.api.bridge import EngineBridge
from flowweaver.backoff import Backoff
from flowweaver.observability import metrics
from flowweaver.ports import RecordedEvent

from .filters import EventFilter
from .framing import LiveEvent, Round
from .subscriber import Subscriber

log = structlog.get_logger("flowweaver.api.sse")
_TAIL_BACKOFF = Backoff(base=0.05, cap=5.0)


class Hub:
    """The process's one tailer of the event log, fanning new events out to subscribers.

    With nobody subscribed for ``linger`` seconds the tailer parks and reads nothing, so that
    an API nobody follows costs the engine nothing per append. The first subscriber to arrive
    then moves :attr:`position` to the end of the log before it registers: what is stored up
    to there its own read from the store finds, and what comes after, the tailer delivers.
    ``buffer`` is the byte limit of each subscriber's backlog.
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
        self._filtered: dict[EventFilter, set[Subscriber]] = {}  # global feeds with a filter
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

    def _all(self) -> Iterator[Subscriber]:
        yield from self._global
        for filtered in self._filtered.values():
            yield from filtered
        for subs in self._by_run.values():
            yield from subs

    def end_streams(self, where: Callable[[web.Request], bool]) -> int:
        """End the live streams whose request ``where`` picks (their token was revoked, say);
        return how many."""
        chosen = [sub for sub in self._all() if where(sub.request)]
        for sub in chosen:
            sub.close()
        return len(chosen)

    def peak_backlog(self) -> int:
        """Return the largest backlog, in bytes, any subscriber has had (gone ones included)."""
        return max([self.peak, *(sub.peak for sub in self._all())])

    async def start(self) -> None:
        """Start the tailer (parked until someone subscribes)."""
        self._task = asyncio.create_task(self._tail(), name="flowweaver-sse-tailer")
        self._beats = asyncio.create_task(self._beat(), name="flowweaver-sse-heartbeat")

    async def subscribe(self, sub: Subscriber) -> None:
        """Register ``sub`` (a run's stream, or the global feed's) for live events.

        Every event past :attr:`position` at the moment this returns will be offered to it.
        While the server shuts down, ``sub`` is closed instead.

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
                sub.close()
            else:
                self._register(sub)
        finally:
            self._joining -= 1

    def try_subscribe(self, sub: Subscriber) -> bool:
        """Register ``sub`` at once if the tailer is running (else use :meth:`subscribe`)."""
        if self._parked or self._closing:
            return False
        self._register(sub)
        return True

    def _register(self, sub: Subscriber) -> None:
        if sub.run_id is None and sub.filter is not None:
            self._filtered.setdefault(sub.filter, set()).add(sub)
        elif sub.run_id is None:
            self._global.add(sub)
        else:
            self._by_run.setdefault(sub.run_id, set()).add(sub)
        self._count += 1

    async def _unpark(self) -> None:
        top = await self.bridge.max_position()
        self.position = max(self.position, top)
        self._parked = False
        self._active.set()

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop offering events to ``sub`` (idempotent)."""
        if sub.run_id is None and sub.filter is not None:
            filtered = self._filtered.get(sub.filter)
            found = filtered is not None and sub in filtered
            if filtered is not None:
                filtered.discard(sub)
                if not filtered:
                    del self._filtered[sub.filter]
        elif sub.run_id is None:
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
        for sub in list(self._all()):
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
            for sub in self._all():
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
                delay = _TAIL_BACKOFF.delay(failures)  # no overflow after 1,024 failures
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
            if self._global or self._filtered:
                every.append(event)
            if rec.run_id in self._by_run:
                by_run.setdefault(rec.run_id, []).append(event)
        written = 0
        dropped: list[Subscriber] = []
        rounds = [
            (Round(events, by_position=False), self._by_run[run_id])
            for run_id, events in by_run.items()
        ]
        if every and self._global:
            rounds.append((Round(every, by_position=True), self._global))
        for wanted, subs in self._filtered.items():
            matching = [event for event in every if wanted.matches(event.rec)]
            if matching:  # one round per distinct filter, its frames shared by its streams
                rounds.append((Round(matching, by_position=True), subs))
        for batch, subs in rounds:
            for sub in subs:
                n = sub.offer(batch)
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
