"""Time travel on a long run in SQLite: state at a version, at an instant, and diffs.

    .venv/bin/python benchmarks/travel_bench.py [--quick] [--repeats 5] [--events 100000] [--http]

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

With ``--http`` the same three are timed again as a client sees them, over loopback against the
real app (``GET /runs/{id}?at=N``, ``?asOf=``, ``/diff?from=&to=``): ``http_state_at_version``,
``http_state_at_instant``, ``http_diff``.

The run is built through the store with the domain's own commands: 1000 independent tasks, each
failing and retrying until its last attempt completes (about ``--events`` events in all); every
command is stamped a millisecond after the one before, and the store snapshots it every 1000
events (its default), as a live engine would have.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from flowweaver.api import create_app, make_runner
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
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore
from flowweaver.store.base import DEFAULT_SNAPSHOT_INTERVAL
from flowweaver.travel import diff_run, event_time, state_as_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TASKS = 1000


def long_run(run_id: str, events: int, tasks: int = TASKS) -> list[RunEvent]:
    """Decide a run of ``tasks`` tasks that fail and retry; each command a millisecond later.

    The run completes: each task takes 3 events per attempt (the first scheduled, the last
    completed), so it has ``2 + 3 * tasks * attempts`` events, the attempts chosen to come
    closest to ``events`` (99,002 for 100,000).
    """
    attempts = max(1, min(100, round((events - 2) / (3 * tasks))))
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
    assert decided[-1].__class__.__name__ == "RunCompleted"
    return decided


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


@dataclass
class Bench:
    """The stored run and what every measurement needs."""

    store: SQLiteEventStore
    run_id: str
    count: int
    first: datetime
    span: float
    params: dict[str, Any]
    rng: random.Random
    repeats: int

    @property
    def samples(self) -> int:
        return int(self.params["samples"])

    def version(self) -> int:
        return self.rng.randint(1, self.count)

    def instant(self) -> datetime:
        return self.first + timedelta(seconds=self.rng.uniform(0, self.span))

    def instant_text(self) -> str:
        return quote(self.instant().isoformat())

    def pair(self) -> tuple[int, int]:
        a, b = sorted(self.rng.randint(0, self.count) for _ in range(2))
        return a, b


def bench_store(b: Bench) -> None:
    """Time the three reads as the API's handlers make them, without HTTP."""
    store, run_id = b.store, b.run_id

    def versions() -> list[float]:
        return [millis(lambda: store.run_state(run_id, at=b.version())) for _ in range(b.samples)]

    result = measure(b.repeats, versions)
    emit("state_at_version", "ms", b.params, result, target="< 50", met=result["p95"] < 50)

    counting = CountingStore(store)
    most_reads = 0

    def instants() -> list[float]:
        nonlocal most_reads
        timings = []
        for _ in range(b.samples):
            instant = b.instant()
            counting.reads = 0
            timings.append(millis(lambda: state_as_of(counting, run_id, instant)))  # noqa: B023
            most_reads = max(most_reads, counting.reads)
        return timings

    result = measure(b.repeats, instants)
    params = {**b.params, "reads": most_reads}
    emit("state_at_instant", "ms", params, result, target="< 50", met=result["p95"] < 50)

    def diffs() -> list[float]:
        timings = []
        for _ in range(b.samples):
            start, end = b.pair()
            timings.append(millis(lambda: diff_json(diff_run(store, run_id, start, end))))  # noqa: B023
        return timings

    result = measure(b.repeats, diffs)
    emit("diff", "ms", b.params, result, target="< 100", met=result["p95"] < 100)


async def bench_http(b: Bench) -> None:
    """Time the three reads over loopback HTTP against the real app, one request at a time."""
    configure_logging(json=True, level="WARNING")  # no access log lines among the results
    engine = Engine(b.store, handlers=builtin_registry(), workers=1)
    app = create_app(engine)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}/runs/{b.run_id}"
    if b.params["gc_freeze"]:
        gc.freeze()  # the app and engine too, as serve does once it listens
    try:
        async with aiohttp.ClientSession() as session:

            async def get(url: str) -> float:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200, (url, response.status)
                return (time.perf_counter() - started) * 1000

            def diff_url() -> str:
                start, end = b.pair()
                return f"{base}/diff?from={start}&to={end}"

            checks: list[tuple[str, Callable[[], str], int]] = [
                ("http_state_at_version", lambda: f"{base}?at={b.version()}", 50),
                (
                    "http_state_at_instant",
                    lambda: f"{base}?asOf={quote(b.instant().isoformat())}",
                    50,
                ),
                ("http_diff", diff_url, 100),
            ]
            for name, make_url, target in checks:
                rounds = [
                    [await get(make_url()) for _ in range(b.samples)] for _ in range(b.repeats)
                ]
                result = measure(b.repeats, iter(rounds).__next__)
                met = result["p95"] < target
                emit(name, "ms", b.params, result, target=f"< {target}", met=met)
    finally:
        await runner.cleanup()
        engine.close(grace=1)


def build(store: SQLiteEventStore, events: int) -> tuple[str, int]:
    """Store a long run; return its id and how many events it has."""
    run_id = str(uuid.uuid4())
    decided = long_run(run_id, events)
    for start in range(0, len(decided), 1000):
        chunk = decided[start : start + 1000]
        store.append([Append(run_id=run_id, expected_version=start, events=chunk)])
    head = store.run_state(run_id)  # folds once, saving a snapshot every 1000 events
    assert head is not None
    assert head.version == len(decided)
    assert head.status == "completed"  # an engine opening the store resumes nothing
    return run_id, len(decided)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per measurement")
    parser.add_argument("--events", type=int, default=100_000, help="about this many events")
    parser.add_argument("--samples", type=int, default=None, help="timings per round")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--http", action="store_true", help="also time the reads over HTTP")
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave what was built in the collector's passes (serve freezes it: gc.freeze)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flowweaver-travel-") as directory:
        store = SQLiteEventStore(str(Path(directory) / "travel.db"))
        try:
            built = time.perf_counter()
            run_id, count = build(store, args.events)
            first = event_time(store.read_run(run_id, upto=1)[0])
            last = event_time(store.read_run(run_id, after=count - 1)[0])
            params: dict[str, Any] = {
                "events": count,
                "tasks": TASKS,
                "snapshots": DEFAULT_SNAPSHOT_INTERVAL,
                "samples": args.samples or (20 if args.quick else 200),
                "build_s": round(time.perf_counter() - built, 1),
            }
            if not args.no_freeze:
                # As `flowweaver serve` does once started: what exists now lives as long as the
                # process, and full collections that scan it every few folds of a 1000-task
                # state were most of the p95 (about 20 ms, against 9 ms frozen).
                gc.freeze()
            params["gc_freeze"] = not args.no_freeze
            bench = Bench(
                store=store,
                run_id=run_id,
                count=count,
                first=first,
                span=(last - first).total_seconds(),
                params=params,
                rng=random.Random(args.seed),
                repeats=args.repeats,
            )
            bench_store(bench)
            if args.http:
                asyncio.run(bench_http(bench))
        finally:
            store.close()


if __name__ == "__main__":
    main()
