"""Answers into results or exceptions: problem+json becomes the engine's own error classes.

The server maps each of our errors to a problem ``type`` (``flowweaver/api/errors.py``); this
module maps it back, so ``except NotFoundError`` works the same on an embedded engine and on a
client. A problem no class describes is a :class:`ServerError` with its status; an answer that
is no problem+json nor the JSON asked for (an HTML page of a proxy) a :class:`BadResponseError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from flowweaver.errors import (
    AuthError,
    BadResponseError,
    ChainBrokenError,
    ConcurrencyError,
    EngineClosedError,
    FieldError,
    FlowweaverError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    RunUnavailableError,
    ServerError,
    StoreError,
    TokenExistsError,
    ValidationError,
)

T = TypeVar("T")
PROBLEM_BASE = "urn:flowweaver:problem:"
MAX_ERROR_BODY = 64 * 1024
"""The most bytes of an error answer that are read: a problem is small, an HTML page need not be."""


class _ProblemError(msgspec.Struct):
    path: str
    message: str


class _Problem(msgspec.Struct):
    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    errors: list[_ProblemError] | None = None


_problem_decoder = msgspec.json.Decoder(_Problem)
_NOT_FOUND = re.compile(r"^(?P<kind>[\w ]+?) '(?P<ident>.*)' not found$", re.DOTALL)
_RUN_IN_PATH = re.compile(r"^/runs/(?P<run>[^/]+)")


def _bare(cls: type[FlowweaverError], detail: str, **attrs: Any) -> FlowweaverError:
    """Return a ``cls`` carrying the server's message, without its constructor's arguments.

    Classes such as :class:`IdempotencyConflictError` build their message from ids; the
    server's message is already built, so it is kept as it is.
    """
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    for name, value in attrs.items():
        setattr(error, name, value)
    return error


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: the caller's own backoff decides


def problem_error(
    status: int, body: bytes, headers: Mapping[str, str], url: str, path: str
) -> FlowweaverError:
    """Return the exception an error answer (status >= 400) stands for."""
    media = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media.startswith("text/html"):
        return BadResponseError(url, f"an HTML page (HTTP {status}), not the API's problem+json")
    if media not in ("application/problem+json", "application/json"):
        shown = media or "no media type"
        return BadResponseError(url, f"HTTP {status} with {shown}, not problem+json")
    try:
        problem = _problem_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return BadResponseError(url, f"HTTP {status} with a body that is not a problem document")
    slug = problem.type.removeprefix(PROBLEM_BASE) if problem.type.startswith(PROBLEM_BASE) else ""
    detail = problem.detail or problem.title or f"HTTP {status}"
    found = _RUN_IN_PATH.match(path)
    run_id = found["run"] if found else ""
    retry_after = _retry_after(headers)
    if status == 422 or slug == "validation":
        errors = [FieldError(e.path, e.message) for e in problem.errors or ()]
        return ValidationError(errors or [FieldError("$", detail)])
    if slug == "not-found":
        named = _NOT_FOUND.match(detail)
        if named:
            return NotFoundError(named["kind"], named["ident"])
        return _bare(NotFoundError, detail, kind="resource", ident=path)
    simple: dict[str, tuple[type[FlowweaverError], dict[str, Any]]] = {
        "idempotency-conflict": (IdempotencyConflictError, {"run_id": run_id, "key": ""}),
        "token-exists": (TokenExistsError, {"name": ""}),
        "chain-broken": (ChainBrokenError, {"run_id": run_id, "version": 0, "reason": detail}),
        "invalid-command": (InvalidCommandError, {"run_id": run_id}),
        "concurrent-write": (ConcurrencyError, {"aggregate_ids": (run_id,)}),
        "run-unavailable": (RunUnavailableError, {"run_id": run_id}),
        "store-unavailable": (StoreError, {}),
        "shutting-down": (EngineClosedError, {}),
    }
    if slug in simple:
        cls, attrs = simple[slug]
        return _bare(cls, detail, **attrs)
    if status in (401, 403):
        return AuthError(status, detail, problem.type, retry_after=retry_after)
    return ServerError(status, detail, problem.type, retry_after=retry_after)


def read_answer(read: Callable[[bytes], T], body: bytes, headers: Mapping[str, str], url: str) -> T:
    """Return ``read(body)`` for a 2xx answer.

    Raises:
        BadResponseError: an HTML page, or a body ``read`` cannot decode.
    """
    media = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if media.startswith("text/html"):
        raise BadResponseError(url, "an HTML page, not the API's answer")
    try:
        return read(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as e:
        raise BadResponseError(url, f"an answer that cannot be read: {e}") from None
