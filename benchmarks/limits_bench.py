"""What ``--rate-limit`` (or ``--auth token``) costs: W1 over REST with and without it, and the
token bucket alone.

    .venv/bin/python benchmarks/limits_bench.py [--repeats 5] [--quick] [--follow wait,sse]
                                                [--rate 100000] [--against rate_limit|auth]

With ``--against auth`` the second server runs ``--auth token`` instead, its store holding an
admin token made with ``flowweaver tokens create`` before it starts, and every request to it
carries that token (the plain server gets none): the figure is what authentication costs.

W1 chain3 over REST (benchmarks/api_bench.py): 200 runs one after another, each a POST /runs
with ``Prefer: wait=60`` (``wait``) or a POST and its run's SSE stream (``sse``), on a fresh
SQLite store per sample. Two ``flowweaver serve`` processes run side by side, without the flag
and with ``--rate-limit RATE`` (high enough never to refuse: the figure is the check's cost),
and take the runs in turns, so that what other jobs on a shared machine cost falls on both
alike. One JSON line per case with the median of --repeats samples, and a line with the
relative cost of the medians (runs/s, p50 latency, server CPU per run). Then 20,000
GET /workflows, in turns of 100: the median microseconds of one request on each server.
Each W1 line also has the server's CPU time per run (all its threads, from /proc), steadier
than wall time on a shared machine.

The middleware alone (a mocked request, in process): the ns it adds to a request. The bucket
alone: ``TokenBuckets.take`` in a loop, on one key and cycling over 100,000 keys
(every call a different bucket, the most the server keeps), ns per call; and the memory the
100,000 buckets hold (tracemalloc), bytes per key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import (  # a sibling script, not a package
    CHAIN3,
    FINISH,
    FLOWWEAVER,
    SERVER_PIDS,
    Finish,
    _register,
    percentile,
    server,
)

from flowweaver.api.limits import MAX_CLIENTS, TokenBuckets, add_limits, limits_middleware

TOKENS: dict[str, str] = {}
"""The bearer token of each server run with ``--auth token``, by base URL."""


@contextlib.contextmanager
def authed_server(store_path: Path) -> Iterator[str]:
    """Run ``flowweaver serve --auth token`` on a store holding one admin token; yield its URL."""
    made = subprocess.run(
        [FLOWWEAVER, "tokens", "create", "--name", "bench", "--role", "admin", "--store",
         f"sqlite:///{store_path}"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    with server(store_path, extra=("--auth", "token")) as url:
        TOKENS[url] = made.stdout.split()[0]
        yield url


def _sessions(urls: dict[str, str]) -> dict[str, aiohttp.ClientSession]:
    """Return a client session per server, sending its token when it has one."""
    return {
        name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            headers={"Authorization": f"Bearer {TOKENS[url]}"} if url in TOKENS else None,
        )
        for name, url in urls.items()
    }


def cpu_seconds(pid: int) -> float:
    """Return the CPU time (user and system, every thread) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bucket_cost(calls: int) -> dict[str, float]:
    """Return ns per take on one key and over MAX_CLIENTS keys, and bytes per key."""
    one = TokenBuckets(1_000_000_000)
    started = time.perf_counter()
    for _ in range(calls):
        one.take("address:127.0.0.1")
    single = (time.perf_counter() - started) / calls * 1e9
    keys = [f"address:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(MAX_CLIENTS)]
    tracemalloc.start()
    many = TokenBuckets(1)  # at 1/s no bucket fills up again (and is dropped) meanwhile
    base = tracemalloc.get_traced_memory()[0]
    for key in keys:
        many.take(key)
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    started = time.perf_counter()
    for i in range(calls):
        many.take(keys[i % MAX_CLIENTS])
    cycling = (time.perf_counter() - started) / calls * 1e9
    return {
        "take_one_key_ns": single,
        "take_100k_keys_ns": cycling,
        "bytes_per_key": held / MAX_CLIENTS,
    }


async def w1_side_by_side(
    urls: dict[str, str], runs: int, finish: Finish
) -> dict[str, dict[str, float]]:
    """Run W1 on every server at once, one run on each in turn; return each one's figures.

    A server's runs/s counts only the time its own runs took, so both see the same moments of
    the machine: what the other helpers' jobs cost them falls on both alike.
    """
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    sessions = _sessions(urls)
    try:
        for name, url in urls.items():
            await _register(sessions[name], url, CHAIN3)
        cpu = {name: cpu_seconds(SERVER_PIDS[url]) for name, url in urls.items()}
        order = list(urls.items())
        for i in range(runs):
            for name, url in order if i % 2 else order[::-1]:  # neither always goes first
                t0 = time.perf_counter()
                await finish(sessions[name], url, "chain3", {"value": i})
                latencies[name].append((time.perf_counter() - t0) * 1000)
        for name, url in urls.items():
            cpu[name] = cpu_seconds(SERVER_PIDS[url]) - cpu[name]
    finally:
        for session in sessions.values():
            await session.close()
    return {
        name: {
            "runs_per_s": runs / (sum(values) / 1000),
            "server_cpu_ms_per_run": cpu[name] / runs * 1000,
            "p50_ms": statistics.median(values),
            "p99_ms": percentile(values, 0.99),
        }
        for name, values in latencies.items()
    }


def requests_side_by_side(urls: dict[str, str], requests: int) -> dict[str, float]:
    """Return each server's median microseconds for one GET /workflows, in turns of 100."""
    per: dict[str, list[float]] = {name: [] for name in urls}

    async def go() -> None:
        sessions = _sessions(urls)
        try:
            order = list(urls.items())
            for turn in range(requests // 100):
                for name, url in order if turn % 2 else order[::-1]:
                    t0 = time.perf_counter()
                    for _ in range(100):
                        async with sessions[name].get(f"{url}/workflows") as r:
                            await r.read()
                    per[name].append((time.perf_counter() - t0) / 100 * 1e6)
        finally:
            for session in sessions.values():
                await session.close()

    asyncio.run(go())
    return {name: statistics.median(values) for name, values in per.items()}


def middleware_cost(calls: int) -> dict[str, float]:
    """Return the ns the limits middleware adds to a request, measured in process.

    A mocked request from one address goes ``calls`` times through the middleware (a bucket
    that never runs dry) and ``calls`` times straight to the same trivial handler.
    """
    app = web.Application()
    add_limits(app, rate=1_000_000_000, sse_per_client=0, retry_ms=3000)
    request = make_mocked_request("GET", "/runs", app=app)
    response = web.Response()

    async def handler(_request: web.Request) -> web.StreamResponse:
        return response

    async def timed(through: bool) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            if through:
                await limits_middleware(request, handler)
            else:
                await handler(request)
        return (time.perf_counter() - started) / calls * 1e9

    async def both() -> tuple[float, float]:
        plain = min([await timed(False) for _ in range(3)])
        limited = min([await timed(True) for _ in range(3)])
        return plain, limited

    plain, limited = asyncio.run(both())
    return {"handler_ns": plain, "through_limits_ns": limited, "added_ns": limited - plain}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 20 runs")
    parser.add_argument("--follow", default="wait,sse", help="wait, sse, or both")
    parser.add_argument("--rate", type=int, default=100_000, help="the --rate-limit of the run")
    parser.add_argument("--runs", type=int, default=200, help="W1's runs per sample")
    parser.add_argument(
        "--against", choices=("rate_limit", "auth"), default="rate_limit", help="what is measured"
    )
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    runs = 20 if args.quick else args.runs
    measured = args.against
    flags = ("--rate-limit", str(args.rate)) if measured == "rate_limit" else ("--auth", "token")
    cases: dict[str, tuple[str, ...]] = {"off": (), measured: flags}

    def start(stack: ExitStack, path: Path, name: str) -> str:
        if name == "auth":
            return stack.enter_context(authed_server(path))
        return stack.enter_context(server(path, extra=cases[name]))

    with tempfile.TemporaryDirectory() as tmp:
        for follow in [f for f in args.follow.split(",") if f]:
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
            for i in range(repeats):
                with ExitStack() as stack:
                    urls = {
                        name: start(stack, Path(tmp) / f"{follow}-{name}-{i}.db", name)
                        for name in cases
                    }
                    got = asyncio.run(w1_side_by_side(urls, runs, FINISH[follow]))
                for name in cases:
                    samples[name].append(got[name])
            medians: dict[str, dict[str, float]] = {}
            for name, got_all in samples.items():
                medians[name] = {
                    k: round(statistics.median(s[k] for s in got_all), 3) for k in got_all[0]
                }
                line: dict[str, Any] = {
                    "benchmark": "W1_chain3_rest" + ("_wait" if follow == "wait" else ""),
                    "serve_flags": list(cases[name]),
                    "repeats": repeats,
                    "runs": runs,
                    "median": medians[name],
                    "samples": [{k: round(v, 3) for k, v in s.items()} for s in got_all],
                }
                print(json.dumps(line), flush=True)
            off, on = medians["off"], medians[measured]

            def pct(before: float, after: float) -> float:
                return round((after - before) / before * 100, 2)

            cost = {
                "runs_per_s": -pct(off["runs_per_s"], on["runs_per_s"]),  # fewer is a cost
                "p50_ms": pct(off["p50_ms"], on["p50_ms"]),
                "server_cpu_ms_per_run": pct(
                    off["server_cpu_ms_per_run"], on["server_cpu_ms_per_run"]
                ),
            }
            print(json.dumps({"follow": follow, f"{measured}_cost_pct": cost}), flush=True)
        requests = 2_000 if args.quick else 20_000
        with ExitStack() as stack:
            urls = {name: start(stack, Path(tmp) / f"get-{name}.db", name) for name in cases}
            micros = requests_side_by_side(urls, requests)
        print(
            json.dumps(
                {
                    "benchmark": "GET_workflows_us",
                    "requests": requests,
                    **{name: round(value, 1) for name, value in micros.items()},
                }
            ),
            flush=True,
        )
    calls = 100_000 if args.quick else 1_000_000
    print(json.dumps({"benchmark": "token_bucket", "calls": calls, **bucket_cost(calls)}))
    print(json.dumps({"benchmark": "middleware", "calls": calls, **middleware_cost(calls)}))


if __name__ == "__main__":
    main()
