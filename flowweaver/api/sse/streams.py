"""The HTTP side of SSE: a run's stream and the global feed, from the resume offset to the end.

A stream replays stored events after the client's offset straight from the store, then follows
live events from the :class:`~.hub.Hub`. The switch has no gap and no duplicate because
subscribing and the hub's fan-out both happen on the loop: every event past the hub's position
at the moment of subscription is delivered live, and the store read that follows the
subscription holds everything before it; the subscriber's position (the offset of the last
event sent) removes the overlap. When the tailer is running a stream subscribes first and reads
once; otherwise it replays, subscribes and reads again. Per-run streams count by run version,
the global feed by log position.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from flowweaver.api.bridge import EngineBridge
from flowweaver.api.errors import bad_request
from flowweaver.errors import NotFoundError, StoreError
from flowweaver.ports import RecordedEvent

from .filters import EventFilter
from .framing import TERMINAL, error_message, is_terminal, sse_frame
from .hub import Hub
from .subscriber import StreamSettings, Subscriber

log = structlog.get_logger("flowweaver.api.sse")

MAX_OFFSET = 2**63 - 1


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
        raise bad_request(f"{what} must be a non-negative integer", path=path)
    return int(text)


# --- one run ----------------------------------------------------------------------------------


async def run_stream(
    request: web.Request,
    bridge: EngineBridge,
    hub: Hub,
    settings: StreamSettings,
    run_id: str,
    event_filter: EventFilter | None = None,
) -> web.StreamResponse:
    """Answer a per-run SSE request: replay after the offset, then follow until the run ends.

    With ``event_filter`` only the events it matches are sent; the stream still ends after
    the run's terminal event, sent or not.

    Raises:
        ApiError: bad offset, or an offset beyond the run's last event (400), before streaming.
        NotFoundError: no such run (404), before streaming.
    """
    after = parse_offset(request)
    page_size = settings.replay_page
    sub = Subscriber(
        request, settings, run_id=run_id, limit=hub.buffer, last=after, filter=event_filter
    )
    # When the tailer is running, subscribing first lets one read of the store both check
    # the offset and replay everything before the live events (duplicates are skipped by
    # version). A long history, or a parked tailer, takes the two-step way in _follow_run.
    early = hub.try_subscribe(sub)
    try:
        # One read both checks the offset (version `after` must exist) and starts the replay.
        first = await bridge.read_run(
            run_id, after=max(after - 1, 0), limit=page_size + (1 if after else 0)
        )
        ended = False
        if after > 0 and first:
            ended = is_terminal(first[0])
            first = first[1:]
        elif not first:
            if after <= 1 or not await bridge.read_run(run_id, upto=1):
                raise NotFoundError("run", run_id)
            raise bad_request(
                f"the run has fewer than {after} events; resume from an id it sent",
                path="$.after",
            )
        if early and len(first) >= page_size:
            # A long replay: do not let live events pile up meanwhile.
            hub.unsubscribe(sub)
            sub.reset_live()
            early = False

        async def body() -> None:
            if ended:
                await sub.send(sub.retry_line())
            else:
                await _follow_run(sub, bridge, hub, first, subscribed=early)

        return await _respond(sub, body)
    finally:
        hub.unsubscribe(sub)


async def _follow_run(
    sub: Subscriber,
    bridge: EngineBridge,
    hub: Hub,
    first: list[RecordedEvent],
    *,
    subscribed: bool,
) -> None:
    if await _send_page(sub, first, sub.retry_line()):
        return
    if not subscribed:
        if len(first) >= sub.settings.replay_page and await _replay_run(sub, bridge):
            return
        await hub.subscribe(sub)
    # else: subscribed before `first` was read, so nothing can fall between
    try:
        if not subscribed and await _replay_run(sub, bridge):
            return
        sub.go_live()
        await _live_run(sub, bridge)
    finally:
        hub.unsubscribe(sub)


async def _live_run(sub: Subscriber, bridge: EngineBridge) -> None:
    """Write the run's live events until it ends (or the stream is dropped or closed)."""
    assert sub.run_id is not None
    while True:
        items = await sub.next_live()
        if items is None:
            return
        frames: list[bytes] = []
        last = sub.last
        wanted = sub.filter
        for event in items:
            version = event.rec.version
            if version <= last:
                continue  # already sent by the replay
            if version != last + 1:
                # The store has events the live feed skipped past (a page boundary
                # race in another store): fill the hole from the store, in order.
                hole = await bridge.read_run(sub.run_id, after=last, upto=version - 1)
                for rec in hole:
                    if wanted is None or wanted.matches(rec):
                        frames.append(sse_frame(rec.version, rec))
                    last = rec.version
            if wanted is None or wanted.matches(event.rec):
                frames.append(event.run_frame)
            last = version
            if is_terminal(event.rec):
                sub.ended = True
                break
        sub.last = last
        if frames:
            await sub.send(frames, len(frames))
        if sub.ended:
            return


