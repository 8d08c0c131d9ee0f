"""Engine workloads W1-W3, embedded, on SQLite and memory; prints one JSON line per result.

W1 chain3:      200 runs one after another of t1 -> t2 -> t3 (each passes its output on):
                runs/s and p50/p99 latency from submit to terminal.
W2 fanout1000:  one run of 1,000 independent no-op tasks and a join on all: tasks/s.
W3 concurrent:  500 chain3 runs submitted at once: runs/s.
W2 map1000:     (--only w2map) W2's work as one map task of 1,000 no-op elements and a join
                after it: elements (+1 for the join) per second, to compare with W2's tasks/s.

    python benchmarks/engine_bench.py [--repeats 5] [--stores sqlite,memory] [--quick]

Each figure is the median of --repeats runs, each on a fresh store. Every sample also has
``cpu_us``: the process's CPU time (all threads) per run, task or element, in microseconds,
and ``switches``: its threads' context switches per run, task or element.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.ports import EventStore
from flowweaver.store import MemoryEventStore, SQLiteEventStore

CHAIN3 = {
    "id": "chain3",
    "tasks": [
        {"id": "t1", "handler": "echo", "inputs": {"value": "$.params.value"}},
        {
            "id": "t2",
            "handler": "echo",
            "dependencies": ["t1"],
            "inputs": {"value": "$.result.value"},
        },
        {
            "id": "t3",
            "handler": "echo",
            "dependencies": ["t2"],
            "inputs": {"value": "$.result.value"},
        },
    ],
}


def fanout(n: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [{"id": f"n{i}", "handler": "noop"} for i in range(n)]
    tasks.append({"id": "join", "handler": "noop", "dependencies": [f"n{i}" for i in range(n)]})
    return {"id": f"fanout{n}", "tasks": tasks}


def mapped(n: int) -> dict[str, Any]:
    """W2's work as a map: ``fan`` runs ``noop`` once per element of the parameter ``xs``."""
    return {
        "id": f"map{n}",
        "tasks": [
            {"id": "fan", "handler": "noop", "inputs": {"xs": "$.params.xs"}, "map": "$.xs"},
            {"id": "join", "handler": "noop", "dependencies": ["fan"]},
        ],
    }


def open_store(kind: str, directory: Path) -> EventStore:
    if kind == "memory":
        return MemoryEventStore()
    return SQLiteEventStore(str(directory / f"bench-{time.monotonic_ns()}.db"))


ACTOR_THREADS: int | None = None  # --actor-threads


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def w1(engine: Engine, runs: int) -> dict[str, float]:
    engine.register_workflow(CHAIN3)
    latencies = []
    started = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        handle = engine.start_run("chain3", parameters={"value": i})
        state = engine.wait_run_finished(handle.run_id, timeout=30)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert state.status == "completed", state.status
    elapsed = time.perf_counter() - started
    return {
        "runs_per_s": runs / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
    }


def w2(engine: Engine, tasks: int) -> dict[str, float]:
    engine.register_workflow(fanout(tasks))
    started = time.perf_counter()
    handle = engine.start_run(f"fanout{tasks}")
    state = engine.wait_run_finished(handle.run_id, timeout=120)
    elapsed = time.perf_counter() - started
    assert state.status == "completed", state.status
    return {"tasks_per_s": (tasks + 1) / elapsed, "seconds": elapsed}


def w2_map(engine: Engine, elements: int) -> dict[str, float]:
    engine.register_workflow(mapped(elements))
    started = time.perf_counter()
    handle = engine.start_run(f"map{elements}", parameters={"xs": list(range(elements))})
    state = engine.wait_run_finished(handle.run_id, timeout=120)
    elapsed = time.perf_counter() - started
    assert state.status == "completed", state.status
    assert len(state.tasks["fan"].output["result"]) == elements
    return {"tasks_per_s": (elements + 1) / elapsed, "seconds": elapsed}


def w3(engine: Engine, runs: int) -> dict[str, float]:
    engine.register_workflow(CHAIN3)
    started = time.perf_counter()
    handles = [engine.start_run("chain3", parameters={"value": i}) for i in range(runs)]
    for handle in handles:
        state = engine.wait_run_finished(handle.run_id, timeout=120)
        assert state.status == "completed", state.status
    elapsed = time.perf_counter() - started
    return {"runs_per_s": runs / elapsed, "seconds": elapsed}


def _sized(
    workload: Callable[[Engine, int], dict[str, float]], n: int, engine: Engine
) -> dict[str, float]:
    """Run ``workload`` on ``n`` items; add the process's CPU time and context switches per item.

    ``cpu_us`` (CPU microseconds per run or task, every thread) moves less with the
    machine's other load than the wall-clock rates do. ``switches`` counts the context
    switches of the process's threads per run or task: each hand-off between threads (a
    queue, a lock, the GIL) is one or two, and each costs CPU time.
    """
    cpu, before = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    result = workload(engine, n)
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_us"] = (time.process_time() - cpu) * 1e6 / n
    switches = after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw
    result["switches"] = switches / n
    return result


def measure(
    name: str,
    kind: str,
    workload: Callable[[Engine], dict[str, float]],
    repeats: int,
    workers: int,
    directory: Path,
    params: dict[str, Any],
) -> None:
    samples: list[dict[str, float]] = []
    for _ in range(repeats):
        store = open_store(kind, directory)
        engine = Engine(
            store,
            handlers=builtin_registry(),
            workers=workers,
            owns_store=True,
            **({} if ACTOR_THREADS is None else {"actor_threads": ACTOR_THREADS}),
        )
        try:
            samples.append(workload(engine))
        finally:
            engine.close()
    result = {key: round(statistics.median(s[key] for s in samples), 3) for key in samples[0]}
    line = {
        "benchmark": name,
        "store": kind,
        "workers": workers,
        "repeats": repeats,
        "params": params,
        "median": result,
        "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
    }
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--actor-threads", type=int, default=None, help="the run actors' threads (engine default)"
    )
    parser.add_argument("--only", default="w1,w2,w3")
    parser.add_argument("--quick", action="store_true", help="1 repeat, smaller workloads")
    args = parser.parse_args(argv)
    global ACTOR_THREADS  # noqa: PLW0603 - one option read where each engine is made
    ACTOR_THREADS = args.actor_threads
    configure_logging(json=True, level="WARNING")
    repeats = 1 if args.quick else args.repeats
    scale = 10 if args.quick else 1
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLOWWEAVER_BENCH_DIR")) as tmp:
        directory = Path(tmp)
        workloads = {
            "w1": ("W1_chain3", w1, "runs", 200),
            "w2": ("W2_fanout", w2, "tasks", 1000),
            "w3": ("W3_concurrent", w3, "runs", 500),
            "w2map": ("W2_map", w2_map, "elements", 1000),
        }
        for kind in args.stores.split(","):
            for key, (name, workload, unit, size) in workloads.items():
                if key in only:
                    n = size // scale
                    run = functools.partial(_sized, workload, n)
                    measure(name, kind, run, repeats, args.workers, directory, {unit: n})


if __name__ == "__main__":
    sys.exit(main())
