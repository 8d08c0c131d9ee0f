"""Checks every store passes with its token log: two registries (two nodes) on one store."""

from __future__ import annotations

import hashlib

import pytest

from flowweaver.domain.tokens import TokenCreated
from flowweaver.errors import ConcurrencyError, NotFoundError, TokenExistsError, ValidationError
from flowweaver.ports import TokenLog
from flowweaver.tokens import TokenRegistry, secret_hash


def check_token_log(first: TokenLog, second: TokenLog) -> None:
    """Tokens made and revoked through one store object are seen through another, hash only."""
    node_a, node_b = TokenRegistry(first), TokenRegistry(second)
    secret, entry = node_a.create("ci", "submitter", by="cli:test")
    assert (entry.name, entry.role, entry.created_by) == ("ci", "submitter", "cli:test")
    assert entry.hash == hashlib.sha256(secret.encode()).hexdigest() == secret_hash(secret)
    stored = second.token_events()
    assert [type(e) for e in stored] == [TokenCreated]
    assert secret not in repr(stored)  # only the hash is kept
    node_b.refresh()
    found = node_b.lookup(secret)
    assert found is not None and found.name == "ci" and not found.revoked
    assert node_b.lookup(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    with pytest.raises(TokenExistsError):
        node_b.create("ci", "reader", by="cli:test")
    with pytest.raises(ValidationError):
        node_b.create("no spaces", "reader", by="cli:test")
    with pytest.raises(ValidationError):
        node_b.create("ok", "superuser", by="cli:test")
    with pytest.raises(NotFoundError):
        node_b.revoke("nobody", by="cli:test")
    assert len(second.token_events()) == 1  # refusals stored nothing
    node_b.revoke("ci", by="alice")
    node_a.refresh()
    revoked = node_a.lookup(secret)
    assert revoked is not None and revoked.revoked and revoked.revoked_by == "alice"
    node_a.revoke("ci", by="alice")  # again: nothing more to record
    assert len(first.token_events()) == 2
    # A writer that decided on an old version is refused, not merged.
    late = TokenCreated(
        timestamp=entry.created_at, name="x", role="reader", hash="0", created_by="t"
    )
    with pytest.raises(ConcurrencyError):
        first.append_token_event(1, late)
    assert [e.name for e in node_a.entries()] == ["ci"]
