"""SSE on the wire: what the hub writes directly, the access log's bytes, byte-bounded backlogs.

Real clients on loopback: raw sockets where the test must see the exact bytes (or must not
read at all), an aiohttp client for the reader that keeps up.
"""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from flowweaver.api.app import HUB
from flowweaver.api.sse import Hub
from flowweaver.observability import metrics

from .conftest import Gates, LiveServer, collect, events_of, example_registry, run, sse_messages
from .raw_http import raw_get, read_to_end, read_until

_ID = re.compile(rb"^id: (\d+)$", re.MULTILINE)


def _hub(server: LiveServer) -> Hub:
    assert server.app is not None
    return server.app[HUB]


def _dechunk(body: bytes) -> bytes:
    """Decode an HTTP/1.1 chunked body strictly: every size line, every CRLF, the last chunk."""
    out = b""
    rest = body
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        assert sep, f"no chunk size line in {rest[:60]!r}"
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", f"bytes after the last chunk: {rest[:60]!r}"
            return out
        out += rest[:size]
        assert rest[size : size + 2] == b"\r\n", f"chunk not closed: {rest[size : size + 20]!r}"
        rest = rest[size + 2 :]


def _held_chain(tasks: int, gate: str) -> dict[str, Any]:
    """A run held at its first task by ``gate``, then a chain of no-op tasks."""
    return {
        "id": f"held-{gate}",
        "tasks": [
            {"id": "hold", "handler": "gate", "inputs": {"gate": gate}},
            *(
                {
                    "id": f"c{i}",
                    "handler": "noop",
                    "dependencies": ["hold" if i == 0 else f"c{i - 1}"],
                }
                for i in range(tasks)
            ),
        ],
    }


async def _start(server: LiveServer, workflow: dict[str, Any], params: Any = None) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/workflows", json=workflow) as r:
            assert r.status == 201, await r.text()
        async with s.post(
            f"{server.url}/runs", json={"workflowId": workflow["id"], "parameters": params or {}}
        ) as r:
            assert r.status == 201, await r.text()
            run_id: str = (await r.json())["id"]
            return run_id


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_live_frames_follow_the_headers_and_the_access_log_counts_every_byte(
    servers: Any, gates: Gates, version: str
) -> None:
    """Frames the hub writes directly come after the headers, framed as announced, and counted."""
    server = servers(handlers=example_registry(gates), heartbeat=0.05)
    run_id = run(_start(server, _held_chain(30, "wire")))
    path = f"/events/{run_id}"
    direct_before = server.call(lambda: _hub(server).direct_writes)
    with capture_logs() as logs:
        sock = raw_get(server, path, version=version)
        received = read_until(sock, b": keep-alive")  # the stream follows live events now
        gates.open("wire")
        received += read_to_end(sock)
        sock.close()
        server.wait_logged(path)
    assert server.call(lambda: _hub(server).direct_writes) > direct_before
    head, sep, body = received.partition(b"\r\n\r\n")
    assert sep
    assert head.startswith(f"HTTP/{version} 200 OK\r\n".encode())
    assert b"Content-Type: text/event-stream; charset=utf-8" in head
    if version == "1.1":
        assert b"Transfer-Encoding: chunked" in head
        body = _dechunk(body)
    else:
        assert b"Transfer-Encoding" not in head
    assert body.startswith(b"retry: 3000\n\n")
    versions = [int(v) for v in _ID.findall(body)]
    assert versions == list(range(1, len(versions) + 1))
    assert b"event: RunCompleted\n" in body
    logged = [e for e in logs if e["event"] == "http_request" and e["path"] == path]
    assert len(logged) == 1
    assert logged[0]["bytes"] == len(received)


def _shrink_send_buffers(server: LiveServer, clients: list[socket.socket]) -> None:
    """Give the server's side of these connections a smaller kernel send buffer still.

    The server caps it at 64 KiB (Linux doubles that); at 4 KiB what a client leaves unread
    reaches the server's own buffers, where the limit applies, with little data.
    """
    ports = {sock.getsockname()[1] for sock in clients}
    hub = _hub(server)

    def shrink() -> int:
        done = 0
        subs = [s for subs in hub._by_run.values() for s in subs]
        for sub in subs:
            transport = sub.transport
            assert transport is not None
            if transport.get_extra_info("peername")[1] in ports:
                raw = transport.get_extra_info("socket")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                done += 1
        return done

    assert server.call(shrink) == len(clients)


def _wait_subscribed(server: LiveServer, count: int) -> None:
    """Return once ``count`` streams follow live events (each server call is a round trip)."""
    hub = _hub(server)
    deadline = time.monotonic() + 10
    while server.call(lambda: hub.subscribers) < count:
        assert time.monotonic() < deadline, "the streams never subscribed"


def _wait_answered(server: LiveServer, path: str, count: int) -> None:
    """Return once the server has ended ``count`` requests for ``path``."""
    with server.logged_changed:
        assert server.logged_changed.wait_for(
            lambda: sum(1 for r in server.logged if r.path == path) == count, timeout=15
        ), f"{path} was not answered {count} times"


