"""What ``serve --auth token`` costs a request: the cheapest routes, with and without auth.

GET /runs/{id} of a finished run and GET /healthz (open either way, the floor), each sent
--requests times one after another on one kept-alive connection, against a real
``flowweaver serve`` on SQLite, once with ``--auth none`` and once with ``--auth token`` (a
reader token in the header). Prints one JSON line per route and mode: requests/s and p50/p99
latency, medians of --repeats fresh servers. A cheap route shows the middleware's cost at its
largest share; W1 over REST with and without auth is in api_bench.py.

    python benchmarks/auth_bench.py [--repeats 3] [--requests 3000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
CHAIN = {"id": "one", "tasks": [{"id": "a", "handler": "noop"}]}


def _serve(store: str, auth: str, cwd: str) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    process = subprocess.Popen(
        [FLOWWEAVER, "serve", "--store", store, "--port", "0", "--auth", auth,
         "--log-format", "json", "--log-level", "INFO"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stderr is not None
    for raw in process.stderr:
        line = json.loads(raw)
        if line.get("event") == "server_started":
            # Keep reading its log (access lines): a full pipe would stall the server.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, int(line["port"])
    raise RuntimeError("the server did not start")


def _token(store: str, cwd: str) -> str:
    done = subprocess.run(
        [FLOWWEAVER, "tokens", "create", "--name", "bench", "--role", "admin", "--store", store],
        cwd=cwd, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


async def _time(url: str, headers: dict[str, str], requests: int) -> dict[str, float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as s:
        for _ in range(50):  # warm up
            async with s.get(url) as r:
                await r.read()
        started = time.perf_counter()
        for _ in range(requests):
            t0 = time.perf_counter()
            async with s.get(url) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": requests / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def _one(auth: str, requests: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as cwd:
        store = f"sqlite:///{Path(cwd) / 'bench.db'}"
        token = _token(store, cwd)
        process, port = _serve(store, auth, cwd)
        try:
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {token}"} if auth == "token" else {}
            async with aiohttp.ClientSession(headers=headers) as s:
                async with s.post(f"{base}/workflows", json=CHAIN) as r:
                    assert r.status == 201, await r.text()
                async with s.post(
                    f"{base}/runs", json={"workflowId": "one"}, headers={"Prefer": "wait=30"}
                ) as r:
                    run_id = (await r.json())["id"]
            return {
                "GET /runs/{id}": await _time(f"{base}/runs/{run_id}", headers, requests),
                "GET /healthz": await _time(f"{base}/healthz", headers, requests),
            }
        finally:
            process.terminate()
            process.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark; print one JSON line per route and auth mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 500 requests")
    args = parser.parse_args(argv)
    repeats, requests = (1, 500) if args.quick else (args.repeats, args.requests)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(repeats):
        for auth in ("none", "token"):  # interleaved, so drift hits both alike
            for route, figures in asyncio.run(_one(auth, requests)).items():
                results.setdefault((route, auth), []).append(figures)
    for (route, auth), runs in sorted(results.items()):
        line: dict[str, Any] = {"route": route, "auth": auth, "repeats": len(runs)}
        for key in ("rps", "p50_ms", "p99_ms"):
            line[key] = round(statistics.median(r[key] for r in runs), 3)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
