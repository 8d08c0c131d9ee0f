"""POST /runs/{id}/fork of a finished 1,000-task run at its last version, over a real server.

A run of 1,000 independent no-op tasks is run to its end (POST /runs with Prefer: wait), then
forked again and again with no body: the default fork, at the run's last version, resets
nothing (every task completed) and carries all 1,000 outputs, so each fork ends in its first
append. The figure is the time from sending the POST to reading the 201 (client side, aiohttp
on loopback): median, p95 and max of --forks forks after the first, and the first on its own.
Twice: on the server that ran the parent (``ended_here_``: the engine remembers the final
state of a run that ended in it), and on a new server on the same store (``after_restart_``:
each fork folds the parent from its latest snapshot). One JSON line, each figure the median
over --repeats servers.

    python benchmarks/fork_bench.py [--repeats 3] [--forks 50] [--tasks 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_bench import percentile, server  # a sibling script, not a package

JSON = {"Content-Type": "application/json"}  # every POST says JSON, even with no body


def wide(tasks: int) -> dict[str, Any]:
    """A workflow of ``tasks`` independent no-op tasks."""
    return {"id": "wide", "tasks": [{"id": f"t{i}", "handler": "noop"} for i in range(tasks)]}


async def finish_run(url: str, tasks: int) -> str:
    """Register WIDE and run it to its end; return the run id."""
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(f"{url}/workflows", json=wide(tasks)) as r:
            assert r.status in (200, 201), await r.text()
        async with s.post(
            f"{url}/runs", json={"workflowId": "wide"}, headers={"Prefer": "wait=60"}
        ) as r:
            run = await r.json()
    assert run["status"] == "completed", run["status"]
    run_id: str = run["id"]
    return run_id


async def fork_times(url: str, run_id: str, forks: int) -> dict[str, float]:
    """Fork ``run_id`` (no body) ``forks`` times; the ms from each POST to its 201."""
    times = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        for _ in range(forks):
            began = time.perf_counter()
            async with s.post(f"{url}/runs/{run_id}/fork", headers=JSON) as r:
                assert r.status == 201, await r.text()
                body = await r.read()
            times.append((time.perf_counter() - began) * 1000)
            fork = json.loads(body)
            assert fork["status"] == "completed"
            assert fork["parentRunId"] == run_id
    rest = times[1:] or times
    return {
        "first_ms": times[0],
        "median_ms": statistics.median(rest),
        "p95_ms": percentile(rest, 0.95),
        "max_ms": max(rest),
    }


def one_repeat(path: Path, tasks: int, forks: int) -> dict[str, float]:
    """Forks on the server that ran the parent, then on a new server on the same store."""
    with server(path) as url:
        run_id = asyncio.run(finish_run(url, tasks))
        warm = asyncio.run(fork_times(url, run_id, forks))
    with server(path) as url:  # restarted: the parent is folded from the store for each fork
        cold = asyncio.run(fork_times(url, run_id, forks))
    return {
        **{f"ended_here_{k}": v for k, v in warm.items()},
        **{f"after_restart_{k}": v for k, v in cold.items()},
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 10 forks")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    forks = 10 if args.quick else args.forks
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLOWWEAVER_BENCH_DIR")) as tmp:
        samples = [
            one_repeat(Path(tmp) / f"fork-{i}.db", args.tasks, forks) for i in range(repeats)
        ]
    line = {
        "benchmark": "fork_1000_task_run_at_last_version",
        "store": "sqlite",
        "transport": "http",
        "repeats": repeats,
        "params": {"tasks": args.tasks, "forks": forks},
        "median": {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]},
        "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
