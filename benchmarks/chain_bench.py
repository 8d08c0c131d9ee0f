"""What the hash chain costs appends, and how fast verify and export walk a long run.

    .venv/bin/python benchmarks/chain_bench.py [--quick] [--repeats 5] [--events 100000]

One JSON line per measurement: ``{"name", "value", "unit", "params", "repeats", "min", "max"}``,
``value`` the median of ``--repeats`` runs; figures with a target add ``target`` and ``met``.

- ``append_chained`` / ``append_plain``: the same appends into a fresh store with the chain
  (the store as it is) and without it (a subclass that stores the canonical JSON unhashed, as
  before chains); ``append_chain_cost`` is plain/chained - 1 (the share of throughput the
  chain takes), each pair measured back to back. Workloads: ``one_by_one`` (one event per
  append, a transaction each) and ``group`` (what the engine's group commit writes: 50 runs'
  appends of 2 events in one batch) on SQLite (synchronous NORMAL) and memory;
- ``verify_sqlite``: :func:`flowweaver.store.audit.verify_run` of one ``--events``-event run
  in a SQLite file, events/s (target >= 200,000);
- ``export_sqlite``: the same run's export lines (verify, then the lines), events/s.

The run is store_bench's realistic long one (tasks failing and retrying).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent

sys.path.insert(0, str(Path(__file__).parent))
from store_bench import emit, long_run, measure, rate

from flowweaver.domain.events import RunEvent
from flowweaver.ports import Append
from flowweaver.store.audit import export_run, verify_run
from flowweaver.store.base import RecorderEventStore
from flowweaver.store.codec import encode, event_topic
from flowweaver.store.memory import MemoryEventStore
from flowweaver.store.sqlite import SQLiteEventStore


def _unchained(
    appends: Sequence[Append],
) -> tuple[list[StoredEvent], dict[str, tuple[int, bytes]]]:
    """Map appends as the store did before chains: the canonical JSON, no hash."""
    stored = []
    for append in appends:
        originator = uuid.UUID(append.run_id)
        version = append.expected_version
        for event in append.events:
            version += 1
            stored.append(StoredEvent(originator, version, event_topic(event), encode(event)))
    return stored, {}


class PlainSQLite(SQLiteEventStore):
    """SQLite without the chain: the baseline."""

    def _chained_events(
        self, appends: Sequence[Append]
    ) -> tuple[list[StoredEvent], dict[str, tuple[int, bytes]]]:
        return _unchained(appends)


class PlainMemory(MemoryEventStore):
    """Memory without the chain: the baseline."""

    def _chained_events(
        self, appends: Sequence[Append]
    ) -> tuple[list[StoredEvent], dict[str, tuple[int, bytes]]]:
        return _unchained(appends)


Workload = Callable[[RecorderEventStore], int]


def one_by_one(events: list[RunEvent]) -> Workload:
    """One run, one event per append."""

    def work(store: RecorderEventStore) -> int:
        run_id = str(uuid.uuid4())
        for version, event in enumerate(events):
            store.append([Append(run_id=run_id, expected_version=version, events=[event])])
        return len(events)

    return work


def group(events: list[RunEvent], runs: int = 50, per_append: int = 2) -> Workload:
    """``runs`` runs advancing together: each batch holds one append of each, as group commit."""

    def work(store: RecorderEventStore) -> int:
        run_ids = [str(uuid.uuid4()) for _ in range(runs)]
        count = 0
        for start in range(0, len(events) // runs, per_append):
            chunk = events[start : start + per_append]
            store.append([Append(run_id=r, expected_version=start, events=chunk) for r in run_ids])
            count += runs * len(chunk)
        return count

    return work


def bench_append(directory: Path, events: list[RunEvent], args: argparse.Namespace) -> None:
    files = iter(range(10**9))
    stores: dict[str, tuple[Callable[[], RecorderEventStore], Callable[[], RecorderEventStore]]]
    stores = {
        "sqlite": (
            lambda: SQLiteEventStore(str(directory / f"c{next(files)}.db")),
            lambda: PlainSQLite(str(directory / f"p{next(files)}.db")),
        ),
        "memory": (MemoryEventStore, PlainMemory),
    }
    size = 2000 if args.quick else 10_000
    workloads = {"one_by_one": one_by_one(events[:size]), "group": group(events[: size * 5])}
    for backend, (chained, plain) in stores.items():
        for name, workload in workloads.items():
            pairs: list[tuple[float, float]] = []

            def once(
                pairs: list[tuple[float, float]] = pairs,
                workload: Workload = workload,
                chained: Callable[[], RecorderEventStore] = chained,
                plain: Callable[[], RecorderEventStore] = plain,
            ) -> float:
                with_chain = _rate(chained, workload)
                without = _rate(plain, workload)
                pairs.append((with_chain, without))
                return without / with_chain - 1

            cost = measure(args.repeats, once)
            params = {"store": backend, "workload": name}
            emit("append_chained", "events/s", params, _median([p[0] for p in pairs]))
            emit("append_plain", "events/s", params, _median([p[1] for p in pairs]))
            target = {"target": "<= 0.10", "met": cost["value"] <= 0.10}
            emit("append_chain_cost", "fraction", params, cost, **target)


def _rate(make: Callable[[], RecorderEventStore], workload: Workload) -> float:
    store = make()
    try:
        counted: list[int] = []
        return rate(1, lambda: counted.append(workload(store))) * counted[0]
    finally:
        store.close()


def _median(values: list[float]) -> dict[str, Any]:
    return measure(len(values), iter(values).__next__)


def bench_walk(directory: Path, events: list[RunEvent], args: argparse.Namespace) -> None:
    store = SQLiteEventStore(str(directory / "long.db"))
    run_id = str(uuid.uuid4())
    try:
        for start in range(0, len(events), 1000):
            chunk = events[start : start + 1000]
            store.append([Append(run_id=run_id, expected_version=start, events=chunk)])
        params = {"events": len(events), "store": "sqlite"}
        check = verify_run(store, run_id)
        assert check.ok, check
        assert check.version == len(events), check
        result = measure(
            args.repeats, partial(rate, len(events), partial(verify_run, store, run_id))
        )
        target = {"target": ">= 200000", "met": result["value"] >= 200_000}
        emit("verify_sqlite", "events/s", params, result, **target)

        def export() -> None:
            for _ in export_run(store, run_id):
                pass

        emit(
            "export_sqlite",
            "events/s",
            params,
            measure(args.repeats, partial(rate, len(events), export)),
        )
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--events", type=int, default=None, help="events in the long run")
    args = parser.parse_args(argv)
    count = args.events or (20_000 if args.quick else 100_000)
    events = long_run(str(uuid.uuid4()), count)
    with tempfile.TemporaryDirectory(prefix="flowweaver-chain-bench-") as directory:
        bench_append(Path(directory), events, args)
        bench_walk(Path(directory), events, args)


if __name__ == "__main__":
    main()
