"""Tokens in Redis: two store objects (two nodes) on one key prefix share them."""

from __future__ import annotations

from flowweaver.store import open_store
from tests.store.token_cases import check_token_log

from .support import REDIS_URL


def test_redis_store_keeps_tokens_across_nodes(key_prefix: str) -> None:
    """A token made and revoked through one store object is seen through another."""
    first = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    second = open_store(f"{REDIS_URL}?prefix={key_prefix}")
    try:
        check_token_log(first, second)
    finally:
        first.close()
        second.close()
