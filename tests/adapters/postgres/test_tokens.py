"""Tokens in PostgreSQL: two store objects (two nodes) on one schema share them."""

from __future__ import annotations

from tests.store.token_cases import check_token_log

from .conftest import OpenStore


def test_postgres_store_keeps_tokens_across_nodes(open_pg_store: OpenStore) -> None:
    """A token made and revoked through one store object is seen through another."""
    check_token_log(open_pg_store(), open_pg_store())
