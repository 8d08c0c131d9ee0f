"""Authentication and roles (``serve --auth token``): who sent a request, and may they.

A request proves a token in one of three ways, tried in this order:

1. ``Authorization: Bearer <token>``;
2. ``?ticket=`` on a GET of an event route: a ticket from ``POST /auth/tickets``, which a
   browser's EventSource (it cannot send headers) puts in the URL. One use, 60 s, bound to the
   stream it was asked for (the log, or one run);
3. the ``fw_session`` cookie the web UI gets from ``POST /auth/session``: HttpOnly,
   SameSite=Strict, Secure under TLS. A request that changes something on the strength of the
   cookie alone must carry an ``Origin`` header naming this server.

Each route needs a role (:data:`ROUTE_ROLES`); a token of a lower role gets 403, no valid
token 401 with ``WWW-Authenticate: Bearer``. Every refusal is problem+json and stores nothing.
:func:`flowweaver.api.principal.principal` answers the token's name from here on.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from aiohttp import web

from flowweaver.domain.ids import canonical_run_id
from flowweaver.domain.tokens import TokenEntry, role_allows
from flowweaver.tokens import TokenRegistry, is_well_formed

from .errors import ApiError, Handler, problem_response

log = structlog.get_logger("flowweaver.api.auth")

PRINCIPAL_KEY: web.RequestKey[str] = web.RequestKey("principal", str)
"""Where the middleware leaves the token's name on the request (see principal())."""
SESSION_COOKIE = "fw_session"
TICKET_TTL = 60.0
MAX_TICKETS = 10_000
"""Tickets outstanding on one node at most; past it, POST /auth/tickets answers 503."""
REFRESH_INTERVAL = 0.25
"""Seconds between two reads of the store's token events: a revocation is seen within ~0.3 s."""
STALE_AFTER = 5.0
"""Seconds without a successful read of the tokens after which requests get 503, not a guess."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

OPEN = None
ROUTE_ROLES: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("POST", "/auth/session"): OPEN,  # checks the token in its body itself
    ("DELETE", "/auth/session"): OPEN,
    ("GET", "/openapi.json"): "reader",
    ("GET", "/metrics"): "reader",
    ("GET", "/workflows"): "reader",
    ("GET", "/workflows/{workflowId}"): "reader",
    ("GET", "/runs"): "reader",
    ("GET", "/runs/{runId}"): "reader",
    ("GET", "/runs/{runId}/events"): "reader",
    ("GET", "/runs/{runId}/lineage"): "reader",
    ("GET", "/runs/{runId}/verify"): "reader",
    ("GET", "/runs/{runId}/export"): "reader",
    ("GET", "/runs/{runId}/diff"): "reader",
    ("GET", "/events"): "reader",
    ("GET", "/events/{runId}"): "reader",
    ("POST", "/auth/tickets"): "reader",
    ("POST", "/workflows"): "submitter",
    ("POST", "/runs"): "submitter",
    ("POST", "/runs/{runId}/fork"): "operator",
    ("POST", "/runs/{runId}/pause"): "operator",
    ("POST", "/runs/{runId}/resume"): "operator",
    ("POST", "/runs/{runId}/cancel"): "operator",
    ("POST", "/runs/{runId}/tasks/{taskId}/retry"): "operator",
    ("POST", "/runs/{runId}/tasks/{taskId}/skip"): "operator",
    ("POST", "/runs/{runId}/tasks/{taskId}/complete"): "operator",
    ("POST", "/runs/{runId}/signals/{name}"): "operator",
    ("GET", "/schedules"): "reader",
    ("GET", "/schedules/{scheduleId}"): "reader",
    ("POST", "/schedules"): "submitter",
    ("POST", "/schedules/{scheduleId}/pause"): "operator",
    ("POST", "/schedules/{scheduleId}/resume"): "operator",
    ("POST", "/schedules/{scheduleId}/trigger"): "operator",
    ("DELETE", "/schedules/{scheduleId}"): "operator",
    ("GET", "/"): OPEN,  # the web UI's pages and assets: no data, and the sign-in page
    ("GET", "/ui/{path}"): OPEN,
    ("GET", "/auth/whoami"): "reader",
    ("GET", "/auth/tokens"): "admin",
    ("POST", "/auth/tokens"): "admin",
    ("POST", "/auth/tokens/{name}/revoke"): "admin",
}
"""The role each route needs (None: open to all). HEAD is GET; a route missing here is admin's."""
STREAM_ROUTES = frozenset({"/events", "/events/{runId}", "/runs/{runId}/events"})
"""The routes a ticket opens."""


