"""W1-W3 on PostgreSQL with one node and with two, and what fencing and the log's lock cost.

    .venv/bin/python benchmarks/cluster_bench.py [--reps 3] [--quick] [--only engine,nodes,appends]
        [--url postgresql://postgres@127.0.0.1:5432/test]

Prints one JSON line per measure; each is the median of --reps repetitions, each on a schema
of its own, dropped afterwards.

- ``engine``: W1-W3, the functions of benchmarks/engine_bench.py, on one embedded Engine over
  the PostgreSQL store, three ways: ``fenced`` as a cluster node runs (PostgresLeases: every
  append is one fw_append call on the lease session); ``unfenced`` (LocalLeases: appends go
  through the pooled connections and the library's pipelined insert, as one lone process
  could); ``no_group_commit`` (fenced, but the engine's group commit limited to one run's
  append per transaction). Each line also says how the appends went: store appends, run
  appends and events per store append, and the share of the wall time with a store append
  in progress (near 1: the commit chain is the critical path).
- ``nodes``: the same workloads split over 1 and 2 node processes (each an Engine, fenced,
  on one schema), released together: W3 gives each node its share of the runs, W2 one
  fan-out run per node, W1 one client per node running runs one after another. Rates are
  over the span from the first start to the last finish. ``cpu_cores`` is the CPU time the
  node processes and every PostgreSQL process used, divided by that span: on a machine with
  N cores, near N means the cores were the limit.
- ``appends``: fenced appends from 1, 2 and 4 sessions at once (as 1, 2 and 4 nodes would),
  1 and 10 runs of one event each per append, with the log's EXCLUSIVE table lock and without
  it (a copy of fw_append without LOCK TABLE, in the benchmark's schema only: the log is then
  NOT commit-ordered; it exists here only to price the lock).

Experiment knobs for the node processes of ``nodes`` (environment): FWBENCH_TAKEOVER_INTERVAL
(seconds between takeover scans, default 1), FWBENCH_SYNCHRONOUS_COMMIT (``off`` prices the WAL
flush of the nodes' appends; never a setting to run with: it loses acknowledged events).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from flowweaver_postgres import PostgresEventStore, open_store
from flowweaver_postgres.leases import APPEND_FUNCTION, append_function_sql
from flowweaver_postgres.store import EVENTS_TABLE
from psycopg.sql import SQL, Identifier

sys.path.insert(0, str(Path(__file__).parent))
import engine_bench

from flowweaver.domain.events import RunStarted
from flowweaver.domain.spec import TaskSpec, WorkflowSpec
from flowweaver.engine import Engine
from flowweaver.engine.writer import GroupCommitter
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging
from flowweaver.ports import Append, LocalLeases

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
WORKLOADS = ("w1", "w2", "w3")


def emit(case: str, **fields: Any) -> None:
    print(json.dumps({"bench": "cluster", "case": case, **fields}), flush=True)


def schema_url(url: str, schema: str, pool_size: int = 8) -> str:
    return f"{url}?schema={schema}&pool_size={pool_size}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(Identifier(schema)))


def new_schema() -> str:
    return f"fwbench_{uuid.uuid4().hex[:16]}"


def sizes(scale: int) -> dict[str, int]:
    return {"w1": 200 // scale, "w2": 1000 // scale, "w3": 500 // scale}


def run_workload(engine: Engine, workload: str, n: int) -> dict[str, float]:
    if workload == "w1":
        return engine_bench.w1(engine, n)
    if workload == "w2":
        return engine_bench.w2(engine, n)
    return engine_bench.w3(engine, n)


def median_of(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 3) for key in samples[0]}


# --- engine: one embedded node, three ways ------------------------------------------------------


class AppendStats:
    """Wraps a store's append: how many, how big, and when a store append was in progress."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._append = store.append
        self.spans: list[tuple[float, float]] = []
        self.runs: Counter[int] = Counter()
        self.events = 0
        self._lock = threading.Lock()
        store.append = self  # type: ignore[method-assign]

    def __call__(self, appends: Sequence[Append]) -> list[int]:
        started = time.perf_counter()
        try:
            return self._append(appends)
        finally:
            ended = time.perf_counter()
            with self._lock:
                self.spans.append((started, ended))
                self.runs[len(appends)] += 1
                self.events += sum(len(a.events) for a in appends)

    def summary(self) -> dict[str, float]:
        calls = len(self.spans)
        if not calls:
            return {}
        covered, (start, end) = 0.0, sorted(self.spans)[0]
        first = start
        for s, e in sorted(self.spans)[1:]:
            if s > end:
                covered += end - start
                start, end = s, e
            else:
                end = max(end, e)
        covered += end - start
        last = max(e for _, e in self.spans)
        run_appends = sum(k * v for k, v in self.runs.items())
        durations = sorted(e - s for s, e in self.spans)
        return {
            "store_appends": calls,
            "run_appends_per_store_append": round(run_appends / calls, 2),
            "events_per_store_append": round(self.events / calls, 2),
            "append_p50_ms": round(durations[calls // 2] * 1000, 3),
            "busy_share": round(covered / (last - first), 3) if last > first else 1.0,
        }


def bench_engine(url: str, reps: int, scale: int, workloads: Sequence[str], workers: int) -> None:
    n = sizes(scale)
    for workload in workloads:
        for variant in ("fenced", "unfenced", "no_group_commit"):
            samples, stats = [], []
            for _ in range(reps):
                schema = new_schema()
                store = open_store(schema_url(url, schema))
                options: dict[str, Any] = {}
                if variant == "unfenced":
                    options["leases"] = LocalLeases()
                engine = Engine(
                    store, handlers=builtin_registry(), workers=workers, owns_store=True, **options
                )
                if variant == "no_group_commit":
                    engine.writer = GroupCommitter(store, max_batch=1)
                counter = AppendStats(store)
                engine.writer.store = store  # the writer calls the counting append
                try:
                    samples.append(run_workload(engine, workload, n[workload]))
                    stats.append(counter.summary())
                finally:
                    engine.close()
                    drop_schema(url, schema)
            emit(
                "engine",
                workload=workload,
                variant=variant,
                size=n[workload],
                workers=workers,
                reps=reps,
                median=median_of(samples),
                appends=median_of(stats),
                samples=samples,
            )


# --- nodes: one and two node processes ----------------------------------------------------------


def child(url: str, workload: str, n: int, workers: int) -> None:
    """One node: open, register, say ready, wait for go, run its share, say how it went."""
    configure_logging(json=True, level="WARNING")
    store = open_store(url)
    engine = Engine(
        store,
        handlers=builtin_registry(),
        workers=workers,
        owns_store=True,
        takeover_interval=float(os.environ.get("FWBENCH_TAKEOVER_INTERVAL", "1.0")),
    )
    commit_mode = os.environ.get("FWBENCH_SYNCHRONOUS_COMMIT")
    if commit_mode:  # an experiment: price the WAL flush of the node's appends
        leases: Any = engine.leases
        leases._conn.execute(f"SET synchronous_commit = {commit_mode}")
    try:
        engine.register_workflow(engine_bench.CHAIN3)
        engine.register_workflow(engine_bench.fanout(n))
        print(json.dumps({"ready": True}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.time()
        result = run_workload(engine, workload, n)
        ended = time.time()
        after = resource.getrusage(resource.RUSAGE_SELF)
        used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
        print(
            json.dumps({"start": started, "end": ended, "cpu": used, "result": result}),
            flush=True,
        )
    finally:
        engine.close()


def postgres_cpu() -> float:
    """Return the CPU seconds PostgreSQL has used so far: the postmaster, its live children,
    and (through the postmaster's cutime and cstime) every child that has exited."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not stat[stat.index("(") + 1 : stat.rindex(")")].startswith("postgres"):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if fields[1] == "1" or not Path(f"/proc/{fields[1]}").exists():  # the postmaster
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / ticks


def nodes_once(url: str, workload: str, nodes: int, n: int, workers: int) -> dict[str, float]:
    schema = new_schema()
    share = n if workload == "w2" else n // nodes
    command = [sys.executable, __file__, "--child", workload, "--share", str(share)]
    command += ["--url", schema_url(url, schema, pool_size=4), "--workers", str(workers)]
    procs = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(nodes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline()).get("ready")
        pg_before = postgres_cpu()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            reports.append(json.loads(proc.stdout.readline()))
        pg_used = postgres_cpu() - pg_before
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        drop_schema(url, schema)
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    total = share * nodes
    out: dict[str, float] = {"seconds": span}
    if workload == "w2":
        out["tasks_per_s"] = (total + nodes) / span
    else:
        out["runs_per_s"] = total / span
    if workload == "w1":
        out["p50_ms"] = statistics.median(r["result"]["p50_ms"] for r in reports)
    out["cpu_cores"] = (sum(r["cpu"] for r in reports) + pg_used) / span
    out["node_cores"] = sum(r["cpu"] for r in reports) / span / nodes  # per node process
    out["postgres_cores"] = pg_used / span
    return out


def bench_nodes(url: str, reps: int, scale: int, workloads: Sequence[str], workers: int) -> None:
    n = sizes(scale)
    for workload in workloads:
        medians = {}
        for nodes in (1, 2):
            samples = [nodes_once(url, workload, nodes, n[workload], workers) for _ in range(reps)]
            medians[nodes] = median_of(samples)
            emit(
                "nodes",
                workload=workload,
                nodes=nodes,
                size=n[workload] * (nodes if workload == "w2" else 1),
                workers_per_node=workers,
                reps=reps,
                median=medians[nodes],
                samples=[{k: round(v, 3) for k, v in s.items()} for s in samples],
            )
        key = "tasks_per_s" if workload == "w2" else "runs_per_s"
        emit(
            "nodes_speedup",
            workload=workload,
            two_over_one=round(medians[2][key] / medians[1][key], 2),
        )


# --- appends: fenced appends from several sessions, with and without the table lock ------------


# Variants of fw_append, created under other names in the benchmark's schema only. Without the
# table lock the log is NOT commit-ordered (a tailer can skip events); without NOTIFY no other
# process wakes up. They exist to price each of the two serialization points.
APPEND_VARIANTS = {
    "lock_and_notify": (),  # what the store runs
    "no_table_lock": ("LOCK TABLE",),
    "no_lock_no_notify": ("LOCK TABLE", "NOTIFY"),
}


def variant_sql(schema: str, channel: str, name: str, drop: Sequence[str]) -> SQL:
    """Return DDL of fw_append without the statements starting with ``drop``, named ``name``."""
    ddl = append_function_sql(schema, EVENTS_TABLE, channel).as_string()
    statements = ddl.split("; ")
    kept = [st for st in statements if not st.strip().startswith(tuple(drop))]
    assert len(kept) == len(statements) - len(drop), "fw_append changed: update the benchmark"
    return SQL("; ".join(kept).replace(f'"{APPEND_FUNCTION}"', f'"{name}"'))  # type: ignore[arg-type]


def bench_appends(url: str, reps: int, scale: int) -> None:
    schema = new_schema()
    stores = [open_store(schema_url(url, schema, pool_size=1)) for _ in range(4)]
    try:
        calls = {}
        with psycopg.connect(url, autocommit=True) as conn:
            for variant, drop in APPEND_VARIANTS.items():
                name = f"fw_append_{variant}"
                conn.execute(variant_sql(schema, stores[0].channel, name, drop))
                calls[variant] = SQL("SELECT * FROM {0}.{1}(%s, %s, %s, %s, %s, %b, %s)").format(
                    Identifier(schema), Identifier(name)
                )
        leases = [store.open_leases(f"bench{i}") for i, store in enumerate(stores)]
        event = first_event()
        for sessions in (1, 2, 4):
            for runs_per_append in (1, 10):
                for variant, call in calls.items():
                    for lease in leases:  # benchmark only: swap the statement the lease runs
                        lease._append = call
                    appends_each = 300 * runs_per_append // scale
                    append_rate(stores[:sessions], 30, runs_per_append, event)  # warm up
                    rates = []
                    for _ in range(reps):
                        rates.append(
                            append_rate(stores[:sessions], appends_each, runs_per_append, event)
                        )
                        # Each new run took a lease: give them back (the server's lock table
                        # is shared by every session), as finished runs do.
                        for lease in leases:
                            for run_id in lease.held():
                                lease.release(run_id)
                    median = statistics.median(rates)
                    emit(
                        "appends",
                        sessions=sessions,
                        runs_per_append=runs_per_append,
                        variant=variant,
                        events_per_s=round(median),
                        commits_per_s=round(median / runs_per_append),
                        min=round(min(rates)),
                        max=round(max(rates)),
                        reps=reps,
                    )
    finally:
        for store in stores:
            store.close()
        drop_schema(url, schema)


def first_event() -> RunStarted:
    """Return the first event of a one-task run."""
    spec = WorkflowSpec(id="bench", tasks=(TaskSpec(id="t", handler="noop"),))
    return RunStarted(
        timestamp=datetime(2025, 1, 1, tzinfo=UTC),
        workflow_id="bench",
        workflow_version=1,
        definition=spec,
    )


def append_rate(
    stores: Sequence[PostgresEventStore], events_each: int, runs_per_append: int, event: RunStarted
) -> float:
    """Append ``events_each`` new runs from each store's thread at once; return events/s."""
    batches = [
        [
            [Append(str(uuid.uuid4()), 0, [event]) for _ in range(runs_per_append)]
            for _ in range(events_each // runs_per_append)
        ]
        for _ in stores
    ]
    barrier = threading.Barrier(len(stores) + 1)

    def work(store: PostgresEventStore, mine: list[list[Append]]) -> None:
        barrier.wait()
        for batch in mine:
            store.append(batch)

    threads = [
        threading.Thread(target=work, args=(store, mine))
        for store, mine in zip(stores, batches, strict=True)
    ]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return events_each * len(stores) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repetition, a tenth of the work")
    parser.add_argument("--only", default="engine,nodes,appends")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--share", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.url, args.child, args.share, args.workers)
        return
    configure_logging(json=True, level="WARNING")
    reps = 1 if args.quick else args.reps
    scale = 10 if args.quick else 1
    workloads = [w for w in args.workloads.split(",") if w]
    only = set(args.only.split(","))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("engine", lambda: bench_engine(args.url, reps, scale, workloads, args.workers)),
        ("nodes", lambda: bench_nodes(args.url, reps, scale, workloads, args.workers)),
        ("appends", lambda: bench_appends(args.url, reps, scale)),
    ]
    for name, step in steps:
        if name in only:
            step()


if __name__ == "__main__":
    main()
