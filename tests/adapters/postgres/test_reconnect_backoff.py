"""Reconnecting threads of the PostgreSQL adapter keep trying however long the server is away."""

from __future__ import annotations

import socket
import threading

import pytest
from flowweaver_postgres.store import PostgresLogListener
from structlog.testing import capture_logs

pytestmark = pytest.mark.postgres

TRIES = 2048  # 0.05 * 2**n stopped being a float at n = 1024


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_log_listener_outlives_two_thousand_failed_connections() -> None:
    """After 2048 refused connections in a row the listener still tries (2**n overflowed once)."""
    kwargs = {"host": "127.0.0.1", "port": _closed_port(), "dbname": "x", "connect_timeout": 1}
    listener = PostgresLogListener(kwargs, "ch", lambda: None, max_backoff=0.0)
    waits: list[float | None] = []
    reached = threading.Event()
    original = listener._stopping.wait

    def counting_wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        if len(waits) >= TRIES:
            reached.set()
        return original(timeout)

    listener._stopping.wait = counting_wait  # type: ignore[method-assign]
    with capture_logs() as logs:
        listener.start()
        try:
            # The thread ending is the failure: check it between waits for the count.
            while not reached.wait(0.2):
                assert listener.alive, f"the listener died after {len(waits)} tries"
            assert listener.alive
        finally:
            listener.close()
    assert waits[-1] == 0.0
    assert [e["failures"] for e in logs][-2:] == [1024, 2048]
