"""Time travel on a long run in SQLite: state at a version, at an instant, and diffs.

    .venv/bin/python benchmarks/travel_bench.py [--quick] [--repeats 5] [--events 100000]

Each line is ``{"name", "value", "unit", "params", "repeats", "min", "max", "p95"}``: ``value``
is the median over ``--repeats`` rounds of each round's median over the samples, ``p95`` the
median of each round's 95th percentile (``min``/``max`` spread the round medians). Lines with a
target from issue 11 add ``target`` and ``met`` (``met`` judges the p95, the stricter reading).

- ``state_at_version``: ``run_state(run_id, at=N)`` for random N (ms);
- ``state_at_instant``: :func:`flowweaver.travel.state_as_of` for random instants between the
  first and the last event: galloping + binary search over event timestamps with point reads,
  then ``run_state(at=)`` (ms); ``reads`` in params is the most point reads one lookup took;
- ``diff``: the API's whole answer to ``GET /runs/{id}/diff`` for random version pairs:
  :func:`flowweaver.travel.diff_run` (two states from their nearest snapshots, compared, up to
  1,000 events listed) and its JSON (ms).

The run is built through the store with the domain's own commands: 1000 independent tasks, each
failing and retrying until its last attempt completes, cut at ``--events`` events; every command
is stamped a millisecond after the one before, and the store snapshots it every 1000 events (its
default), as a live engine would have.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowweaver.api.travel_routes import diff_json
from flowweaver.domain.events import ErrorInfo, RunEvent
from flowweaver.domain.run import (
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    start_run,
)
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL
from flowweaver.travel import diff_run, event_time, state_as_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASKS = 1000


def long_run(run_id: str, events: int, tasks: int = TASKS) -> list[RunEvent]:
    """Decide a run of ``tasks`` tasks that fail and retry; each command a millisecond later."""
    attempts = max(1, min(100, -(-(events - 1 - tasks) // (3 * tasks)) + 1))
    spec = workflow_from_builtins(
        {
            "id": "travel-bench",
            "tasks": [
                {
                    "id": f"t{i}",
                    "handler": "work",
                    "inputs": {"n": i},
                    "retry": {"maxAttempts": attempts, "initialDelay": 0.001, "jitter": 0},
                }
                for i in range(tasks)
            ],
        }
    )
    step = 0

    def tick() -> datetime:
        nonlocal step
        step += 1
        return T0 + timedelta(milliseconds=step)

    state, decided = start_run(run_id, spec, 1, {"size": events}, tick())
    error = ErrorInfo(type="TimeoutError", message="upstream did not answer in 10 s")
    for attempt in range(1, attempts + 1):
        for i in range(tasks):
            decided += record_started(state, f"t{i}", attempt, f"worker-{i % 8}", tick())
        for i in range(tasks):
            if attempt < attempts:
                decided += record_failed(state, f"t{i}", attempt, error, tick())
                decided += record_retry_due(state, f"t{i}", attempt, tick())
            else:
                result = {"rows": i, "checksum": f"{i:08x}"}
                decided += record_completed(state, f"t{i}", attempt, result, 12.5, tick())
        if len(decided) >= events:
            break
    return decided[:events]


def millis(work: Callable[[], object]) -> float:
    """Return the milliseconds ``work`` takes."""
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def p95(values: list[float]) -> float:
    """Return the 95th percentile of ``values``."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def measure(repeats: int, samples: Callable[[], list[float]]) -> dict[str, Any]:
    """Run ``samples`` (one round of timings) ``repeats`` times; medians of medians and p95s."""
    medians: list[float] = []
    tails: list[float] = []
    for _ in range(repeats):
        values = samples()
        medians.append(statistics.median(values))
        tails.append(p95(values))
    return {
        "value": round(statistics.median(medians), 3),
        "p95": round(statistics.median(tails), 3),
        "repeats": repeats,
        "min": round(min(medians), 3),
        "max": round(max(medians), 3),
    }


def emit(
    name: str, unit: str, params: dict[str, Any], result: dict[str, Any], **extra: Any
) -> None:
    """Print one measurement as a JSON line."""
    line = {"name": name, "value": result["value"], "unit": unit, "params": params}
    line.update({k: result[k] for k in ("repeats", "min", "max", "p95")})
    line.update(extra)
    print(json.dumps(line), flush=True)


class CountingStore:
    """The store, counting point reads of one event (the instant search's probes)."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.reads = 0

    def read_run(self, run_id: str, **kw: Any) -> Any:
        self.reads += 1
        return self.store.read_run(run_id, **kw)

    def run_state(self, run_id: str, **kw: Any) -> Any:
        return self.store.run_state(run_id, **kw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per measurement")
    parser.add_argument("--events", type=int, default=100_000, help="events in the long run")
    parser.add_argument("--samples", type=int, default=None, help="timings per round")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    samples = args.samples or (20 if args.quick else 200)
    rng = random.Random(args.seed)
    run_id = str(uuid.uuid4())
    built = time.perf_counter()
    events = long_run(run_id, args.events)
    with tempfile.TemporaryDirectory(prefix="flowweaver-travel-") as directory:
        store = SQLiteEventStore(str(Path(directory) / "travel.db"))
        try:
            for start in range(0, len(events), 1000):
                chunk = events[start : start + 1000]
                store.append([Append(run_id=run_id, expected_version=start, events=chunk)])
            head = store.run_state(run_id)  # folds once, saving a snapshot every 1000 events
            assert head is not None
            assert head.version == len(events)
            build_s = time.perf_counter() - built
            count = len(events)
            params: dict[str, Any] = {
                "events": count,
                "tasks": TASKS,
                "snapshots": DEFAULT_SNAPSHOT_INTERVAL,
                "samples": samples,
                "build_s": round(build_s, 1),
            }
            first = event_time(store.read_run(run_id, upto=1)[0])
            last = event_time(store.read_run(run_id, after=count - 1)[0])
            span = (last - first).total_seconds()

            def versions() -> list[float]:
                return [
                    millis(lambda: store.run_state(run_id, at=rng.randint(1, count)))
                    for _ in range(samples)
                ]

            result = measure(args.repeats, versions)
            emit("state_at_version", "ms", params, result, target="< 50", met=result["p95"] < 50)

            counting = CountingStore(store)
            most_reads = 0

            def instants() -> list[float]:
                nonlocal most_reads
                timings = []
                for _ in range(samples):
                    instant = first + timedelta(seconds=rng.uniform(0, span))
                    counting.reads = 0
                    timings.append(millis(lambda: state_as_of(counting, run_id, instant)))  # noqa: B023
                    most_reads = max(most_reads, counting.reads)
                return timings

            result = measure(args.repeats, instants)
            emit(
                "state_at_instant",
                "ms",
                {**params, "reads": most_reads},
                result,
                target="< 50",
                met=result["p95"] < 50,
            )

            def diffs() -> list[float]:
                timings = []
                for _ in range(samples):
                    a, b = sorted(rng.randint(0, count) for _ in range(2))
                    timings.append(millis(lambda: diff_json(diff_run(store, run_id, a, b))))  # noqa: B023
                return timings

            result = measure(args.repeats, diffs)
            emit("diff", "ms", params, result, target="< 100", met=result["p95"] < 100)
        finally:
            store.close()


if __name__ == "__main__":
    main()
