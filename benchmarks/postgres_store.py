"""Throughput of the PostgreSQL event store (flowweaver_postgres); one JSON line per measure.

    .venv/bin/python benchmarks/postgres_store.py [--reps 5] [--quick] [--url postgresql://...]

Measures, each the median events/s of --reps repetitions:

- append: one event per append, then batches of 10 and 100 events of one run, then batches
  of 10 runs (1 and 10 events each), all from one thread;
- append_threads: one event per append from 1, 4 and 16 threads at once, with the library's
  table lock and without it. Without the lock the log is NOT commit-ordered (a tailer can
  skip events): that variant exists here only to price the lock;
- notify_wake: from the start of an append on one store to wait_for_log returning on another
  store on the same schema (as another process would), woken by NOTIFY; p50/p90/p99 in ms;
- read_log: the whole log, pages of 1000, not decoded;
- replay: run_state of runs of 100 events each, without snapshots.

Everything happens in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from bench_events import EVENTS, new_runs  # benchmarks/ is the script's directory
from flowweaver_postgres import PostgresEventStore, open_store
from psycopg.sql import SQL, Identifier

from flowweaver.ports import Append


def median_rate(reps: int, events: int, once: Callable[[], None]) -> dict[str, Any]:
    """Time ``once`` ``reps`` times; return the median events/s and the spread."""
    rates = []
    for _ in range(reps):
        started = time.perf_counter()
        once()
        rates.append(events / (time.perf_counter() - started))
    return {
        "events_per_s": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
        "events": events,
        "reps": reps,
    }


def emit(case: str, **fields: Any) -> None:
    print(json.dumps({"bench": "postgres_store", "case": case, **fields}), flush=True)


def bench_append(store: PostgresEventStore, reps: int, scale: int) -> None:
    shapes = [  # (runs per append, events per run, appends per repetition)
        (1, 1, 50 * scale),
        (1, 10, 20 * scale),
        (1, 100, 4 * scale),
        (10, 1, 20 * scale),
        (10, 10, 4 * scale),
    ]
    for runs_per_append, events_per_run, count in shapes:
        batches = [new_runs(runs_per_append, events_per_run) for _ in range(count * reps)]
        batches_iter = iter(batches)

        def once(count: int = count, batches_iter: Any = batches_iter) -> None:
            for _ in range(count):
                store.append(next(batches_iter))

        result = median_rate(reps, count * runs_per_append * events_per_run, once)
        emit(
            "append",
            runs_per_append=runs_per_append,
            events_per_run=events_per_run,
            events_per_append=runs_per_append * events_per_run,
            appends_per_s=round(result["events_per_s"] / (runs_per_append * events_per_run)),
            **result,
        )


def bench_threads(store: PostgresEventStore, reps: int, scale: int) -> None:
    """One event per append from several threads, with and without the table lock.

    The two variants alternate repetition by repetition, so that drift in the machine's load
    falls on both alike.
    """
    recorder: Any = store._events  # benchmark-only: to price the table lock
    for threads in (1, 4, 16):
        events = threads * 25 * scale
        rates: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(reps):
            for table_lock in (True, False):
                if not table_lock:
                    recorder._lock_table = lambda _cursor: None  # UNSAFE: not commit-ordered
                work = [new_runs(1, 1) for _ in range(events)]
                chunks = [work[i::threads] for i in range(threads)]
                with ThreadPoolExecutor(threads) as pool:
                    started = time.perf_counter()
                    list(pool.map(append_all, [store] * threads, chunks))
                    rates[table_lock].append(events / (time.perf_counter() - started))
                recorder.__dict__.pop("_lock_table", None)
        for table_lock, found in rates.items():
            emit(
                "append_threads",
                threads=threads,
                table_lock=table_lock,
                events_per_s=round(statistics.median(found)),
                min=round(min(found)),
                max=round(max(found)),
                events=events,
                reps=reps,
            )


def append_all(store: PostgresEventStore, batches: Sequence[list[Append]]) -> None:
    for batch in batches:
        store.append(batch)


def bench_wake(store: PostgresEventStore, store_url: str, scale: int) -> None:
    """Time from the start of an append on one store to wait_for_log returning on another."""
    other = open_store(f"{store_url}&pool_size=1&poll_interval=30")
    woke: list[float] = []
    appended: list[float] = []

    def wait(after: int) -> float:
        assert other.wait_for_log(after, 10), "no wake-up within 10 s"
        return time.perf_counter()

    try:
        other.listener.wait_listening(10)
        with ThreadPoolExecutor(1) as pool:
            for _ in range(20 * scale):
                waiting = pool.submit(wait, other.max_position())
                started = time.perf_counter()
                store.append(new_runs(1, 1))
                appended.append(time.perf_counter() - started)
                woke.append(waiting.result() - started)
    finally:
        other.close()
    emit(
        "notify_wake", samples=len(woke), wake_ms=percentiles(woke), append_ms=percentiles(appended)
    )


def percentiles(seconds: list[float]) -> dict[str, float]:
    """Return p50, p90 and p99 of ``seconds`` in milliseconds."""
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {f"p{p}": round(cuts[p - 1] * 1000, 3) for p in (50, 90, 99)}


def bench_reads(store: PostgresEventStore, reps: int, scale: int) -> None:
    runs = [a.run_id for a in new_runs(10 * scale, 0)]
    store.append([Append(run_id=r, expected_version=0, events=EVENTS) for r in runs])
    total = store.max_position()

    def read_all() -> None:
        after = 0
        while page := store.read_log(after=after, limit=1000):
            after = page[-1].position or 0

    logged = len(store.read_log(after=0, limit=10**9))
    emit("read_log", page=1000, log_events=total, **median_rate(reps, logged, read_all))

    store.snapshot_interval = 0

    def replay() -> None:
        for run_id in runs:
            store.run_state(run_id)

    emit("replay", events_per_run=len(EVENTS), **median_rate(reps, len(runs) * len(EVENTS), replay))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tenth of the work, to try it")
    args = parser.parse_args()
    scale = 1 if args.quick else 10
    schema = f"fwbench_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in args.url else "?"
    url = f"{args.url}{separator}schema={schema}"
    store = open_store(f"{url}&pool_size=16&max_overflow=4")
    try:
        with psycopg.connect(args.url.split("?")[0]) as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
            version = conn.execute("SHOW server_version").fetchone()
        emit(
            "setup", server=version[0] if version else "", synchronous_commit=row[0] if row else ""
        )
        bench_append(store, args.reps, scale)
        bench_threads(store, args.reps, scale)
        bench_wake(store, url, scale)
        bench_reads(store, args.reps, scale)
    finally:
        store.close()
        with psycopg.connect(args.url.split("?")[0], autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA {0} CASCADE").format(Identifier(schema)))


if __name__ == "__main__":
    main()
