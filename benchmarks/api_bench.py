"""Workloads over the HTTP API of a real ``flowweaver serve`` process; one JSON line per result.

W1 chain3 over REST:   200 runs one after another on SQLite; each one POST /runs with
                       ``Prefer: wait=60`` answered with the ended run (W1_chain3_rest_wait),
                       or a POST and then GET /events/{id} followed to the terminal event
                       (W1_chain3_rest, over SSE): runs/s, p50/p99 latency.
W2 fanout1000 over REST: one run of 1,000 no-op tasks and a join, followed over SSE: tasks/s.
W3 concurrent over REST: 500 chain3 runs posted at once, each waited for with Prefer: wait
                       (W3_concurrent_rest_wait) or followed over SSE (W3_concurrent_rest): runs/s.
SSE fan-out:           1,000 subscribers on one run; delay from an event's timestamp (taken
                       just before its append) to its arrival at each subscriber: p50/p99.
SSE replay:            a 100,000-event run streamed from offset 0 to one client: events/s.
SSE stalled clients:   100 clients that never read and one that does, on one run of large
                       events: the reader's delay p50/p99, the server's resident memory before
                       and at its peak (VmHWM), and how many stalled clients were dropped.

    python benchmarks/api_bench.py [--repeats 3] [--only w1,w2,w3,fanout,replay,stall] [--quick]
                                   [--follow wait,sse] [--pid-file PATH]

The server runs as a subprocess (``flowweaver serve``, SQLite, log level WARNING so that access
lines are not part of the figure) on a fresh store for each repeat; the client is aiohttp for
REST and raw asyncio sockets for the SSE measurements, so that the client's own parsing does
not count as delivery delay. Each figure is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from flowweaver.domain import run as commands
from flowweaver.domain.events import ErrorInfo
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
CHAIN3 = {
    "id": "chain3",
    "tasks": [
        {"id": "t1", "handler": "echo", "inputs": {"value": "$.params.value"}},
        {
            "id": "t2",
            "handler": "echo",
            "dependencies": ["t1"],
            "inputs": {"value": "$.result.value"},
        },
        {
            "id": "t3",
            "handler": "echo",
            "dependencies": ["t2"],
            "inputs": {"value": "$.result.value"},
        },
    ],
}
TERMINAL = (b"event: RunCompleted\n", b"event: RunFailed\n", b"event: RunCancelled\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_PIDS: dict[str, int] = {}  # base URL -> pid of the serve process
PID_FILE: Path | None = None


def _memory_kib(pid: int) -> dict[str, int]:
    """Return the process's VmRSS and VmHWM (peak) in KiB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@contextmanager
