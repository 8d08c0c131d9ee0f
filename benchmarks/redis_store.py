"""The Flowweaver store on Redis beside SQLite: appends, reads, replay, and W1-W3 on the engine.

    .venv/bin/python benchmarks/redis_store.py [--reps 5] [--quick] [--url redis://...]
        [--stores redis,redis-aof,sqlite[,postgres]] [--only store,engine] [--workers 8]

One JSON line per measure; each figure is the median of --reps repetitions, ``samples`` has
them all. Stores:

- ``redis``: the server at --url (the test server has no persistence at all);
- ``redis-aof``: a private ``redis-server`` started here on a free loopback port, with
  ``appendonly yes`` and ``appendfsync always`` (the setting that loses no acknowledged
  event), its files in a temporary directory (FLOWWEAVER_BENCH_DIR to choose the disk);
- ``sqlite``: the embedded store, ``synchronous=NORMAL`` (the default), in the same directory;
- ``postgres`` (only when asked for): the PostgreSQL store at --postgres-url, a schema of its
  own per repetition, dropped afterwards.

Store measures (events/s): ``append_one`` (one event per append, a new run each),
``append_batch`` (100 events of one run per append, and 10 runs of 10 events per append),
``read_log`` (the whole log in pages of 1000, not decoded), ``replay`` (``run_state`` of runs
of 100 events without snapshots). Engine measures: W1-W3 of benchmarks/engine_bench.py, each
repetition on a fresh store (a fresh key prefix on Redis, deleted afterwards).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from bench_events import EVENTS, new_runs  # benchmarks/ is the script's directory
from engine_bench import CHAIN3, w1, w2, w3  # benchmarks/ is the script's directory
from flowweaver_redis.store import open_store

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.ports import Append, EventStore
from flowweaver.store import SQLiteEventStore
from flowweaver.store import open_store as flowweaver_open_store

assert CHAIN3["id"] == "chain3"  # the engine workloads are engine_bench's own


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "redis_store", **fields}), flush=True)


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples)),
        "min": round(min(samples)),
        "max": round(max(samples)),
        "samples": [round(s) for s in samples],
    }


# --- the stores ---------------------------------------------------------------------------


class Stores:
    """Opens fresh stores of each kind and cleans up after them."""

    def __init__(self, url: str, directory: Path, postgres_url: str = "") -> None:
        self.url = url
        self.postgres_url = postgres_url
        self.directory = directory
        self.aof_url: str | None = None
        self._server: subprocess.Popen[bytes] | None = None

    def start_aof_server(self) -> None:
        """Start a private redis-server with appendonly yes and appendfsync always."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: run with --stores redis,sqlite")
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
        data = self.directory / "redis-aof"
        data.mkdir()
        self._server = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--logfile", str(data / "redis.log"),
            ],
        )  # fmt: skip
        self.aof_url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.aof_url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=10)
            self._server = None

    @contextlib.contextmanager
    def open(self, kind: str) -> Iterator[EventStore]:
        """Yield a fresh, empty store of ``kind``; close and delete it afterwards."""
        if kind == "sqlite":
            path = self.directory / f"bench-{uuid.uuid4().hex}.db"
            store: EventStore = SQLiteEventStore(str(path))
            try:
                yield store
            finally:
                store.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            return
        if kind == "postgres":
            with self._open_postgres() as pg_store:
                yield pg_store
            return
        url = self.aof_url if kind == "redis-aof" else self.url
        assert url is not None
        prefix = f"fwbench:{uuid.uuid4().hex}"
        redis_store = open_store(f"{url}?prefix={prefix}")
        try:
            yield redis_store
        finally:
            redis_store.close()
            delete_prefix(url, prefix)

    @contextlib.contextmanager
    def _open_postgres(self) -> Iterator[EventStore]:
        import psycopg  # noqa: PLC0415 - only when PostgreSQL is measured too
        from psycopg.sql import SQL, Identifier  # noqa: PLC0415

        schema = f"fwbench_{uuid.uuid4().hex[:12]}"
        store = flowweaver_open_store(f"{self.postgres_url}?schema={schema}&pool_size=8")
        try:
            yield store
        finally:
            store.close()
            with psycopg.connect(self.postgres_url, autocommit=True) as conn:
                conn.execute(SQL("DROP SCHEMA {0} CASCADE").format(Identifier(schema)))

    def describe(self, kind: str) -> dict[str, Any]:
        """Return the server's version and persistence settings, or SQLite's."""
        if kind == "sqlite":
            return {"synchronous": "NORMAL"}
        if kind == "postgres":
            import psycopg  # noqa: PLC0415

            with psycopg.connect(self.postgres_url) as conn:
                return {
                    name: str((conn.execute(f"SHOW {name}").fetchone() or [""])[0])
                    for name in ("server_version", "synchronous_commit", "fsync")
                }
        url = self.aof_url if kind == "redis-aof" else self.url
        client = redis.Redis.from_url(url or "", decode_responses=True)
        try:
            config = {
                name: client.config_get(name).get(name, "")
                for name in ("appendonly", "appendfsync", "save")
            }
            return {"server": client.info("server")["redis_version"], **config}
        finally:
            client.close()


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        batch: list[Any] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


