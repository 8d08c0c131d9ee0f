"""The embedded SQLite store and the msgspec codec: one JSON line per measurement.

    .venv/bin/python benchmarks/store_bench.py [--quick] [--repeats 5] [--events 100000]

Each line is ``{"name", "value", "unit", "params", "repeats", "min", "max"}`` where ``value`` is
the median of ``--repeats`` runs; lines with a target from issue 2 add ``target`` and ``met``.

- ``sqlite_append_one_by_one``: one event per append (one transaction each), events/s;
- ``sqlite_append_batched``: batches of 10, 100 and 1000 consecutive events of one run, events/s;
- ``sqlite_replay``: ``run_state`` of the whole run without snapshots: read the rows, decode the
  JSON, fold (events/s); ``sqlite_read_rows`` and ``decode_and_fold`` split it in two;
- ``sqlite_state_at_version``: ``run_state(at=N)`` for N across the run, without snapshots and
  with one every 1000 events (ms);
- ``codec_msgspec`` / ``codec_eventsourcing_json``: encode then decode every event of the run,
  ours against the eventsourcing library's Mapper with its JSONTranscoder (events/s), and
  ``codec_speedup``, the ratio.

The run is a realistic long one, decided by the domain's own commands: 1000 independent tasks,
each failing and retrying until its last attempt completes, cut at ``--events`` events.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

from flowweaver.domain.events import RUN_EVENT_TYPES, ErrorInfo, Event, RunEvent
from flowweaver.domain.run import (
    fold,
    new_state,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    start_run,
)
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore
from flowweaver.store.codec import decode_event, encode

T0 = datetime(2025, 1, 1, tzinfo=UTC)
TASKS = 1000
SNAPSHOT_INTERVAL = 1000


# --- the workload ------------------------------------------------------------------------------


def long_run(run_id: str, events: int, tasks: int = TASKS) -> list[RunEvent]:
    """Decide a run of ``tasks`` independent tasks that fail and retry; return its first events."""
    per_round = 3 * tasks  # started, failed, retried for every task
    attempts = max(1, -(-(events - 1 - tasks) // per_round) + 1)
    spec = workflow_from_builtins(
        {
            "id": "bench",
            "tasks": [
                {
                    "id": f"t{i}",
                    "handler": "work",
                    "inputs": {"n": i},
                    "retry": {"maxAttempts": attempts, "initialDelay": 0.5, "maxDelay": 30},
                }
                for i in range(tasks)
            ],
        }
    )
    state, decided = start_run(run_id, spec, 1, {"size": events}, T0)
    error = ErrorInfo(type="TimeoutError", message="upstream did not answer in 10 s")
    for attempt in range(1, attempts + 1):
        now = T0 + timedelta(minutes=attempt)
        for i in range(tasks):
            decided += record_started(state, f"t{i}", attempt, f"worker-{i % 8}", now)
        for i in range(tasks):
            if attempt < attempts:
                decided += record_failed(state, f"t{i}", attempt, error, now)
                decided += record_retry_due(state, f"t{i}", attempt, now)
            else:
                result = {"rows": i, "checksum": f"{i:08x}"}
                decided += record_completed(state, f"t{i}", attempt, result, 12.5, now)
        if len(decided) >= events:
            break
    return decided[:events]


# --- measuring ---------------------------------------------------------------------------------


def measure(repeats: int, once: Callable[[], float]) -> dict[str, Any]:
    """Call ``once`` (which returns one measurement) ``repeats`` times; return median and spread."""
    values = [once() for _ in range(repeats)]
    return {
        "value": round(statistics.median(values), 3),
        "repeats": repeats,
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def emit(
    name: str, unit: str, params: dict[str, Any], result: dict[str, Any], **extra: Any
) -> None:
    """Print one measurement as a JSON line."""
    line = {"name": name, "value": result["value"], "unit": unit, "params": params}
    line.update({k: result[k] for k in ("repeats", "min", "max")})
    line.update(extra)
    print(json.dumps(line), flush=True)


def rate(count: int, work: Callable[[], object]) -> float:
    """Return ``count`` divided by the seconds ``work`` takes."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def millis(work: Callable[[], object]) -> float:
    """Return the milliseconds ``work`` takes."""
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


