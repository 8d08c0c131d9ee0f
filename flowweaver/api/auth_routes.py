"""The routes of authentication: tickets for EventSource, the UI's cookie, admin token routes.

With ``serve --auth none`` there is nothing to sign in to: every route here answers 404.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from flowweaver.domain.ids import ID_PATTERN, whole_string
from flowweaver.domain.tokens import Role
from flowweaver.tokens import TokenOut, token_out

from . import schemas
from .auth import (
    SESSION_COOKIE,
    TICKETS,
    TOKENS,
    check_origin,
    known_token,
    same_origin,
    stream_target,
)
from .errors import ApiError, bad_request
from .principal import principal

JSON = "application/json"
_Name = Annotated[str, msgspec.Meta(pattern=whole_string(ID_PATTERN))]


class TicketRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /auth/tickets: the event route the ticket is for (``/events``, ``/events/{runId}``
    or ``/runs/{runId}/events``)."""

    path: Annotated[str, msgspec.Meta(max_length=200)]


class TicketOut(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A ticket: pass it as ``?ticket=`` on a GET of the stream it was asked for, once."""

    ticket: str
    expires_at: datetime


class SessionRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /auth/session: the token the UI signs in with."""

    token: Annotated[str, msgspec.Meta(max_length=200)]


class TokenRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /auth/tokens: a new token's name and role."""

    name: _Name
    role: Role


class TokenCreatedOut(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A new token: ``token`` is shown this once; the server keeps only its hash."""

    name: str
    role: str
    token: str
    created_at: str


class TokenList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /auth/tokens: every token, by name, without hashes."""

    tokens: list[TokenOut]


_ticket_decoder = msgspec.json.Decoder(TicketRequest)
_session_decoder = msgspec.json.Decoder(SessionRequest)
_token_decoder = msgspec.json.Decoder(TokenRequest)
AUTH_WIRE_TYPES = (
    TicketRequest,
    TicketOut,
    SessionRequest,
    TokenRequest,
    TokenCreatedOut,
    TokenList,
)


def add_auth_routes(app: web.Application, expect: Any) -> None:
    """Register the authentication routes on ``app``."""
    r = app.router
    r.add_post("/auth/tickets", post_ticket, expect_handler=expect)
    r.add_post("/auth/session", post_session, expect_handler=expect)
    r.add_delete("/auth/session", delete_session, expect_handler=expect)
    r.add_get("/auth/tokens", list_tokens, expect_handler=expect)
    r.add_post("/auth/tokens", post_token, expect_handler=expect)
    r.add_post("/auth/tokens/{name}/revoke", revoke_token, expect_handler=expect)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=schemas.encoder.encode(body), status=status, content_type=JSON, headers=headers
    )


def _auth_on(request: web.Request) -> None:
    if TOKENS not in request.app:
        raise ApiError(
            404,
            "auth-off",
            "this server runs without authentication (serve --auth none): nothing to sign in to",
        )


async def _body(request: web.Request) -> bytes:
    from .routes import _read_json_body  # noqa: PLC0415 - routes imports this module

    body = await _read_json_body(request)
    assert body is not None
    return body


async def post_ticket(request: web.Request) -> web.Response:
    """Issue a ticket for one event stream: 60 s, one use, this principal."""
    _auth_on(request)
    wanted = schemas.decode_body(_ticket_decoder, await _body(request))
    target = stream_target(wanted.path.partition("?")[0])
    if target is None:
        raise bad_request(
            "path must be /events, /events/{runId} or /runs/{runId}/events", path="$.path"
        )
    ticket, expires_at = request.app[TICKETS].issue(principal(request), target)
    return _json(TicketOut(ticket=ticket, expires_at=expires_at), status=201)


async def post_session(request: web.Request) -> web.Response:
    """Sign the UI in: check the token, answer 204 with it in an HttpOnly cookie."""
    _auth_on(request)
    if request.headers.get("Origin") is not None:
        check_origin(request)  # no other site signs a browser in to this one
    wanted = schemas.decode_body(_session_decoder, await _body(request))
    known_token(wanted.token, request.app[TOKENS])
    response = web.Response(status=204, headers={"Cache-Control": "no-store"})
    set_session_cookie(response, wanted.token, secure=request.secure)
    return response


def set_session_cookie(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    """Put ``token`` in the session cookie: HttpOnly, SameSite=Strict, Path=/, Secure on TLS.

    HttpOnly keeps it from the page's scripts; SameSite=Strict keeps other sites' pages from
    sending it; Secure (under TLS) keeps it off plain HTTP.
    """
    response.set_cookie(
        SESSION_COOKIE, token, path="/", httponly=True, samesite="Strict", secure=secure
    )


async def delete_session(request: web.Request) -> web.Response:
    """Sign the UI out: 204 with the cookie cleared."""
    _auth_on(request)
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != same_origin(request):
        check_origin(request)
    response = web.Response(status=204)
    response.del_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=request.secure
    )
    return response


async def list_tokens(request: web.Request) -> web.Response:
    """Return every token: name, role, who made it and when, revoked or not; never hashes."""
    _auth_on(request)
    registry = request.app[TOKENS]
    await asyncio.to_thread(registry.refresh)
    return _json(TokenList(tokens=[token_out(e) for e in registry.entries()]))


async def post_token(request: web.Request) -> web.Response:
    """Make a token: 201 with its secret, shown this once."""
    _auth_on(request)
    wanted = schemas.decode_body(_token_decoder, await _body(request))
    registry = request.app[TOKENS]
    secret, entry = await asyncio.to_thread(
        registry.create, wanted.name, wanted.role, by=principal(request)
    )
    body = TokenCreatedOut(
        name=entry.name, role=entry.role, token=secret, created_at=entry.created_at.isoformat()
    )
    return _json(
        body,
        status=201,
        headers={"Location": f"/auth/tokens/{entry.name}", "Cache-Control": "no-store"},
    )


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /auth/tokens/{name}/revoke: no fields; the body, if any, is ``{}``."""


_revoke_decoder = msgspec.json.Decoder(RevokeRequest)


async def revoke_token(request: web.Request) -> web.Response:
    """Revoke a token: every node refuses it within a second; 200 with what it was."""
    from .routes import _read_json_body  # noqa: PLC0415 - routes imports this module

    _auth_on(request)
    body = await _read_json_body(request, required=False)
    if body is not None:
        schemas.decode_body(_revoke_decoder, body)
    registry = request.app[TOKENS]
    entry = await asyncio.to_thread(
        registry.revoke, request.match_info["name"], by=principal(request)
    )
    return _json(token_out(entry))