async def _send_page(sub: Subscriber, page: list[RecordedEvent], prefix: bytes = b"") -> bool:
    """Send a page of stored events, stopping at a terminal one; return whether it ended."""
    frames: list[bytes] = [prefix] if prefix else []
    ended = False
    last = sub.last
    wanted = sub.filter
    for rec in page:  # up to a page of 2000: no call per event that can be spared
        if wanted is None or wanted.matches(rec):
            frames.append(sse_frame(rec.version, rec))
        last = rec.version
        if rec.name.encode() in TERMINAL:
            ended = True
            break
    sub.last = last
    if frames:
        await sub.send(frames, len(frames) - (1 if prefix else 0))
    return ended


async def _replay_run(sub: Subscriber, bridge: EngineBridge) -> bool:
    """Send the run's stored events after the position in pages; return whether it ended."""
    assert sub.run_id is not None
    page_size = sub.settings.replay_page
    while True:
        page = await bridge.read_run(sub.run_id, after=sub.last, limit=page_size)
        ended = await _send_page(sub, page)
        if ended or len(page) < page_size:
            return ended


# --- every run --------------------------------------------------------------------------------


async def log_stream(
    request: web.Request,
    bridge: EngineBridge,
    hub: Hub,
    settings: StreamSettings,
    event_filter: EventFilter | None = None,
) -> web.StreamResponse:
    """Answer a global-feed SSE request: every run's events after a log position, forever.

    With ``event_filter`` only the events it matches are sent, still by log position.

    Raises:
        ApiError: bad offset, or one beyond the end of the log (400), before streaming.
    """
    after = parse_offset(request)
    top = await bridge.max_position()
    if after > top:
        raise bad_request(
            f"the log ends at position {top}; resume from an id it sent", path="$.after"
        )
    sub = Subscriber(
        request, settings, run_id=None, limit=hub.buffer, last=after, filter=event_filter
    )

    async def body() -> None:
        await sub.send(sub.retry_line())
        await _follow_log(sub, bridge, hub)

    return await _respond(sub, body)


async def _respond(sub: Subscriber, body: Callable[[], Awaitable[None]]) -> web.StreamResponse:
    """Send the headers, then ``body`` (not for a HEAD), then the end; a client may have left."""
    await sub.open()
    try:
        if sub.request.method != "HEAD":  # a HEAD gets the headers only: the checks passed
            await body()
        await sub.finish()
    except (ConnectionResetError, TimeoutError):
        pass
    except StoreError as e:
        await _end_on_store_error(sub, e)
    finally:
        sub.release()
    return sub.response


async def _follow_log(sub: Subscriber, bridge: EngineBridge, hub: Hub) -> None:
    await _replay_log(sub, bridge, None)
    await hub.subscribe(sub)
    try:
        # Everything up to the hub's position at subscription is stored: read it; what
        # comes after is delivered live.
        await _replay_log(sub, bridge, hub.position)
        sub.go_live()
        while True:
            items = await sub.next_live()
            if items is None:
                return
            frames = [e.log_frame for e in items if (e.rec.position or 0) > sub.last]
            if frames:
                sub.last = max(sub.last, items[-1].rec.position or 0)
                await sub.send(frames, len(frames))
    finally:
        hub.unsubscribe(sub)


async def _replay_log(sub: Subscriber, bridge: EngineBridge, until: int | None) -> None:
    """Send the log's stored events after the position in pages, up to ``until`` if given."""
    page_size = sub.settings.replay_page
    while until is None or sub.last < until:
        page = await bridge.read_log(after=sub.last, limit=page_size)
        if not page:
            return
        wanted = sub.filter
        frames = [
            sse_frame(rec.position or 0, rec)
            for rec in page
            if wanted is None or wanted.matches(rec)
        ]
        sub.last = page[-1].position or sub.last  # what did not match is passed over too
        if frames:
            await sub.send(frames, len(frames))
        if len(page) < page_size:
            return


# --- ends -------------------------------------------------------------------------------------


async def _end_on_store_error(sub: Subscriber, error: StoreError) -> None:
    """End a stream whose store failed once headers were sent: a last message, then close."""
    log.warning("sse_store_failed", error=str(error))
    await sub.end(
        error_message(
            "StoreUnavailable", "the event store failed; reconnect with Last-Event-ID to resume"
        )
    )
