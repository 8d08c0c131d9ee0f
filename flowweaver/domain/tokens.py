"""API tokens as an event-sourced registry: who may call the API, with which role.

A token is stored only as the SHA-256 of its secret (the secret itself is printed once, when it
is made, and kept nowhere); revoking it records a second event. Every token of a store lives in
one aggregate, so a node reads the changes since the version it knows and has the whole list.
Pure: the secret, its hash, the time and the actor come in as arguments.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

import msgspec

from flowweaver.domain.ids import is_ident
from flowweaver.errors import FieldError, NotFoundError, TokenExistsError, ValidationError

Role = Literal["reader", "submitter", "operator", "admin"]
ROLES: tuple[Role, ...] = ("reader", "submitter", "operator", "admin")
"""Every role, each allowed what the ones before it are (DESIGN.md, "Auth and limits")."""
_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}


def role_allows(role: str, needed: str) -> bool:
    """Say whether a token of ``role`` may do what ``needed`` may."""
    return _RANK.get(role, -1) >= _RANK[needed]


class TokenEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type", tag=True
):
    """Base of the token registry's events."""

    schema_version: ClassVar[int] = 1
    """The version of this type's stored JSON; 1 is the shape first stored."""

    timestamp: datetime
    name: str


class TokenCreated(TokenEvent, frozen=True, kw_only=True):
    """A token was made: its name, role and the SHA-256 (hex) of its secret."""

    role: Role
    hash: str
    created_by: str


class TokenRevoked(TokenEvent, frozen=True, kw_only=True):
    """A token was revoked: from now on it is refused."""

    by: str


AnyTokenEvent = TokenCreated | TokenRevoked
TOKEN_EVENT_TYPES: tuple[type[TokenEvent], ...] = (TokenCreated, TokenRevoked)
TOKEN_EVENT_NAMES: tuple[str, ...] = tuple(t.__name__ for t in TOKEN_EVENT_TYPES)
TOKEN_SCHEMA_VERSIONS: dict[str, int] = {t.__name__: t.schema_version for t in TOKEN_EVENT_TYPES}


class TokenEntry(msgspec.Struct, kw_only=True):
    """One token as the registry knows it (never its secret)."""

    name: str
    role: Role
    hash: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        """Say whether the token was revoked."""
        return self.revoked_at is not None


class Tokens(msgspec.Struct, kw_only=True):
    """The registry folded: every token by name, and the version it is folded to."""

    version: int = 0
    by_name: dict[str, TokenEntry] = {}


def apply_token_event(state: Tokens, event: AnyTokenEvent) -> Tokens:
    """Fold one event into the registry (and count it in ``version``)."""
    state.version += 1
    if isinstance(event, TokenCreated):
        state.by_name[event.name] = TokenEntry(
            name=event.name,
            role=event.role,
            hash=event.hash,
            created_at=event.timestamp,
            created_by=event.created_by,
        )
    else:
        entry = state.by_name.get(event.name)
        if entry is not None and entry.revoked_at is None:
            entry.revoked_at = event.timestamp
            entry.revoked_by = event.by
    return state


def create_token(
    state: Tokens, *, name: str, role: str, secret_hash: str, by: str, now: datetime
) -> TokenCreated:
    """Decide a new token.

    Raises:
        ValidationError: the name is not an id (the workflow id pattern) or the role unknown.
        TokenExistsError: a token of that name exists, revoked or not (names are never reused,
            so the audit log's ``by`` always means one token).
    """
    errors = []
    if not is_ident(name):
        errors.append(
            FieldError("$.name", "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$ (like an id)")
        )
    if role not in _RANK:
        errors.append(FieldError("$.role", f"must be one of {', '.join(ROLES)}"))
    if errors:
        raise ValidationError(errors)
    if name in state.by_name:
        raise TokenExistsError(name)
    return TokenCreated(
        timestamp=now,
        name=name,
        role=role,  # type: ignore[arg-type]  # checked against ROLES above
        hash=secret_hash,
        created_by=by,
    )


def revoke_token(state: Tokens, *, name: str, by: str, now: datetime) -> TokenRevoked | None:
    """Decide a revocation; None when the token is revoked already (nothing to record).

    Raises:
        NotFoundError: no token has that name.
    """
    entry = state.by_name.get(name)
    if entry is None:
        raise NotFoundError("token", name[:130])
    if entry.revoked:
        return None
    return TokenRevoked(timestamp=now, name=name, by=by)