# --- store measures -----------------------------------------------------------------------


def timed_rate(events: int, work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return events / (time.perf_counter() - started)


def bench_store(stores: Stores, kind: str, reps: int, scale: int) -> None:
    shapes = [  # (case, runs per append, events per run, appends per repetition)
        ("append_one", 1, 1, 200 * scale),
        ("append_batch", 1, 100, 10 * scale),
        ("append_batch", 10, 10, 10 * scale),
    ]
    for case, runs_per_append, events_per_run, count in shapes:
        rates = []
        for _ in range(reps):
            with stores.open(kind) as store:
                batches = [new_runs(runs_per_append, events_per_run) for _ in range(count)]

                def work(store: EventStore = store, batches: list[list[Append]] = batches) -> None:
                    for batch in batches:
                        store.append(batch)

                rates.append(timed_rate(count * runs_per_append * events_per_run, work))
        emit(
            case=case,
            store=kind,
            unit="events/s",
            runs_per_append=runs_per_append,
            events_per_append=runs_per_append * events_per_run,
            appends=count,
            **summary(rates),
        )
    read_rates, replay_rates = [], []
    runs_count = 10 * scale
    for _ in range(reps):
        with stores.open(kind) as store:
            runs = [a.run_id for a in new_runs(runs_count, 0)]
            for run_id in runs:
                store.append([Append(run_id=run_id, expected_version=0, events=EVENTS)])

            def read_all(store: EventStore = store) -> None:
                after = 0
                while page := store.read_log(after=after, limit=1000):
                    after = page[-1].position or 0

            read_rates.append(timed_rate(runs_count * len(EVENTS), read_all))
            store.snapshot_interval = 0  # type: ignore[attr-defined]

            def replay(store: EventStore = store, runs: list[str] = runs) -> None:
                for run_id in runs:
                    store.run_state(run_id)

            replay_rates.append(timed_rate(runs_count * len(EVENTS), replay))
    log_events = runs_count * len(EVENTS)
    emit(case="read_log", store=kind, unit="events/s", page=1000, log_events=log_events,
         **summary(read_rates))  # fmt: skip
    emit(case="replay", store=kind, unit="events/s", events_per_run=len(EVENTS), runs=runs_count,
         **summary(replay_rates))  # fmt: skip


# --- engine workloads ---------------------------------------------------------------------


def bench_engine(stores: Stores, kind: str, reps: int, workers: int, scale: int) -> None:
    workloads: list[tuple[str, Callable[[Engine], dict[str, float]], dict[str, int]]] = [
        ("W1_chain3", lambda e: w1(e, 200 // scale), {"runs": 200 // scale}),
        ("W2_fanout", lambda e: w2(e, 1000 // scale), {"tasks": 1000 // scale}),
        ("W3_concurrent", lambda e: w3(e, 500 // scale), {"runs": 500 // scale}),
    ]
    for name, workload, params in workloads:
        samples: list[dict[str, float]] = []
        for _ in range(reps):
            with stores.open(kind) as store:
                engine = Engine(store, handlers=builtin_registry(), workers=workers)
                try:
                    samples.append(workload(engine))
                finally:
                    engine.close()
        median = {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}
        emit(
            case=name,
            store=kind,
            workers=workers,
            reps=reps,
            params=params,
            median=median,
            samples=[{k: round(v, 3) for k, v in s.items()} for s in samples],
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--stores", default="redis,redis-aof,sqlite")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", default="store,engine")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 repetition, a tenth of the work")
    args = parser.parse_args(argv)
    configure_logging(json=True, level="WARNING")
    reps = 1 if args.quick else args.reps
    scale = 10 if args.quick else 1
    kinds = args.stores.split(",")
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLOWWEAVER_BENCH_DIR")) as tmp:
        stores = Stores(args.url, Path(tmp), args.postgres_url)
        try:
            if "redis-aof" in kinds:
                stores.start_aof_server()
            for kind in kinds:
                emit(case="setup", store=kind, **stores.describe(kind))
            for kind in kinds:
                if "store" in only:
                    bench_store(stores, kind, reps, scale)
            for kind in kinds:
                if "engine" in only:
                    bench_engine(stores, kind, reps, args.workers, scale)
        finally:
            stores.stop()


if __name__ == "__main__":
    sys.exit(main())
