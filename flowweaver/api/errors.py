"""RFC 9457 problem+json answers, and the one middleware that maps every error to one.

Our errors are translated here, once, at the edge: a ValidationError in a request body is a 422
with ``errors: [{path, message}]``, a NotFoundError a 404, a conflict a 409, a store failure a
503. Problems with the request line or headers (a bad query parameter, an offset that is not a
number) are 400s. Nothing that a client sends can produce a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus

import msgspec
import structlog
from aiohttp import web

from flowweaver.errors import (
    ChainBrokenError,
    ConcurrencyError,
    EngineClosedError,
    FieldError,
    FlowweaverError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    RunUnavailableError,
    StoreError,
    TokenExistsError,
    ValidationError,
)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:flowweaver:problem:"

log = structlog.get_logger("flowweaver.api")


class ProblemError(msgspec.Struct, frozen=True, kw_only=True):
    """One located problem in a request (``path`` is a JSON path such as ``$.tasks[0].id``)."""

    path: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] | None = None


_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """A request the API refuses before it reaches the engine (bad query, media type, ...)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


def bad_request(detail: str, *, path: str | None = None) -> ApiError:
    """Return a 400 for a malformed request line, header or query parameter."""
    errors = [FieldError(path, detail)] if path else []
    return ApiError(400, "bad-request", detail, errors=errors)


def problem_response(
    status: int,
    slug: str | None,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Return a problem+json response; ``slug`` None means a plain HTTP status (about:blank)."""
    title = HTTPStatus(status).phrase
    problem = Problem(
        type=PROBLEM_BASE + slug if slug else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=[ProblemError(path=e.path, message=e.message) for e in errors] if errors else None,
    )
    return web.Response(
        status=status,
        body=_encoder.encode(problem),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def problem_for(error: FlowweaverError, instance: str | None = None) -> web.Response:
    """Translate one of our errors into its problem+json answer."""
    if isinstance(error, ValidationError):
        return problem_response(
            422, "validation", "the request is not valid", errors=error.errors, instance=instance
        )
    if isinstance(error, NotFoundError):
        return problem_response(404, "not-found", str(error), instance=instance)
    if isinstance(error, IdempotencyConflictError):
        return problem_response(409, "idempotency-conflict", str(error), instance=instance)
    if isinstance(error, TokenExistsError):
        return problem_response(409, "token-exists", str(error), instance=instance)
    if isinstance(error, ChainBrokenError):
        return problem_response(409, "chain-broken", str(error), instance=instance)
    if isinstance(error, InvalidCommandError):
        return problem_response(409, "invalid-command", str(error), instance=instance)
    if isinstance(error, ConcurrencyError):
        return problem_response(
            409, "concurrent-write", str(error), instance=instance, headers={"Retry-After": "1"}
        )
    if isinstance(error, RunUnavailableError):
        return problem_response(
            503, "run-unavailable", str(error), instance=instance, headers={"Retry-After": "1"}
        )
    if isinstance(error, StoreError):
        return problem_response(
            503, "store-unavailable", str(error), instance=instance, headers={"Retry-After": "1"}
        )
    if isinstance(error, EngineClosedError):
        return problem_response(
            503, "shutting-down", str(error), instance=instance, headers={"Retry-After": "1"}
        )
    # The type only: a message may quote what the client sent (see observability).
    log.error("unmapped_error", error=type(error).__name__, path=instance)
    return problem_response(500, "internal", "the server failed to answer", instance=instance)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error, ours or aiohttp's, as problem+json."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = _HTTP_DETAILS.get(e.status) or e.text or HTTPStatus(e.status).phrase
        return problem_response(e.status, None, detail, instance=request.path, headers=headers)
    except ApiError as e:
        response = problem_response(
            e.status, e.slug, e.detail, errors=e.errors, instance=request.path, headers=e.headers
        )
        if e.status in (408, 413) or e.slug == "bad-body":
            response.force_close()  # the rest of the body may still be on its way
        return response
    except FlowweaverError as e:
        return problem_for(e, request.path)
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        return problem_response(
            500, "internal", "the server failed to answer", instance=request.path
        )


_HTTP_DETAILS = {
    404: "no such resource",
    405: "this resource does not accept that method",
}