def required_role(request: web.Request) -> str | None:
    """Return the role ``request``'s route needs, None when it is open to all.

    An unknown path or method needs a valid token too (reader), so that what exists is not
    told to strangers; a route missing from :data:`ROUTE_ROLES` needs admin. OPTIONS is open:
    a browser's CORS preflight never carries credentials, and it answers no data.
    """
    if request.method == "OPTIONS":
        return OPEN
    route = request.match_info.route
    resource = route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "reader"
    method = "GET" if request.method == "HEAD" else request.method
    return ROUTE_ROLES.get((method, resource.canonical), "admin")


# --- tickets ----------------------------------------------------------------------------------


def stream_target(path: str) -> str | None:
    """Return what an event route's path streams: ``log`` or a canonical run id; None if none."""
    parts = path.split("/")
    if path == "/events":
        return "log"
    if len(parts) == 3 and parts[1] == "events":  # /events/{runId}
        return canonical_run_id(parts[2])
    if len(parts) == 4 and parts[1] == "runs" and parts[3] == "events":  # /runs/{runId}/events
        return canonical_run_id(parts[2])
    return None


@dataclass(frozen=True, slots=True)
class Ticket:
    """A one-use permission to open one stream as a token's principal, until ``expires``."""

    token_name: str
    target: str
    expires: float


class TicketBook:
    """This node's outstanding tickets (a ticket is used on the node that issued it)."""

    def __init__(self, *, ttl: float = TICKET_TTL, limit: int = MAX_TICKETS) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = time.monotonic
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def issue(self, token_name: str, target: str) -> tuple[str, datetime]:
        """Return a new ticket for ``target`` and when it expires.

        Raises:
            ApiError: too many tickets are outstanding (503).
        """
        now = self.clock()
        with self._lock:
            if len(self._tickets) >= self.limit:
                self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
            if len(self._tickets) >= self.limit:
                raise ApiError(
                    503,
                    "too-many-tickets",
                    f"{self.limit} tickets are outstanding; use them or let them expire",
                    headers={"Retry-After": str(int(self.ttl))},
                )
            ticket = "fwt_" + secrets.token_urlsafe(32)
            self._tickets[ticket] = Ticket(token_name, target, now + self.ttl)
        expires_at = datetime.now(UTC) + timedelta(seconds=self.ttl)
        return ticket, expires_at

    def use(self, ticket: str, target: str | None) -> str:
        """Spend ``ticket`` on ``target``; return the name of the token it was issued to.

        A ticket is spent by any attempt, right or wrong, so a leaked URL opens nothing later.

        Raises:
            ApiError: unknown, used, expired, or issued for another stream (401).
        """
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None:
            raise _unauthorized("the ticket is unknown or was used already", "invalid_token")
        if found.expires <= self.clock():
            raise _unauthorized("the ticket expired; ask POST /auth/tickets for another")
        if target is None or not secrets.compare_digest(found.target, target):
            raise _unauthorized("the ticket was issued for another stream", "invalid_token")
        return found.token_name


# --- the middleware ---------------------------------------------------------------------------

TOKENS: web.AppKey[TokenRegistry] = web.AppKey("tokens", TokenRegistry)
TICKETS: web.AppKey[TicketBook] = web.AppKey("tickets", TicketBook)


def _unauthorized(detail: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="flowweaver"'
    if error is not None:
        challenge += f', error="{error}"'
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})


def _bearer(header: str, registry: TokenRegistry) -> TokenEntry:
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized("send Authorization: Bearer <token>", "invalid_request")
    return known_token(secret, registry)


def known_token(secret: str, registry: TokenRegistry) -> TokenEntry:
    """Return the live token whose secret is ``secret``.

    Raises:
        ApiError: the secret is malformed, unknown or revoked (401).
    """
    if not is_well_formed(secret):
        raise _unauthorized("the token is malformed", "invalid_token")
    entry = registry.lookup(secret)
    if entry is None:
        raise _unauthorized("the token is unknown", "invalid_token")
    if entry.revoked:
        raise _unauthorized("the token was revoked", "invalid_token")
    return entry


def same_origin(request: web.Request) -> str:
    """Return this server's origin as a browser names it in ``Origin`` (scheme://host)."""
    return f"{request.scheme}://{request.host}".lower()


def check_origin(request: web.Request) -> None:
    """Refuse a cookie-borne request whose ``Origin`` is missing or names another site.

    Raises:
        ApiError: 403.
    """
    origin = request.headers.get("Origin")
    if origin is None or origin.lower() != same_origin(request):
        shown = "no Origin header" if origin is None else f"Origin {origin[:100]!r}"
        raise ApiError(
            403,
            "origin-refused",
            f"a request signed in by cookie must come from this server's pages; it has {shown}",
        )