def _wide(tasks: int, blob_param: str = "$.params.blob") -> dict[str, Any]:
    """A run held by the gate ``wide``, then ``tasks`` echo tasks of the blob at once."""
    return {
        "id": "wide",
        "tasks": [
            {"id": "hold", "handler": "gate", "inputs": {"gate": "wide"}},
            *(
                {
                    "id": f"t{i}",
                    "handler": "echo",
                    "dependencies": ["hold"],
                    "inputs": {"blob": blob_param},
                }
                for i in range(tasks)
            ),
        ],
    }


def test_clients_that_stop_reading_are_dropped_within_the_byte_limit(
    servers: Any, gates: Gates
) -> None:
    """Non-reading clients are dropped and counted before their backlog passes the byte limit.

    A reader of the same busy run meanwhile gets every event, promptly.
    """
    limit = 1024 * 1024  # a reader may lag this far; each stream carries 2.4 MB
    server = servers(
        handlers=example_registry(gates),
        sse_buffer=limit,
        sse_drain_timeout=0.3,
        sse_write_timeout=1.0,  # a stuck client's last write waits this long at most
        heartbeat=0.05,
        tail_page=5,  # the flood reaches subscribers over many rounds
    )
    # About 2.4 MB per stream, 8 KB per event.
    run_id = run(_start(server, _wide(150), {"blob": "b" * 8000}))
    path = f"/events/{run_id}"
    dropped_before = metrics.sse_dropped._value.get()
    stuck = [raw_get(server, path, rcvbuf=4096) for _ in range(4)]
    _wait_subscribed(server, 4)
    _shrink_send_buffers(server, stuck)

    async def main() -> tuple[list[float], list[int]]:
        async with aiohttp.ClientSession() as s:
            response = await s.get(f"{server.url}{path}")
            assert response.status == 200
            head = await collect(response, until=lambda m: m.comment == "keep-alive")
            await asyncio.to_thread(_wait_subscribed, server, 5)
            gates.open("wide")
            delays: list[float] = []
            versions = [int(m.id or 0) for m in events_of(head)]
            async for message in sse_messages(response):
                if message.event is None:
                    continue
                arrived = time.time()
                versions.append(int(message.id or 0))
                stamp = datetime.fromisoformat(message.json()["timestamp"]).timestamp()
                delays.append(arrived - stamp)
            assert message.event == "RunCompleted"
            return delays, versions

    delays, versions = run(main())
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) > 300
    # The server ends all five streams before the stuck clients read a byte.
    _wait_answered(server, path, 5)
    for sock in stuck:
        received = read_to_end(sock)
        sock.close()
        assert b"event: RunCompleted" not in received
    assert metrics.sse_dropped._value.get() == dropped_before + 4
    assert server.call(lambda: _hub(server).peak_backlog()) <= limit
    assert server.call(lambda: _hub(server).subscribers) == 0
    assert statistics.median(delays) < 0.5, statistics.median(delays)


def test_the_end_of_a_stream_its_client_does_not_take_is_cut_after_the_drain_timeout(
    servers: Any, gates: Gates
) -> None:
    """A stream that ended while its client stopped reading is closed after the drain timeout."""
    server = servers(handlers=example_registry(gates), sse_drain_timeout=0.3, heartbeat=0.05)
    # About 50 KB of live events: the writes all fit below the connection's high-water mark
    # (64 KiB), so only the end of the stream waits for the client.
    run_id = run(_start(server, _wide(3), {"blob": "e" * 8000}))
    path = f"/events/{run_id}"
    cut_before = metrics.sse_flush_timeouts._value.get()
    stuck = raw_get(server, path, rcvbuf=4096)
    _wait_subscribed(server, 1)
    _shrink_send_buffers(server, [stuck])
    gates.open("wide")
    with capture_logs() as logs:
        _wait_answered(server, path, 1)
    assert metrics.sse_flush_timeouts._value.get() == cut_before + 1
    assert [e["timeout"] for e in logs if e["event"] == "sse_flush_timeout"] == [0.3]
    received = read_to_end(stuck)
    stuck.close()
    assert b"event: RunCompleted" not in received


def test_the_serve_flags_of_the_limits_parse_sizes_and_refuse_event_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--sse-buffer takes bytes (an old count of events is refused); the new flags parse."""
    from flowweaver.cli import build_parser  # noqa: PLC0415 - the CLI is not under test elsewhere here

    parser = build_parser()
    args = parser.parse_args(
        [
            "serve",
            "--sse-buffer",
            "4MiB",
            "--sse-drain-timeout",
            "2",
            "--max-connections-per-client",
            "16",
            "--health-connections",
            "3",
        ]
    )
    assert (args.sse_buffer, args.sse_drain_timeout) == (4 * 1024 * 1024, 2.0)
    assert (args.max_connections_per_client, args.health_connections) == (16, 3)
    defaults = parser.parse_args(["serve"])
    assert (defaults.sse_buffer, defaults.keepalive_timeout) == (4 * 1024 * 1024, 15.0)
    monkeypatch.setenv("FLOWWEAVER_SSE_BUFFER", "256KiB")
    assert build_parser().parse_args(["serve"]).sse_buffer == 256 * 1024
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["serve", "--sse-buffer", "1000"])
    assert exited.value.code == 2
    assert "--sse-buffer: must be at least 1KiB, not 1000 bytes" in capsys.readouterr().err
