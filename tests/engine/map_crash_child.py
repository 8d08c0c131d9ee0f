"""A child process for the map restart test: one run of a 40-element map on a SQLite file.

Element 20 kills the process (SIGKILL) the first time it runs, while other elements have
completed and some are running. Run again on the same file, the child resumes the run (same
idempotency key) and waits for it. Every handler call is logged as ``run_id key attempt``.

Usage: python -m tests.engine.map_crash_child DB_PATH LOG_PATH
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

ELEMENTS = 40
KILLER = 20
WORKFLOW: dict[str, Any] = {
    "id": "map-crash",
    "tasks": [
        {
            "id": "fan",
            "handler": "square",
            "inputs": {"items": "$.params.xs"},
            "map": "$.items",
        },
        {"id": "after", "handler": "echo", "dependencies": ["fan"], "inputs": {"r": "$.result"}},
    ],
}


def main() -> None:
    db_path, log_path = sys.argv[1], Path(sys.argv[2])
    configure_logging(json=True, level="WARNING")

    def square(inputs: dict[str, Any], context: TaskContext) -> int:
        with log_path.open("a") as f:
            f.write(f"{context.run_id} {context.task_id} {context.attempt}\n")
            f.flush()
            os.fsync(f.fileno())
        marker = log_path.with_suffix(".died")
        if inputs["index"] == KILLER and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        item: int = inputs["item"]
        return item * item

    registry = builtin_registry()
    registry.register("square", square)
    store = SQLiteEventStore(db_path)
    engine = Engine(store, handlers=registry, workers=3, owns_store=True)
    try:
        engine.register_workflow(WORKFLOW)
        run = engine.start_run(
            "map-crash", parameters={"xs": list(range(ELEMENTS))}, idempotency_key="once"
        )
        engine.wait_run_finished(run.run_id, timeout=30)
    finally:
        engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
