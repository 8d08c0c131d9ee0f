"""W2 against the same work as a map: 1,000 no-op tasks and a join, or one map task of 1,000
no-op elements and a join; prints one JSON line per store with both medians and their ratio.

    python benchmarks/map_bench.py [--pairs 9] [--stores sqlite,memory] [--elements 1000]
    python benchmarks/map_bench.py --replay       # fold of a 10,000-element map's events

The two workloads run alternately (W2, map, W2, map, ...), each on a fresh store and engine,
so that load from elsewhere on the machine falls on both alike; ``ratio`` is the median of
map/W2 over the pairs. Throughput counts tasks for W2 and elements for the map (each + 1 for
the join), per second from submit to the run's end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flowweaver.domain.run import fold, new_state, record_completed, record_started, start_run
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.store import MemoryEventStore, SQLiteEventStore

sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import fanout, mapped


def _throughput(
    engine: Engine, workflow: dict[str, Any], parameters: dict[str, Any], n: int
) -> float:
    engine.register_workflow(workflow)
    started = time.perf_counter()
    handle = engine.start_run(workflow["id"], parameters=parameters)
    state = engine.wait_run_finished(handle.run_id, timeout=300)
    elapsed = time.perf_counter() - started
    assert state.status == "completed", state.status
    return (n + 1) / elapsed


def _fresh(kind: str, directory: Path, workers: int) -> Engine:
    store = (
        MemoryEventStore()
        if kind == "memory"
        else SQLiteEventStore(str(Path(tempfile.mkdtemp(dir=directory)) / "bench.db"))
    )
    return Engine(store, handlers=builtin_registry(), workers=workers, owns_store=True)


def compare(kind: str, pairs: int, n: int, workers: int, directory: Path) -> dict[str, Any]:
    """Run W2 and the map alternately ``pairs`` times on ``kind``; return medians and ratio."""
    runs: dict[str, Callable[[Engine], float]] = {
        "W2_fanout": lambda e: _throughput(e, fanout(n), {}, n),
        "W2_map": lambda e: _throughput(e, mapped(n), {"xs": list(range(n))}, n),
    }
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(pairs):
        for name, workload in runs.items():
            engine = _fresh(kind, directory, workers)
            try:
                samples[name].append(workload(engine))
            finally:
                engine.close()
    ratios = [m / f for f, m in zip(samples["W2_fanout"], samples["W2_map"], strict=True)]
    return {
        "benchmark": "W2_vs_map",
        "store": kind,
        "workers": workers,
        "params": {"tasks": n, "pairs": pairs},
        "median_tasks_per_s": {k: round(statistics.median(v)) for k, v in samples.items()},
        "ratio_map_to_w2": round(statistics.median(ratios), 3),
        "samples": {k: [round(x) for x in v] for k, v in samples.items()},
    }


def replay(n: int) -> dict[str, Any]:
    """Decide a whole n-element map with the domain commands, then fold its events."""
    spec = workflow_from_builtins(mapped(n))
    now = time.time
    from datetime import UTC, datetime  # noqa: PLC0415 - only this mode needs it

    t = datetime(2026, 1, 1, tzinfo=UTC)
    began = now()
    state, events = start_run(
        "00000000-0000-4000-8000-000000000001", spec, 1, {"xs": list(range(n))}, t
    )
    for i in range(n):
        events += record_started(state, f"fan[{i}]", 1, "w", t)
        events += record_completed(state, f"fan[{i}]", 1, {}, 0.1, t)
    decided = now() - began
    began = now()
    folded = fold(events, new_state(state.id))
    replayed = now() - began
    assert folded == state
    return {
        "benchmark": "map_replay",
        "params": {"elements": n, "events": len(events)},
        "decide_s": round(decided, 3),
        "fold_s": round(replayed, 3),
        "fold_events_per_s": round(len(events) / replayed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--stores", default="sqlite,memory")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--elements", type=int, default=1000)
    parser.add_argument("--replay", action="store_true", help="fold a 10,000-element map")
    args = parser.parse_args(argv)
    configure_logging(json=True, level="WARNING")
    if args.replay:
        print(json.dumps(replay(10_000)), flush=True)
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLOWWEAVER_BENCH_DIR")) as tmp:
        for kind in args.stores.split(","):
            line = compare(kind, args.pairs, args.elements, args.workers, Path(tmp))
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
