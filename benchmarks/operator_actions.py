"""Latency of operator actions: sent to the run's owner, and relayed from another node.

    .venv/bin/python benchmarks/operator_actions.py [--repeats 5] [--quick] [--url postgresql://...]

Two engines on one PostgreSQL schema of its own (dropped at the end): ``a`` owns a run whose
only task blocks; pause and resume are sent alternately, N times, to ``a`` (local: the run's
actor decides and stores the event) and to ``b`` (relayed: a row, NOTIFY, the owner's claim,
its answer). Prints one JSON line per case: the median over --repeats of each repetition's
p50 and p90, in milliseconds per action. The same cases on SQLite (one engine) are the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from flowweaver_postgres import open_store
from psycopg.sql import SQL, Identifier

from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.store import SQLiteEventStore

NEVER = 3600.0


def emit(case: str, **fields: Any) -> None:
    print(json.dumps({"bench": "operator_actions", "case": case, **fields}), flush=True)


def timed(actions: int, act: Callable[[int], object]) -> list[float]:
    """Call ``act(i)`` for i in range(actions); return each call's milliseconds."""
    took = []
    for i in range(actions):
        started = time.perf_counter()
        act(i)
        took.append((time.perf_counter() - started) * 1000)
    return took


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def toggle(engine: Engine, run_id: str) -> Callable[[int], object]:
    def act(i: int) -> object:
        if i % 2 == 0:
            return engine.pause_run(run_id, reason="bench")
        return engine.resume_run(run_id, reason="bench")

    return act


def report(case: str, repetitions: list[list[float]]) -> None:
    emit(
        case,
        p50_ms=round(statistics.median(percentile(r, 0.5) for r in repetitions), 2),
        p90_ms=round(statistics.median(percentile(r, 0.9) for r in repetitions), 2),
        actions=len(repetitions[0]),
        repeats=len(repetitions),
    )


def registry(release: threading.Event) -> HandlerRegistry:
    handlers = builtin_registry()
    handlers.register("block", lambda inputs: release.wait(60) and {})
    return handlers


WORKFLOW = {"id": "bench-ops", "tasks": [{"id": "b", "handler": "block"}]}


def bench_sqlite(actions: int, repeats: int) -> None:
    runs: list[list[float]] = []
    release = threading.Event()
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteEventStore(str(Path(directory) / "bench.db"))
        engine = Engine(store, handlers=registry(release), workers=2, owns_store=True)
        try:
            engine.register_workflow(WORKFLOW)
            for _ in range(repeats):
                run_id = engine.start_run("bench-ops").run_id
                runs.append(timed(actions, toggle(engine, run_id)))
                engine.cancel_run(run_id)
        finally:
            release.set()
            engine.close(grace=1)
    report("sqlite_local", runs)


def bench_postgres(url: str, actions: int, repeats: int) -> None:
    schema = f"fwbench_{uuid.uuid4().hex}"
    release = threading.Event()
    handlers = registry(release)
    nodes = [
        Engine(
            open_store(f"{url}?schema={schema}&pool_size=2"),
            handlers=handlers,
            node=name,
            workers=2,
            owns_store=True,
            takeover_interval=NEVER,
        )
        for name in ("a", "b")
    ]
    a, b = nodes
    local: list[list[float]] = []
    relayed: list[list[float]] = []
    try:
        a.register_workflow(WORKFLOW)
        for _ in range(repeats):
            run_id = a.start_run("bench-ops").run_id
            local.append(timed(actions, toggle(a, run_id)))
            relayed.append(timed(actions, toggle(b, run_id)))
            a.cancel_run(run_id)
    finally:
        release.set()
        for engine in nodes:
            engine.close(grace=1)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(schema)))
    report("postgres_owner", local)
    report("postgres_relayed", relayed)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 20 actions")
    args = parser.parse_args()
    repeats, actions = (1, 20) if args.quick else (args.repeats, args.actions)
    bench_sqlite(actions, repeats)
    bench_postgres(args.url, actions, repeats)


if __name__ == "__main__":
    main()
