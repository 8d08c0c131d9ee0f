"""A child process for the sub-workflow crash tests: runs one parent run whose task runs a
child workflow, on a SQLite file, then exits 0.

Run again after a crash on the same file, it recovers the unfinished runs (the parent's
idempotency key is fixed, so nothing is submitted twice) and waits for the parent.

Usage: python -m tests.engine.subworkflow_crash_child DB_PATH MARKER_PATH
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from flowweaver.engine import Engine
from flowweaver.handlers import TaskContext, builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.store import SQLiteEventStore

CHILD = {"id": "crash-child", "tasks": [{"id": "work", "handler": "work"}]}
PARENT = {
    "id": "crash-parent",
    "tasks": [
        {"id": "sub", "workflow": "crash-child"},
        {"id": "after", "handler": "noop", "dependencies": ["sub"]},
    ],
}


def main() -> None:
    db_path, marker = sys.argv[1], Path(sys.argv[2])
    configure_logging(json=True, level="WARNING")

    def work(inputs: dict[str, Any], context: TaskContext) -> dict[str, int]:
        # Dies the first time when the marker file exists beforehand with "die" in it.
        if marker.exists() and marker.read_text() == "die":
            marker.write_text("died")
            os.kill(os.getpid(), signal.SIGKILL)
        return {"attempt": context.attempt}

    registry = builtin_registry()
    registry.register("work", work)
    engine = Engine(SQLiteEventStore(db_path), handlers=registry, workers=2, owns_store=True)
    try:
        engine.register_workflow(CHILD)
        engine.register_workflow(PARENT)
        run = engine.start_run("crash-parent", idempotency_key="the-one")
        engine.wait_run_finished(run.run_id, timeout=30)
    finally:
        engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
