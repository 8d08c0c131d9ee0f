"""The replay check's speed on long runs; one JSON line per result.

chain:  one run of a chain of tasks, each reading the one before, every fifth failing once and
        retried (jitter 0.5): about 4.4 events a task.
fanout: one run of a root, many parallel tasks with an ``outputs`` mapping, and a join.

Each run is decided with the domain commands (as an engine decides it) and stored in a SQLite
file. Two figures per workload, each the median of --repeats: ``check_run`` over the decoded
events in memory (the checker alone), and ``flowweaver check-replay``'s path over the store
(read a page of 1,000 events at a time, decode, check).

    python benchmarks/replay_check_bench.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowweaver.cli_check_replay import stored_events
from flowweaver.domain import run as commands
from flowweaver.domain.events import ErrorInfo, RunEvent
from flowweaver.domain.replay_check import check_run
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RETRY = {"maxAttempts": 3, "initialDelay": 0.5, "backoffFactor": 2.0, "jitter": 0.5}


def chain(n: int) -> dict[str, Any]:
    """A chain of ``n`` tasks passing a value on."""
    tasks = [{"id": "t0", "handler": "echo", "inputs": {"v": 0}, "retry": RETRY}]
    tasks += [
        {
            "id": f"t{i}",
            "handler": "echo",
            "dependencies": [f"t{i - 1}"],
            "inputs": {"v": "$.result.v", "i": i},
            "retry": RETRY,
        }
        for i in range(1, n)
    ]
    return {"id": "chain", "tasks": tasks}


def fanout(n: int) -> dict[str, Any]:
    """A root, ``n`` parallel tasks with an outputs mapping, and a join."""
    tasks: list[dict[str, Any]] = [{"id": "root", "handler": "echo", "inputs": {"n": 1}}]
    tasks += [
        {
            "id": f"p{i}",
            "handler": "echo",
            "dependencies": ["root"],
            "inputs": {"n": "$.result.v", "i": i},
            "outputs": {"i": "$.inputs.i"},
            "retry": RETRY,
        }
        for i in range(n)
    ]
    tasks.append({"id": "join", "handler": "noop", "dependencies": [f"p{i}" for i in range(n)]})
    return {"id": "fanout", "tasks": tasks}


def drive(run_id: str, document: dict[str, Any]) -> list[RunEvent]:
    """Decide a whole run as an engine would: start, fail every fifth task once, complete."""
    rng = random.Random(7)
    spec = workflow_from_builtins(document)
    state, events = commands.start_run(run_id, spec, 1, {}, T0)
    now = T0
    index = 0
    while not state.is_terminal:
        scheduled = [t for t in state.tasks.values() if t.status == "scheduled"]
        waiting = [t for t in state.tasks.values() if t.status == "waiting_retry"]
        for task in scheduled:
            now += timedelta(milliseconds=1)
            events += commands.record_started(state, task.id, task.attempts, "w1", now)
        for task in waiting:
            assert task.retry_at is not None
            now = max(now, task.retry_at)
            events += commands.record_retry_due(state, task.id, task.attempts, now)
        for task in [t for t in state.tasks.values() if t.status == "running"]:
            now += timedelta(milliseconds=1)
            index += 1
            if index % 5 == 0 and task.attempts == 1:
                error = ErrorInfo(type="Flaky", message="again", traceback="Traceback ...")
                events += commands.record_failed(
                    state, task.id, 1, error, now, jitter_sample=rng.uniform(-1, 1)
                )
            else:
                result = {"v": index}
                events += commands.record_completed(state, task.id, task.attempts, result, 1.0, now)
    assert state.status == "completed", state.status
    return events


def measure(seconds: list[float], events: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"seconds": round(median, 4), "events_per_s": round(events / median)}


def bench(
    name: str, document: dict[str, Any], repeats: int, directory: Path
) -> list[dict[str, Any]]:
    run_id = "00000000-0000-4000-8000-0000000000b1"
    events = drive(run_id, document)
    store = SQLiteEventStore(str(directory / f"{name}.db"))
    try:
        for start in range(0, len(events), 5000):
            store.append([Append(run_id, start, events[start : start + 5000])])
        in_memory, from_store = [], []
        for _ in range(repeats):
            began = time.perf_counter()
            report = check_run(run_id, events)
            in_memory.append(time.perf_counter() - began)
            assert report.ok, report
            assert report.events == len(events), report
            began = time.perf_counter()
            report = check_run(run_id, stored_events(store, run_id))
            from_store.append(time.perf_counter() - began)
            assert report.ok, report
            assert report.events == len(events), report
    finally:
        store.close()
    tasks = len(document["tasks"])
    return [
        {"workload": name, "path": "check_run in memory", "tasks": tasks, "events": len(events)}
        | measure(in_memory, len(events)),
        {
            "workload": name,
            "path": "SQLite read+decode+check",
            "tasks": tasks,
            "events": len(events),
        }
        | measure(from_store, len(events)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    args = parser.parse_args()
    size = 200 if args.quick else 5000
    with tempfile.TemporaryDirectory() as directory:
        for name, document in (("chain", chain(size)), ("fanout", fanout(size))):
            for result in bench(name, document, args.repeats, Path(directory)):
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
