"""`serve --auth token` on Redis: tokens the CLI makes and revokes there take effect in 1 s."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli_tokens import check_tokens_beside_a_server

from .support import REDIS_URL


def test_tokens_beside_a_server_on_redis(key_prefix: str, tmp_path: Path) -> None:
    """The CLI and a server share a Redis store's tokens; a revocation is seen within 1 s."""
    check_tokens_beside_a_server(f"{REDIS_URL}?prefix={key_prefix}", tmp_path)
