"""Every Flowweaver exception, at the bottom of the import graph.

Errors carry the ids involved and say whether retrying the same call can help.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FlowweaverError(Exception):
    """Root of every error Flowweaver raises on purpose."""

    retryable: bool = False


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in a document, located by a JSON path such as ``$.tasks[1].id``."""

    path: str
    message: str


class ValidationError(FlowweaverError):
    """A document (workflow, run request, parameters) broke one or more rules."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0] if self.errors else FieldError("$", "invalid")
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"{first.message} - at `{first.path}`{more}")


class NotFoundError(FlowweaverError):
    """A workflow, version or run that does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")


class ConflictError(FlowweaverError):
    """A request that contradicts what is already recorded."""


class IdempotencyConflictError(ConflictError):
    """An idempotency key reused with a different request body."""

    def __init__(self, run_id: str, key: str) -> None:
        self.run_id = run_id
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was already used for run {run_id} with a different request"
        )


class ConcurrencyError(ConflictError):
    """Another writer appended to the same aggregate first; nothing of the batch was stored.

    Re-reading the aggregate and deciding again can help.
    """

    retryable = True

    def __init__(self, aggregate_ids: Sequence[str]) -> None:
        self.aggregate_ids = tuple(aggregate_ids)
        super().__init__(f"concurrent append to {', '.join(self.aggregate_ids)}")


class TokenExistsError(ConflictError):
    """A token of that name exists already (revoked or not: names are never reused)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a token named {name!r} exists already; names are never reused")


class ChainBrokenError(ConflictError):
    """A run's stored events fail their hash chain: changed, removed, reordered or unhashed.

    ``version`` is the first version that does not verify.
    """

    def __init__(self, run_id: str, version: int, reason: str) -> None:
        self.run_id = run_id
        self.version = version
        self.reason = reason
        super().__init__(f"run {run_id} fails its hash chain at version {version}: {reason}")


class InvalidCommandError(FlowweaverError):
    """A command that the run's current state does not allow (cancel a finished run, ...)."""

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id}: {message}")


class RunUnavailableError(FlowweaverError):
    """No node could take a request for a live run in time: its owner is busy, down, or being
    replaced by another node. The same request may succeed a moment later.
    """

    retryable = True

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id}: {message}")


class StoreError(FlowweaverError):
    """The event store failed or cannot be reached; the same call may succeed later."""

    retryable = True


class EventSchemaError(FlowweaverError):
    """A stored record this code cannot read: a schema version newer than it knows, or one
    with no upcaster to the current version (downgrading past a schema change)."""


class StoreConfigError(FlowweaverError):
    """A store URL that names no known store or carries bad options."""


class HandlerError(FlowweaverError):
    """A handler name that is not registered, or a handler module that cannot be loaded."""


class TaskInputError(FlowweaverError):
    """A task input path that matches nothing; never retryable."""


class EngineClosedError(FlowweaverError):
    """The engine was closed; it accepts no more work."""


class StoreLockedError(FlowweaverError):
    """Another engine drives this embedded store; this process may only read it.

    A SQLite file takes one engine at a time: the one holding its lock file. The holder's
    pid is None when it could not be read.
    """

    def __init__(self, store: str, pid: int | None) -> None:
        self.store = store
        self.pid = pid
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(
            f"the store {store} is driven by another engine ({holder}); a SQLite store takes one "
            "engine at a time: send the work to that one or stop it first (status, events "
            "and replay still read the store)"
        )


class ServerError(FlowweaverError):
    """A Flowweaver server refused a request with an answer no other class here describes.

    ``status`` is the HTTP status and ``problem_type`` the problem's ``type`` (RFC 9457); a 429,
    502, 503 or 504 is worth retrying (``retry_after``: the seconds the server asked for).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        problem_type: str = "about:blank",
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.problem_type = problem_type
        self.retry_after = retry_after
        self.retryable = status in (429, 502, 503, 504)
        super().__init__(f"{detail} (HTTP {status})")


class AuthError(ServerError):
    """The server refused the token: missing or unknown (401), or its role too low (403)."""


class ServerUnreachableError(FlowweaverError):
    """No answer from the server: refused, reset, timed out or closed before the answer ended."""

    retryable = True

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the Flowweaver server at {url}: {reason}")


class BadResponseError(FlowweaverError):
    """An answer that is not the Flowweaver API's: HTML, a wrong media type, unreadable JSON.

    Usually the URL names another server, or a proxy in front of it answered instead.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url} did not answer as a Flowweaver server: {reason}")


__all__ = [
    "AuthError",
    "BadResponseError",
    "ChainBrokenError",
    "ConcurrencyError",
    "ConflictError",
    "EngineClosedError",
    "EventSchemaError",
    "FieldError",
    "FlowweaverError",
    "HandlerError",
    "IdempotencyConflictError",
    "InvalidCommandError",
    "NotFoundError",
    "RunUnavailableError",
    "ServerError",
    "ServerUnreachableError",
    "StoreConfigError",
    "StoreError",
    "StoreLockedError",
    "TaskInputError",
    "TokenExistsError",
    "ValidationError",
]
