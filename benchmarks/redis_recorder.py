"""Throughput of the Redis recorders (flowweaver_redis): inserts and notification reads.

Prints one JSON line per measure, with the median of the runs:

    .venv/bin/python benchmarks/redis_recorder.py [--quick] [--runs 3] [--url redis://...]

Each run writes under a key prefix of its own and deletes it afterwards. One thread, one
connection: the figures are per client, bound by round trips to Redis.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from uuid import uuid4

import redis
from eventsourcing.persistence import StoredEvent
from flowweaver_redis import RedisApplicationRecorder, RedisDatastore

TOPIC = "flowweaver.domain.events:TaskCompleted"
STATE = (
    b'{"task_id":"extract","attempt":1,"output":{"rows":1024,"path":"s3://bucket/key"},'
    b'"duration_ms":183,"timestamp":"2026-01-01T00:00:00.000000+00:00"}'
)


def _delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
    finally:
        client.close()


def _with_recorder(url: str, body: Callable[[RedisApplicationRecorder], float]) -> float:
    prefix = f"fwbench:{uuid4().hex}"
    datastore = RedisDatastore(url, key_prefix=prefix)
    try:
        recorder = RedisApplicationRecorder(datastore, events_name="bench:events")
        recorder.create_table()
        return body(recorder)
    finally:
        datastore.close()
        _delete_prefix(url, prefix)


def insert_rate(url: str, inserts: int, batch: int) -> float:
    """Return events recorded per second, ``batch`` events of one aggregate per insert."""

    def body(recorder: RedisApplicationRecorder) -> float:
        batches = [
            [StoredEvent(oid, v, TOPIC, STATE) for v in range(1, batch + 1)]
            for oid in (uuid4() for _ in range(inserts))
        ]
        started = time.perf_counter()
        for events in batches:
            recorder.insert_events(events)
        return inserts * batch / (time.perf_counter() - started)

    return _with_recorder(url, body)


def read_rate(url: str, events: int, page: int) -> float:
    """Return notifications read per second, paging through a log of ``events``."""

    def body(recorder: RedisApplicationRecorder) -> float:
        for _ in range(events // 100):
            oid = uuid4()
            recorder.insert_events([StoredEvent(oid, v, TOPIC, STATE) for v in range(1, 101)])
        started = time.perf_counter()
        read, last = 0, 0
        while True:
            notifications = recorder.select_notifications(last, page, inclusive_of_start=False)
            if not notifications:
                break
            read += len(notifications)
            last = notifications[-1].id
        elapsed = time.perf_counter() - started
        assert read == events
        return read / elapsed

    return _with_recorder(url, body)


def replay_rate(url: str, aggregates: int, length: int) -> float:
    """Return events read per second by select_events, one whole aggregate per call."""

    def body(recorder: RedisApplicationRecorder) -> float:
        ids = [uuid4() for _ in range(aggregates)]
        for oid in ids:
            recorder.insert_events(
                [StoredEvent(oid, v, TOPIC, STATE) for v in range(1, length + 1)]
            )
        started = time.perf_counter()
        read = sum(len(recorder.select_events(oid)) for oid in ids)
        return read / (time.perf_counter() - started)

    return _with_recorder(url, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    options = parser.parse_args()
    scale = 10 if options.quick else 1
    measures: list[tuple[str, dict[str, int], Callable[[], float]]] = [
        (
            "insert_batch_1",
            {"events": 20_000 // scale},
            lambda: insert_rate(options.url, 20_000 // scale, 1),
        ),
        (
            "insert_batch_100",
            {"events": 100_000 // scale},
            lambda: insert_rate(options.url, 1_000 // scale, 100),
        ),
        (
            "select_notifications_page_500",
            {"events": 100_000 // scale},
            lambda: read_rate(options.url, 100_000 // scale, 500),
        ),
        (
            "select_events_aggregate_of_100",
            {"events": 100_000 // scale},
            lambda: replay_rate(options.url, 1_000 // scale, 100),
        ),
    ]
    for name, sizes, measure in measures:
        runs = [measure() for _ in range(options.runs)]
        print(
            json.dumps(
                {
                    "benchmark": "redis_recorder",
                    "measure": name,
                    "unit": "events/s",
                    "median": round(statistics.median(runs)),
                    "runs": [round(r) for r in runs],
                    **sizes,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