def server(
    store_path: Path, *, workers: int = 8, limits: bool = False, extra: Sequence[str] = ()
) -> Iterator[str]:
    """Run ``flowweaver serve`` on ``store_path`` and yield its base URL.

    The limits on connections per client and on an SSE client's backlog are lifted, for the
    thousand subscribers of one process, unless ``limits`` keeps the defaults. ``extra`` are
    more serve flags (benchmarks/limits_bench.py: ``--rate-limit``).
    """
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLOWWEAVER_") or k == "FLOWWEAVER_SWITCH_INTERVAL"
    }
    process = subprocess.Popen(
        [
            FLOWWEAVER,
            "serve",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{store_path}",
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
            "--log-format",
            "json",
            "--max-connections",
            "4000",
            "--heartbeat",
            "0.5",
            *(() if limits else ("--max-connections-per-client", "4000", "--sse-buffer", "64MiB")),
            *extra,
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError("flowweaver serve exited")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2):  # noqa: S310 - loopback
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        SERVER_PIDS[url] = process.pid
        if PID_FILE is not None:
            PID_FILE.write_text(f"{process.pid}\n")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- REST workloads ---------------------------------------------------------------------------


async def _register(s: aiohttp.ClientSession, url: str, workflow: dict[str, Any]) -> None:
    async with s.post(f"{url}/workflows", json=workflow) as r:
        assert r.status in (200, 201), await r.text()


async def _start(s: aiohttp.ClientSession, url: str, workflow_id: str, params: Any) -> str:
    async with s.post(f"{url}/runs", json={"workflowId": workflow_id, "parameters": params}) as r:
        assert r.status == 201, await r.text()
        run_id: str = (await r.json())["id"]
        return run_id


async def _follow(s: aiohttp.ClientSession, url: str, run_id: str) -> bytes:
    """Read the run's SSE stream until the server closes it after the terminal event."""
    last = b""
    async with s.get(f"{url}/events/{run_id}") as r:
        assert r.status == 200
        async for chunk in r.content.iter_any():
            last = (last + chunk)[-4000:]
    assert any(t in last for t in TERMINAL), last
    return last


async def _start_and_wait(
    s: aiohttp.ClientSession, url: str, workflow_id: str, params: Any
) -> dict[str, Any]:
    """POST /runs with Prefer: wait and return the ended run it answers with."""
    async with s.post(
        f"{url}/runs",
        json={"workflowId": workflow_id, "parameters": params},
        headers={"Prefer": "wait=60"},
    ) as r:
        assert r.status == 201, await r.text()
        assert r.headers.get("Preference-Applied") == "wait=60", r.headers
        state: dict[str, Any] = await r.json()
        return state


async def _start_and_follow(
    s: aiohttp.ClientSession, url: str, workflow_id: str, params: Any
) -> None:
    run_id = await _start(s, url, workflow_id, params)
    assert b"RunCompleted" in await _follow(s, url, run_id)


async def _start_waiting(s: aiohttp.ClientSession, url: str, workflow_id: str, params: Any) -> None:
    assert (await _start_and_wait(s, url, workflow_id, params))["status"] == "completed"


Finish = Callable[[aiohttp.ClientSession, str, str, Any], Awaitable[None]]
FINISH: dict[str, Finish] = {"wait": _start_waiting, "sse": _start_and_follow}


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def w1(url: str, runs: int, finish: Finish) -> dict[str, float]:
    async with _session() as s:
        await _register(s, url, CHAIN3)
        latencies = []
        started = time.perf_counter()
        for i in range(runs):
            t0 = time.perf_counter()
            await finish(s, url, "chain3", {"value": i})
            latencies.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
    return {
        "runs_per_s": runs / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
    }


async def w2(url: str, tasks: int) -> dict[str, float]:
    workflow: dict[str, Any] = {
        "id": f"fanout{tasks}",
        "tasks": [
            *({"id": f"n{i}", "handler": "noop"} for i in range(tasks)),
            {"id": "join", "handler": "noop", "dependencies": [f"n{i}" for i in range(tasks)]},
        ],
    }
    async with _session() as s:
        await _register(s, url, workflow)
        started = time.perf_counter()
        run_id = await _start(s, url, workflow["id"], {})
        tail = await _follow(s, url, run_id)
        elapsed = time.perf_counter() - started
        assert b"RunCompleted" in tail
    return {"tasks_per_s": (tasks + 1) / elapsed, "seconds": elapsed}


async def w3(url: str, runs: int, finish: Finish) -> dict[str, float]:
    async with _session() as s:
        await _register(s, url, CHAIN3)
        started = time.perf_counter()
        await asyncio.gather(*(finish(s, url, "chain3", {"value": i}) for i in range(runs)))
        elapsed = time.perf_counter() - started
    return {"runs_per_s": runs / elapsed, "seconds": elapsed}


# --- SSE fan-out ------------------------------------------------------------------------------

_DATA = re.compile(rb'data: \{"type":"(\w+)","runId":"[^"]+","version":(\d+),"timestamp":"([^"]+)"')
# Linux: the kernel stamps each received segment; the stamp says when data reached the
# client's socket, however late the (busy, same-machine) client process gets to read it.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")


def _kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = _TIMESPEC.unpack_from(data)
            return seconds + nanos / 1e9
    return time.time()


def _subscribe_raw(port: int, run_id: str, count: int) -> list[list[tuple[float, bytes]]]:
    """Open ``count`` raw SSE connections and read them all to the end (epoll, no asyncio).

    Returns, per connection, the (arrival time, bytes) of every read.
    """
    request = f"GET /events/{run_id} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
    by_fd: dict[int, socket.socket] = {}
    received: dict[int, list[tuple[float, bytes]]] = {}
    poller = select.epoll()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.sendall(request)
        sock.setblocking(False)
        by_fd[sock.fileno()] = sock
        received[sock.fileno()] = []
        poller.register(sock.fileno(), select.EPOLLIN)
    space = socket.CMSG_SPACE(_TIMESPEC.size)
    open_count = count
    while open_count:
        for fd, _ in poller.poll(30):
            sock = by_fd[fd]
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(262144, space)
                except BlockingIOError:
                    break
                if not data:
                    poller.unregister(fd)
                    sock.close()
                    open_count -= 1
                    break
                received[fd].append((_kernel_time(ancillary), data))
    poller.close()
    return list(received.values())


def _delays(chunks: list[tuple[float, bytes]], since: float) -> list[float]:
    """Delay (s) of each event stamped after ``since``, from its timestamp to arrival."""
    out = []
    buffer = b""
    for received, data in chunks:
        buffer += data
        for match in _DATA.finditer(buffer):
            stamp = datetime.fromisoformat(match[3].decode()).timestamp()
            if stamp > since:
                out.append(received - stamp)
        cut = buffer.rfind(b"\n\n")
        if cut >= 0:
            buffer = buffer[cut + 2 :]
    return out


def _first_heartbeat(chunks: list[tuple[float, bytes]]) -> float:
    for received, data in chunks:
        if b": keep-alive" in data:
            return received
    raise AssertionError("a subscriber never reached the live phase")


async def fanout(url: str, subscribers: int, tasks: int, pause: float) -> dict[str, float]:
    """Subscribers wait on a run held by a sleep task, then a chain of tasks runs."""
    workflow: dict[str, Any] = {
        "id": "fanout_sse",
        "tasks": [
            {"id": "hold", "handler": "sleep", "inputs": {"seconds": "$.params.hold"}},
            *(
                {
                    "id": f"c{i}",
                    "handler": "sleep",
                    "dependencies": ["hold" if i == 0 else f"c{i - 1}"],
                    "inputs": {"seconds": pause},
                }
                for i in range(tasks)
            ),
        ],
    }
    hold = 2.0 + subscribers / 500
    async with _session() as s:
        await _register(s, url, workflow)
        run_id = await _start(s, url, "fanout_sse", {"hold": hold})
    port = int(url.rsplit(":", 1)[1])
    streams = await asyncio.to_thread(_subscribe_raw, port, run_id, subscribers)
    live_from = max(_first_heartbeat(chunks) for chunks in streams)
    delays = [d for chunks in streams for d in _delays(chunks, live_from)]
    expected = subscribers * (3 * tasks + 2)  # hold's completion, 3 per chained task, the end
    assert len(delays) == expected, (len(delays), expected)
    return {
        "deliveries": float(len(delays)),
        "p50_ms": statistics.median(delays) * 1000,
        "p99_ms": percentile(delays, 0.99) * 1000,
        "max_ms": max(delays) * 1000,
    }


# --- SSE replay -------------------------------------------------------------------------------


def write_long_run(path: Path, target: int) -> tuple[str, int]:
    """Record a run of about ``target`` events straight into a SQLite store, as the engine would.

    Tasks fail and retry (100 attempts each, no delay): 300 events per task.
    """
    tasks = max(1, target // 300)
    spec = workflow_from_builtins(
        {
            "id": "long",
            "defaults": {"retry": {"maxAttempts": 100, "initialDelay": 0}},
            "tasks": [{"id": f"t{i}", "handler": "fail"} for i in range(tasks)],
        }
    )
    now = datetime.now(UTC)
    run_id = str(uuid.uuid4())
    store = SQLiteEventStore(str(path))
    try:
        store.register_workflow(spec, now)
        state, events = commands.start_run(run_id, spec, 1, {}, now)
        pending: list[Any] = list(events)
        written = 0
        error = ErrorInfo(type="FailError", message="failed on purpose", retryable=True)
        for task in reversed(state.spec.tasks):
            attempt = 1
            while True:
                pending += commands.record_started(state, task.id, attempt, "w", now)
                pending += commands.record_failed(state, task.id, attempt, error, now)
                if state.tasks[task.id].status == "failed":
                    break
                pending += commands.record_retry_due(state, task.id, attempt, now)
                attempt += 1
            if len(pending) >= 5000:
                store.append([Append(run_id, written, pending)])
                written += len(pending)
                pending = []
        if pending:
            store.append([Append(run_id, written, pending)])
            written += len(pending)
        assert state.is_terminal
        return run_id, written
    finally:
        store.close()


async def replay(url: str, run_id: str, total: int) -> dict[str, float]:
    async with _session() as s:
        started = time.perf_counter()
        count = 0
        tail = b""  # a marker may straddle two reads
        async with s.get(f"{url}/events/{run_id}") as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                data = tail + chunk
                count += data.count(b"\nevent: ")
                tail = data[-7:] if not data.endswith(b"\nevent: ") else b""
        elapsed = time.perf_counter() - started
    assert count == total, (count, total)
    return {"events_per_s": total / elapsed, "seconds": elapsed, "events": float(total)}


# --- SSE clients that stop reading -------------------------------------------------------------


async def stall(url: str, stalled: int, tasks: int, blob: int) -> dict[str, float]:
    """Stalled clients and one reader follow a run of ``tasks`` echoes of a ``blob``-byte value.

    The stalled clients shrink their receive buffer, send the request and never read.
    """
    workflow: dict[str, Any] = {
        "id": "stall",
        "tasks": [
            {"id": "hold", "handler": "sleep", "inputs": {"seconds": "$.params.hold"}},
            *(
                {
                    "id": f"t{i}",
                    "handler": "echo",
                    "dependencies": ["hold"],
                    "inputs": {"blob": "$.params.blob"},
                }
                for i in range(tasks)
            ),
        ],
    }
    pid = SERVER_PIDS[url]
    port = int(url.rsplit(":", 1)[1])
    async with _session() as s:
        await _register(s, url, workflow)
        run_id = await _start(s, url, "stall", {"hold": 3.0, "blob": "x" * blob})
        before = _memory_kib(pid)["VmRSS"]
        socks = []
        for _ in range(stalled):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET /events/{run_id} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            socks.append(sock)
        delays = []
        async with s.get(f"{url}/events/{run_id}") as r:
            assert r.status == 200
            async for line in r.content:
                if line.startswith(b"data: "):
                    stamp = json.loads(line[6:])["timestamp"]
                    delays.append(time.time() - datetime.fromisoformat(stamp).timestamp())
        after = _memory_kib(pid)
        async with s.get(f"{url}/metrics") as r:
            text = await r.text()
        for sock in socks:
            sock.close()
    dropped = re.search(r"^flowweaver_sse_dropped_total ([0-9.e+]+)$", text, re.MULTILINE)
    live = delays[3:]  # after the replayed head of the run
    return {
        "reader_p50_ms": statistics.median(live) * 1000,
        "reader_p99_ms": percentile(live, 0.99) * 1000,
        "rss_before_mb": before / 1024,
        "rss_peak_mb": after["VmHWM"] / 1024,
        "rss_after_mb": after["VmRSS"] / 1024,
        "dropped": float(dropped[1]) if dropped else -1.0,
    }


# --- main -------------------------------------------------------------------------------------


def measure(
    name: str,
    repeats: int,
    directory: Path,
    workload: Callable[[str], Awaitable[dict[str, float]]],
    params: dict[str, Any],
    *,
    store: Path | None = None,
    limits: bool = False,
) -> None:
    samples = []
    for i in range(repeats):
        path = store or directory / f"{name}-{i}.db"
        with server(path, limits=limits) as url:
            samples.append(asyncio.run(workload(url)))
    line = {
        "benchmark": name,
        "store": "sqlite",
        "transport": "http",
        "repeats": repeats,
        "params": params,
        "median": {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]},
        "samples": [{k: round(v, 3) for k, v in s.items()} for s in samples],
    }
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="w1,w2,w3,fanout,replay,stall")
    parser.add_argument("--quick", action="store_true", help="1 repeat, smaller workloads")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument(
        "--pause", type=float, default=0.02, help="fan-out: seconds each chained task sleeps"
    )
    parser.add_argument(
        "--follow",
        default="wait,sse",
        help="W1/W3: wait with Prefer: wait, follow over SSE, or both (default)",
    )
    parser.add_argument(
        "--pid-file", type=Path, help="write each serve process's pid here (for py-spy)"
    )
    args = parser.parse_args(argv)
    follows = [f for f in args.follow.split(",") if f]
    assert set(follows) <= set(FINISH), f"--follow takes {', '.join(FINISH)}"
    global PID_FILE  # noqa: PLW0603 - a flag of this script, read by server()
    PID_FILE = args.pid_file
    repeats = 1 if args.quick else args.repeats
    scale = 10 if args.quick else 1
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(dir=os.environ.get("FLOWWEAVER_BENCH_DIR")) as tmp:
        directory = Path(tmp)
        names = {"wait": "_wait", "sse": ""}  # the SSE variants keep their earlier names
        if "w1" in only:
            n = 200 // scale
            for follow in follows:
                measure(
                    f"W1_chain3_rest{names[follow]}",
                    repeats,
                    directory,
                    lambda u, f=FINISH[follow]: w1(u, n, f),
                    {"runs": n, "follow": follow},
                )
        if "w2" in only:
            n = 1000 // scale
            measure("W2_fanout_rest", repeats, directory, lambda u: w2(u, n), {"tasks": n})
        if "w3" in only:
            n = 500 // scale
            for follow in follows:
                measure(
                    f"W3_concurrent_rest{names[follow]}",
                    repeats,
                    directory,
                    lambda u, f=FINISH[follow]: w3(u, n, f),
                    {"runs": n, "follow": follow},
                )
        if "fanout" in only:
            subs = args.subscribers // scale
            measure(
                "SSE_fanout",
                repeats,
                directory,
                lambda u: fanout(u, subs, 20, args.pause),
                {"subscribers": subs, "chained_tasks": 20, "task_seconds": args.pause},
            )
        if "stall" in only:
            n = 100 // scale
            measure(
                "SSE_stalled_clients",
                repeats,
                directory,
                lambda u: stall(u, n, 150, 20_000),
                {"stalled": n, "tasks": 150, "value_bytes": 20_000},
                limits=True,
            )
        if "replay" in only:
            target = 100_000 // scale
            path = directory / "long.db"
            run_id, total = write_long_run(path, target)
            measure(
                "SSE_replay",
                repeats,
                directory,
                lambda u: replay(u, run_id, total),
                {"events": total},
                store=path,
            )


if __name__ == "__main__":
    sys.exit(main())
