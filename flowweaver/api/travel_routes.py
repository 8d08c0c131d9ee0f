"""Time travel over HTTP: a run's state as of an instant, and the diff between two versions.

``GET /runs/{id}?asOf=RFC3339`` is answered by :func:`as_of_version` from the run route;
``GET /runs/{id}/diff?from=N&to=M`` is registered here. Both read the store (never an actor)
through :mod:`flowweaver.travel`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from flowweaver import travel
from flowweaver.domain.ids import canonical_run_id
from flowweaver.errors import NotFoundError, ValidationError

from . import schemas
from .app import BRIDGE
from .errors import ApiError, bad_request
from .sse import event_json

JSON = "application/json"


ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def add_travel_routes(app: web.Application, expect_handler: ExpectHandler | None = None) -> None:
    """Register the diff route (``asOf`` is a parameter of the run route)."""
    app.router.add_get("/runs/{runId}/diff", get_run_diff, expect_handler=expect_handler)


def _run_id(request: web.Request) -> str:
    raw = request.match_info["runId"]
    run_id = canonical_run_id(raw)
    if run_id is None:
        raise NotFoundError("run", raw[:80])
    return run_id


async def as_of_version(request: web.Request, run_id: str, text: str, at: int | None) -> int:
    """Return the run's version as of the instant ``text`` names (``?asOf=``).

    Raises:
        ApiError: ``at`` is given too, ``text`` is no RFC 3339 timestamp with an offset, or
            the instant is before the run's first event (400).
        NotFoundError: no such run.
    """
    if at is not None:
        raise bad_request(
            "give either at (a version) or asOf (an instant), not both", path="$.query.asOf"
        )
    try:
        instant = travel.parse_instant(text)
    except ValueError:
        # Not the parser's message: it quotes the value, and error answers quote nothing sent.
        raise bad_request(
            "query parameter asOf must be an RFC 3339 timestamp with an offset, "
            "such as 2026-01-31T09:30:00Z",
            path="$.query.asOf",
        ) from None
    version = await request.app[BRIDGE].read_store(travel.version_at, run_id, instant)
    if version == 0:
        raise bad_request(
            f"the run began after {instant.isoformat()}; asOf must not be before its first event",
            path="$.query.asOf",
        )
    return version


async def get_run_diff(request: web.Request) -> web.Response:
    """Return what changed in a run from version ``from`` to ``to``, with the events between."""
    run_id = _run_id(request)
    query = schemas.decode_query(request.query, schemas.DiffQuery)
    start, end = query.from_, query.to
    for name, value in (("from", start), ("to", end)):
        if value is None:
            raise bad_request(
                f"query parameter {name} is required: diff?from=N&to=M", path=f"$.query.{name}"
            )
    try:
        found = await request.app[BRIDGE].read_store(
            travel.diff_run, run_id, start, end, limit=travel.MAX_DIFF_EVENTS
        )
    except ValidationError as e:
        first = e.errors[0]
        raise ApiError(400, "bad-request", first.message, errors=e.errors) from None
    return web.Response(body=diff_json(found), content_type=JSON)


def diff_json(found: travel.RunDiff) -> bytes:
    """Return a diff as ``GET /runs/{id}/diff`` answers it (stored events are not decoded)."""
    encode = schemas.encoder.encode
    return b'{"runId":%b,"from":%d,"to":%d,"run":%b,"tasks":%b,"events":[%b],' % (
        encode(found.run_id),
        found.start,
        found.end,
        encode(found.changes.run),
        encode(found.changes.tasks),
        b",".join(event_json(rec) for rec in found.events),
    ) + b'"eventCount":%d,"eventsTruncated":%b,"nextAfter":%b}' % (
        found.end - found.start,
        b"true" if found.truncated else b"false",
        b"null" if found.next_after is None else b"%d" % found.next_after,
    )
