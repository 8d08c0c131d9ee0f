"""The API's tokens as one process sees them: made, revoked and checked against a store.

A token is ``fw_`` and 32 random bytes (URL-safe base64), printed once when made; the store
keeps only its SHA-256 (a random secret of 256 bits needs no slow hash: no dictionary can
guess it). :class:`TokenRegistry` folds the store's token events and keeps a map from hash to
token; :meth:`TokenRegistry.refresh` reads only what was stored since, so a server calls it
every fraction of a second and sees a revocation made on another node, or by the CLI beside
it, within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import datetime

import msgspec

from flowweaver.domain.tokens import (
    TokenEntry,
    Tokens,
    apply_token_event,
    create_token,
    revoke_token,
)
from flowweaver.errors import ConcurrencyError
from flowweaver.ports import Clock, SystemClock, TokenLog

TOKEN_PREFIX = "fw_"  # noqa: S105 - the prefix of every token, no secret
TOKEN_PATTERN = re.compile(r"fw_[A-Za-z0-9_-]{43}")
"""What :func:`new_secret` makes; anything else is refused before any lookup."""
ATTEMPTS = 5


def new_secret() -> str:
    """Return a new token secret: ``fw_`` and 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """Return the SHA-256 (hex) of a token secret: all the store keeps of it."""
    return hashlib.sha256(secret.encode()).hexdigest()


def is_well_formed(secret: str) -> bool:
    """Say whether ``secret`` has the shape of a token this code makes."""
    return TOKEN_PATTERN.fullmatch(secret) is not None


class TokenOut(msgspec.Struct, kw_only=True, rename="camel"):
    """A token as ``tokens list --json`` and ``GET /auth/tokens`` show it: never its hash."""

    name: str
    role: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    revoked_by: str | None = None


def token_out(entry: TokenEntry) -> TokenOut:
    """Return what may be shown of a token (everything but its hash)."""
    return TokenOut(
        name=entry.name,
        role=entry.role,
        created_at=entry.created_at.isoformat(),
        created_by=entry.created_by,
        revoked_at=entry.revoked_at.isoformat() if entry.revoked_at else None,
        revoked_by=entry.revoked_by,
    )


class TokenRegistry:
    """The tokens of one store, folded in memory and refreshed from the store on demand."""

    def __init__(self, store: TokenLog, *, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._state = Tokens()
        self._by_hash: dict[str, TokenEntry] = {}
        self.refreshed_at = float("-inf")
        """``time.monotonic()`` when the last :meth:`refresh` had read the store."""

    def refresh(self) -> int:
        """Fold what the store holds since the last refresh; return how many events that was.

        Raises:
            StoreError: the store cannot be reached; what was known stays.
        """
        started = time.monotonic()
        with self._lock:
            events = self._store.token_events(after=self._state.version)
            for event in events:
                apply_token_event(self._state, event)
            if events:
                self._by_hash = {e.hash: e for e in self._state.by_name.values()}
            self.refreshed_at = started
        return len(events)

    @property
    def version(self) -> int:
        """Return how many token events the registry has folded."""
        return self._state.version

    def age(self) -> float:
        """Return the seconds since the last successful :meth:`refresh` began."""
        return time.monotonic() - self.refreshed_at

    def entries(self) -> list[TokenEntry]:
        """Return every token known at the last refresh, by name."""
        with self._lock:
            return sorted(self._state.by_name.values(), key=lambda e: e.name)

    def get(self, name: str) -> TokenEntry | None:
        """Return the token named ``name`` as of the last refresh, None when unknown."""
        return self._state.by_name.get(name)

    def lookup(self, secret: str) -> TokenEntry | None:
        """Return the token whose secret is ``secret`` (revoked or not), None when unknown.

        No I/O: what the last refresh knew. The hash is compared in constant time.
        """
        if not is_well_formed(secret):
            return None
        digest = secret_hash(secret)
        entry = self._by_hash.get(digest)
        if entry is None or not hmac.compare_digest(entry.hash, digest):
            return None
        return entry

    def create(self, name: str, role: str, *, by: str) -> tuple[str, TokenEntry]:
        """Make a token; return its secret (shown once, kept nowhere) and its entry.

        Raises:
            ValidationError: the name or role is not valid.
            TokenExistsError: the name is taken.
            ConcurrencyError: other writers kept storing first.
            StoreError: the store failed; nothing was stored.
        """
        secret = new_secret()
        for _ in range(ATTEMPTS):
            self.refresh()
            with self._lock:
                version = self._state.version
                event = create_token(
                    self._state,
                    name=name,
                    role=role,
                    secret_hash=secret_hash(secret),
                    by=by,
                    now=self._now(),
                )
            try:
                self._store.append_token_event(version, event)
            except ConcurrencyError:
                continue  # another writer stored first: decide again on what it wrote
            self.refresh()
            entry = self.get(name)
            assert entry is not None
            return secret, entry
        raise ConcurrencyError(["tokens"])

    def revoke(self, name: str, *, by: str) -> TokenEntry:
        """Revoke the token named ``name`` (a token revoked already stays as it was).

        Raises:
            NotFoundError: no token has that name.
            ConcurrencyError: other writers kept storing first.
            StoreError: the store failed; nothing was stored.
        """
        for _ in range(ATTEMPTS):
            self.refresh()
            with self._lock:
                version = self._state.version
                event = revoke_token(self._state, name=name, by=by, now=self._now())
            if event is not None:
                try:
                    self._store.append_token_event(version, event)
                except ConcurrencyError:
                    continue
                self.refresh()
            entry = self.get(name)
            assert entry is not None
            return entry
        raise ConcurrencyError(["tokens"])

    def _now(self) -> datetime:
        return self._clock.now()
