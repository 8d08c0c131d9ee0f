"""Real `flowweaver serve` processes for the client tests, on a store of any kind."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.serve_process import ServeProcess

CHAIN = "chain"


def chain(tasks: int, seconds: float) -> dict[str, Any]:
    """Return a workflow of ``tasks`` sleeps one after another: 3 events a task, 2 a run."""
    return {
        "id": CHAIN,
        "tasks": [
            {
                "id": f"t{i}",
                "handler": "sleep",
                "inputs": {"seconds": seconds},
                **({"dependencies": [f"t{i - 1}"]} if i else {}),
            }
            for i in range(tasks)
        ],
    }


def free_port() -> int:
    """Return a loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(store: str, cwd: Path, *args: str) -> Iterator[ServeProcess]:
    """Run `flowweaver serve` on ``store`` while the block runs."""
    server = ServeProcess(store, cwd, args=args)
    try:
        server.wait_started()
        yield server
    finally:
        server.close()
