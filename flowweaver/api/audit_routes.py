"""Audit reads: the global log as JSON pages, and filtered pages of a run's history.

``GET /events`` with ``Accept: application/json`` answers ``{events, next}``: every run's events
after log position ``after``, each with its ``position``. ``?types=A,B`` and ``?runId=`` filter
it (as they filter the SSE feed), and ``?types=`` filters ``GET /runs/{id}/events`` too.

A filtered page costs the server a bounded amount of work whatever matches: it looks at
:data:`SCAN_BUDGET` records of the log at most, and when that runs out before the page is full
it answers what it found with the cursor of the last record it looked at, so the client pages
on from there (``next`` is null only once the end of the log is reached).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from aiohttp import web

from flowweaver.errors import NotFoundError
from flowweaver.ports import RecordedEvent, StoreReader

from . import schemas
from .app import BRIDGE
from .sse import event_json
from .sse.filters import EventFilter

JSON = "application/json"
SCAN_BUDGET = 10_000
"""The most log records one filtered page looks at."""
SCAN_CHUNK = 1000
"""Records read from the store at a time while scanning."""

Reader = Callable[[int, int], list[RecordedEvent]]
Offset = Callable[[RecordedEvent], int]


def wants_json(request: web.Request) -> bool:
    """Say whether the request asks for JSON rather than an event stream."""
    accept = request.headers.get("Accept", "")
    return JSON in accept and "text/event-stream" not in accept


def scan(
    read: Reader,
    offset: Offset,
    after: int,
    limit: int,
    wanted: EventFilter | None,
    *,
    budget: int | None = None,
) -> tuple[list[RecordedEvent], int | None]:
    """Return up to ``limit`` events after ``after`` that ``wanted`` matches, and the cursor.

    ``read(after, n)`` returns the next ``n`` records; at most ``budget`` are looked at. The
    cursor is the offset to continue after: None when the end was reached, else the offset of
    the last record looked at (the last event returned, when the page is full). ``budget``
    defaults to :data:`SCAN_BUDGET`.
    """
    if budget is None:
        budget = SCAN_BUDGET
    found: list[RecordedEvent] = []
    position = after
    scanned = 0
    chunk_size = limit if wanted is None else SCAN_CHUNK
    while scanned < budget:
        chunk = min(chunk_size, budget - scanned)
        page = read(position, chunk)
        for rec in page:
            position = offset(rec)
            if wanted is None or wanted.matches(rec):
                found.append(rec)
                if len(found) == limit:
                    return found, position
        scanned += len(page)
        if len(page) < chunk:
            return found, None
    return found, position


def _scan_log(
    store: StoreReader, after: int, limit: int, wanted: EventFilter | None
) -> tuple[list[RecordedEvent], int | None]:
    return scan(
        lambda position, n: store.read_log(after=position, limit=n),
        lambda rec: rec.position or 0,
        after,
        limit,
        wanted,
    )


def _scan_run(
    store: StoreReader, run_id: str, after: int, limit: int, wanted: EventFilter
) -> tuple[list[RecordedEvent], int | None]:
    return scan(
        lambda version, n: store.read_run(run_id, after=version, limit=n),
        lambda rec: rec.version,
        after,
        limit,
        wanted,
    )


async def _check_run(request: web.Request, run_id: str) -> None:
    if not await request.app[BRIDGE].read_run(run_id, upto=1):
        raise NotFoundError("run", run_id)


async def check_filter_run(request: web.Request, wanted: EventFilter | None) -> None:
    """Return when the filter names no run, or one that exists.

    Raises:
        NotFoundError: the filter's run does not exist.
    """
    if wanted is not None and wanted.run_id is not None:
        await _check_run(request, wanted.run_id)


async def log_page(request: web.Request, wanted: EventFilter | None) -> web.Response:
    """Answer ``GET /events`` as JSON: a page of the log after ``after``, filtered.

    Raises:
        ApiError: a malformed ``after`` or ``limit`` (400).
        NotFoundError: the filter's run does not exist.
    """
    query = schemas.decode_query(request.query, schemas.HistoryQuery)
    await check_filter_run(request, wanted)
    found, cursor = await request.app[BRIDGE].read_store(
        _scan_log, query.after, query.limit, wanted
    )
    body = b'{"events":[%b],"next":%b}' % (
        b",".join(b'{"position":%d,%b' % (rec.position or 0, event_json(rec)[1:]) for rec in found),
        b"null" if cursor is None else b"%d" % cursor,
    )
    return web.Response(body=body, content_type=JSON)


async def run_page(request: web.Request, run_id: str, wanted: EventFilter) -> web.Response:
    """Answer ``GET /runs/{id}/events?types=`` as JSON: a filtered page of the run's history.

    Raises:
        ApiError: a malformed ``after`` or ``limit`` (400).
        NotFoundError: no such run.
    """
    query = schemas.decode_query(request.query, schemas.HistoryQuery)
    found, cursor = await request.app[BRIDGE].read_store(
        _scan_run, run_id, query.after, query.limit, wanted
    )
    if not found:
        await _check_run(request, run_id)
    body = b'{"runId":%b,"events":[%b],"nextAfter":%b}' % (
        msgspec.json.encode(run_id),
        b",".join(event_json(rec) for rec in found),
        b"null" if cursor is None else b"%d" % cursor,
    )
    return web.Response(body=body, content_type=JSON)
