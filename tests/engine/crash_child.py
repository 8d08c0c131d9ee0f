"""A child process for crash tests: runs ten workflows on a SQLite file, then exits 0.

Run again after a crash on the same file, it recovers the unfinished runs (same
idempotency keys, so nothing is submitted twice) and waits for all of them.

Usage: python -m tests.engine.crash_child DB_PATH LOG_PATH WORKFLOW
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

WORKFLOWS: dict[str, dict[str, Any]] = {
    "mixed": {
        "id": "mixed",
        "tasks": [
            {"id": "a", "handler": "count"},
            {"id": "b", "handler": "count", "dependencies": ["a"]},
            {"id": "c", "handler": "count", "dependencies": ["a"]},
            {"id": "d", "handler": "count", "dependencies": ["b", "c"]},
            {"id": "e", "handler": "count"},
        ],
    },
    "suicide": {
        "id": "suicide",
        "tasks": [
            {"id": "a", "handler": "count"},
            {"id": "boom", "handler": "die_once", "dependencies": ["a"]},
            {"id": "z", "handler": "count", "dependencies": ["boom"]},
        ],
    },
    "always": {"id": "always", "tasks": [{"id": "boom", "handler": "die_always"}]},
}
RUNS = {"mixed": 10, "suicide": 1, "always": 1}


def main() -> None:
    db_path, log_path, workflow = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    configure_logging(json=True, level="WARNING")

    def record(context: TaskContext) -> None:
        with log_path.open("a") as f:
            f.write(f"{context.run_id} {context.task_id} {context.attempt}\n")
            f.flush()
            os.fsync(f.fileno())

    def count(inputs: dict[str, Any], context: TaskContext) -> dict[str, int]:
        record(context)
        return {"attempt": context.attempt}

    def die_once(inputs: dict[str, Any], context: TaskContext) -> str:
        record(context)
        marker = log_path.with_suffix(".died")
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    def die_always(inputs: dict[str, Any], context: TaskContext) -> None:
        record(context)
        os.kill(os.getpid(), signal.SIGKILL)

    registry = builtin_registry()
    registry.register("count", count)
    registry.register("die_once", die_once)
    registry.register("die_always", die_always)
    store = SQLiteEventStore(db_path)
    engine = Engine(store, handlers=registry, workers=3, owns_store=True)
    try:
        engine.register_workflow(WORKFLOWS[workflow])
        runs = [
            engine.start_run(workflow, idempotency_key=f"{workflow}-{i}").run_id
            for i in range(RUNS[workflow])
        ]
        for run_id in runs:
            engine.wait_run_finished(run_id, timeout=30)
    finally:
        engine.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
