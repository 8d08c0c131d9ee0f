"""A queued run survives kill -9 of its process: still queued after the restart, it begins
when the run that held the slot (resumed after the restart) ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.store import SQLiteEventStore

WAIT_S = 20.0

CHILD = """
import sys, threading
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.store import SQLiteEventStore

configure_logging(json=True, level="WARNING")
registry = builtin_registry()
registry.register("hold", lambda inputs: threading.Event().wait(600))
engine = Engine(SQLiteEventStore(sys.argv[1]), handlers=registry, workers=2, owns_store=True)
engine.register_workflow({"id": "limited", "concurrency": {"limit": 1},
                          "tasks": [{"id": "t", "handler": "hold"}]})
first = engine.start_run("limited", idempotency_key="first")
second = engine.start_run("limited", idempotency_key="second", priority=2)
print(first.run_id, first.state.status, second.run_id, second.state.status, flush=True)
threading.Event().wait(600)
"""


def test_a_queued_run_is_still_queued_after_kill_9_and_begins_when_the_slot_frees(
    tmp_path: Path,
) -> None:
    db = tmp_path / "crash.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT_S)
        if child.stdout is not None:
            child.stdout.close()
    first, first_status, second, second_status = line
    assert (first_status, second_status) == ("running", "queued")

    release = threading.Event()
    registry = builtin_registry()

    def hold(inputs: dict[str, Any]) -> dict[str, Any]:
        release.wait(WAIT_S)
        return {}

    registry.register("hold", hold)
    engine = Engine(SQLiteEventStore(str(db)), handlers=registry, workers=2, owns_store=True)
    try:
        assert engine.get_run(second).status == "queued"
        assert engine.get_run(second).priority == 2
        release.set()
        assert engine.wait_run_finished(first, WAIT_S).status == "completed"
        assert engine.wait_run_finished(second, WAIT_S).status == "completed"
        assert [e.name for e in engine.store.read_run(second)][:3] == [
            "RunStarted",
            "RunQueued",
            "RunDequeued",
        ]
    finally:
        release.set()
        engine.close(grace=2)