def authenticate(request: web.Request) -> TokenEntry:
    """Return the token ``request`` proves: by header, ticket or cookie, in that order.

    Raises:
        ApiError: none, or one that is malformed, unknown, revoked or spent (401); a cookie
            request that changes something from another origin (403).
    """
    registry = request.app[TOKENS]
    header = request.headers.get("Authorization")
    if header is not None:
        return _bearer(header, registry)
    ticket = request.query.get("ticket")
    if ticket is not None and request.method in ("GET", "HEAD"):
        route = request.match_info.route.resource
        canonical = route.canonical if route is not None else ""
        target = stream_target(request.path) if canonical in STREAM_ROUTES else None
        name = request.app[TICKETS].use(ticket, target)
        entry = registry.get(name)
        if entry is None or entry.revoked:
            raise _unauthorized("the ticket's token was revoked", "invalid_token")
        return entry
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None:
        entry = known_token(cookie, registry)
        if request.method not in SAFE_METHODS:
            check_origin(request)
        return entry
    raise _unauthorized("this server needs a token: send Authorization: Bearer <token>")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let a request through only with a token whose role its route needs."""
    needed = required_role(request)
    if needed is None:
        return await handler(request)
    registry = request.app[TOKENS]
    if registry.age() > STALE_AFTER:
        raise ApiError(
            503,
            "tokens-unavailable",
            "the server cannot read its tokens from the store right now",
            headers={"Retry-After": "1"},
        )
    entry = authenticate(request)
    if not role_allows(entry.role, needed):
        resource = request.match_info.route.resource
        what = resource.canonical if resource is not None else request.path
        raise ApiError(
            403,
            "forbidden",
            f"token {entry.name!r} has the role {entry.role}; "
            f"{request.method} {what} needs {needed}",
        )
    request[PRINCIPAL_KEY] = entry.name
    return await handler(request)


def refusal_before_body(request: web.Request) -> web.Response | None:
    """Return the 401 or 403 a request will get, for ``Expect: 100-continue``; None if none.

    The expectation is answered before the middleware runs: without this, a client with no
    token would be told to upload its body only to have it refused.
    """
    if TOKENS not in request.app or request.method in SAFE_METHODS:
        return None  # no body worth sparing (and a ticket is spent only once, by the middleware)
    needed = required_role(request)
    if needed is None:
        return None
    try:
        entry = authenticate(request)
    except ApiError as e:
        headers = e.headers
        return problem_response(e.status, e.slug, e.detail, instance=request.path, headers=headers)
    if role_allows(entry.role, needed):
        return None
    detail = f"token {entry.name!r} has the role {entry.role}; this route needs {needed}"
    return problem_response(403, "forbidden", detail, instance=request.path)


def enable_auth(app: web.Application, registry: TokenRegistry) -> None:
    """Check tokens on ``app``'s requests: the middleware, the ticket book, a refresher."""
    app[TOKENS] = registry
    app[TICKETS] = TicketBook()
    app.middlewares.append(auth_middleware)
    app.cleanup_ctx.append(_refresher)


async def _refresher(app: web.Application) -> AsyncIterator[None]:
    registry = app[TOKENS]
    await asyncio.to_thread(registry.refresh)  # start with the tokens, or do not start
    task = asyncio.create_task(_refresh_tokens(app, registry))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _refresh_tokens(app: web.Application, registry: TokenRegistry) -> None:
    """Read new token events every REFRESH_INTERVAL, so revocations elsewhere are seen, and
    end the live streams of revoked tokens (their clients reconnect and get a 401)."""
    from .app import HUB  # noqa: PLC0415 - the app module imports this one

    hub = app[HUB]
    failing = False
    checked = registry.version  # the registry's version when streams were last checked

    def revoked(request: web.Request) -> bool:
        name = request.get(PRINCIPAL_KEY)
        entry = registry.get(name) if name is not None else None
        return entry is not None and entry.revoked

    while True:
        await asyncio.sleep(REFRESH_INTERVAL)
        try:
            await asyncio.to_thread(registry.refresh)
        except Exception as e:  # noqa: BLE001 - the store's failure; requests get 503 once stale
            if not failing:
                log.warning("tokens_refresh_failed", error=str(e))
            failing = True
            continue
        failing = False
        if registry.version == checked:
            continue  # no token changed: no stream to end
        checked = registry.version
        ended = hub.end_streams(revoked)
        if ended:
            log.info("streams_of_revoked_tokens_ended", streams=ended)