class Files:
    """Fresh SQLite files in one temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def store(self, **kwargs: Any) -> SQLiteEventStore:
        self.count += 1
        return SQLiteEventStore(str(self.directory / f"bench-{self.count}.db"), **kwargs)


# --- the benchmarks ----------------------------------------------------------------------------


def bench_append(files: Files, events: list[RunEvent], args: argparse.Namespace) -> None:
    one_by_one = events[: 2000 if args.quick else 10_000]

    def append_singly(synchronous: str) -> float:
        store = files.store(synchronous=synchronous)
        run_id = str(uuid.uuid4())

        def work() -> None:
            for version, event in enumerate(one_by_one):
                store.append([Append(run_id=run_id, expected_version=version, events=[event])])

        try:
            return rate(len(one_by_one), work)
        finally:
            store.close()

    for synchronous in ("NORMAL",) if args.quick else ("NORMAL", "FULL"):
        result = measure(args.repeats, partial(append_singly, synchronous))
        params = {"events": len(one_by_one), "synchronous": synchronous}
        emit("sqlite_append_one_by_one", "events/s", params, result)

    def append_batched(batch: int) -> float:
        store = files.store()
        run_id = str(uuid.uuid4())

        def work() -> None:
            for start in range(0, len(events), batch):
                chunk = events[start : start + batch]
                store.append([Append(run_id=run_id, expected_version=start, events=chunk)])

        try:
            return rate(len(events), work)
        finally:
            store.close()

    for batch in (10, 100, 1000):
        result = measure(args.repeats, partial(append_batched, batch))
        params = {"events": len(events), "batch": batch, "synchronous": "NORMAL"}
        target = {"target": ">= 50000", "met": result["value"] >= 50_000} if batch == 1000 else {}
        emit("sqlite_append_batched", "events/s", params, result, **target)


def bench_replay_and_time_travel(
    files: Files, events: list[RunEvent], args: argparse.Namespace
) -> None:
    store = files.store(snapshot_interval=0)
    run_id = str(uuid.uuid4())
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        store.append([Append(run_id=run_id, expected_version=start, events=chunk)])
    expected = fold(events, new_state(run_id))
    assert store.run_state(run_id) == expected, "the stored run does not replay to its state"
    count = len(events)
    params: dict[str, Any] = {"events": count, "tasks": TASKS}

    result = measure(args.repeats, lambda: rate(count, lambda: store.run_state(run_id)))
    emit(
        "sqlite_replay",
        "events/s",
        params,
        result,
        target=">= 80000",
        met=result["value"] >= 80_000,
    )
    result = measure(args.repeats, lambda: rate(count, lambda: store.read_run(run_id)))
    emit("sqlite_read_rows", "events/s", params, result)
    raws = [r.raw for r in store.read_run(run_id)]

    def decode_and_fold() -> None:
        fold((decode_event(raw) for raw in raws), new_state(run_id))

    result = measure(args.repeats, lambda: rate(count, decode_and_fold))
    emit("decode_and_fold", "events/s", params, result)

    points = sorted({1000, count // 2, count - 1, count})
    for n in points:
        result = measure(args.repeats, partial(millis, partial(store.run_state, run_id, at=n)))
        emit("sqlite_state_at_version", "ms", {**params, "at": n, "snapshots": None}, result)

    # One read with the interval set saves a snapshot every SNAPSHOT_INTERVAL events.
    store.snapshot_interval = SNAPSHOT_INTERVAL
    assert store.run_state(run_id) == expected
    snapshot_bytes = len(encode(fold(events[:SNAPSHOT_INTERVAL], new_state(run_id))))
    for n in points:
        result = measure(args.repeats, partial(millis, partial(store.run_state, run_id, at=n)))
        snapshot_params = {**params, "at": n, "snapshots": SNAPSHOT_INTERVAL}
        snapshot_params["snapshot_bytes"] = snapshot_bytes
        emit(
            "sqlite_state_at_version",
            "ms",
            snapshot_params,
            result,
            target="< 50",
            met=result["value"] < 50,
        )
    store.close()


def library_event_classes() -> dict[type[Event], type[Any]]:
    """Build, for each of our events, the frozen dataclass the eventsourcing library would map.

    The library's Mapper stores ``vars(event)``; nested Structs become plain dicts (with
    datetimes kept for the transcoder's DatetimeAsISO), as a library user would write them.
    """
    module = sys.modules[__name__]
    classes: dict[type[Event], type[Any]] = {}
    for event_type in RUN_EVENT_TYPES:
        fields = [("originator_id", uuid.UUID), ("originator_version", int)]
        fields += [(name, Any) for name in event_type.__struct_fields__]
        name = f"Library{event_type.__name__}"
        cls = dataclasses.make_dataclass(name, fields, frozen=True)
        cls.__module__ = __name__
        setattr(module, name, cls)  # the Mapper finds classes by module and name
        classes[event_type] = cls
    return classes


def bench_codec(events: list[RunEvent], args: argparse.Namespace) -> None:
    sample = events[: 20_000 if args.quick else len(events)]
    count = len(sample)

    def ours() -> None:
        for event in sample:
            decode_event(encode(event))

    theirs_mapper = Mapper[uuid.UUID](transcoder=JSONTranscoder())
    theirs_mapper.transcoder.register(UUIDAsHex())  # type: ignore[attr-defined]
    theirs_mapper.transcoder.register(DatetimeAsISO())  # type: ignore[attr-defined]
    classes = library_event_classes()
    run_id = uuid.uuid4()
    library_events = []
    for version, event in enumerate(sample, start=1):
        state = {
            name: msgspec.to_builtins(value, builtin_types=(datetime,))
            for name, value in msgspec.structs.asdict(event).items()
        }
        library_events.append(
            classes[type(event)](originator_id=run_id, originator_version=version, **state)
        )
    check = theirs_mapper.to_domain_event(theirs_mapper.to_stored_event(library_events[1]))
    assert vars(check) == vars(library_events[1]), "the library mapper does not round-trip"

    def theirs() -> None:
        for event in library_events:
            theirs_mapper.to_domain_event(theirs_mapper.to_stored_event(event))

    params = {"events": count, "work": "encode+decode"}
    mine = measure(args.repeats, lambda: rate(count, ours))
    emit("codec_msgspec", "events/s", params, mine)
    library = measure(args.repeats, lambda: rate(count, theirs))
    emit(
        "codec_eventsourcing_json",
        "events/s",
        {**params, "mapper": "Mapper(JSONTranscoder)"},
        library,
    )
    ratio = {"value": round(mine["value"] / library["value"], 2), "repeats": args.repeats}
    ratio.update(min=ratio["value"], max=ratio["value"])
    emit("codec_speedup", "x", params, ratio)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median)")
    parser.add_argument("--events", type=int, default=None, help="events in the long run")
    args = parser.parse_args(argv)
    count = args.events or (20_000 if args.quick else 100_000)
    events = long_run(str(uuid.uuid4()), count)
    with tempfile.TemporaryDirectory(prefix="flowweaver-bench-") as directory:
        files = Files(Path(directory))
        bench_append(files, events, args)
        bench_replay_and_time_travel(files, events, args)
    bench_codec(events, args)


if __name__ == "__main__":
    main()
