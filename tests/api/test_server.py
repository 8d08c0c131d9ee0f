"""Connection limits with raw sockets, and the structured logs of the server."""

from __future__ import annotations

import http.client
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.observability import configure_logging

from .conftest import LiveServer, run, wait_finished
from .raw_http import connect, read_to_end


def test_trickled_headers_get_408_and_are_closed(servers: Any) -> None:
    """A client that does not finish its request headers in time gets a 408 and is closed."""
    server = servers(header_timeout=0.3)
    with connect(server) as trickler, connect(server) as silent:
        trickler.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        answer = read_to_end(trickler)
        elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"application/problem+json" in answer
        assert b'"status":408' in answer
        assert elapsed < 5
        assert read_to_end(silent).startswith(b"HTTP/1.1 408")


def test_prompt_requests_are_not_cut(servers: Any) -> None:
    """A client that sends its headers in time is answered, and can reuse the connection."""
    server = servers(header_timeout=0.3)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(3):
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}
        # Headers split over several packets still count once they are complete.
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            sock.sendall(b"Host: localhost\r\n")
            sock.sendall(b"Connection: close\r\n\r\n")
            assert read_to_end(sock).startswith(b"HTTP/1.1 200 OK")
    finally:
        connection.close()


def test_connections_beyond_the_bound_get_503(servers: Any) -> None:
    """With max_connections=2 and no health slots, a third connection gets 503; a slot frees."""
    server = servers(max_connections=2, health_connections=0)
    first = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    second = connect(server)
    try:
        first.request("GET", "/healthz")
        response = first.getresponse()
        assert response.status == 200
        response.read()
        second.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert second.recv(65536).startswith(b"HTTP/1.1 200 OK")
        with connect(server) as third:
            answer = read_to_end(third)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"status":503' in answer
        # The second client says goodbye: the server closes it (and frees its slot) before
        # the client sees the end of the stream.
        second.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in read_to_end(second)
        assert server.site is not None
        assert server.site.guard is not None
        guard = server.site.guard
        assert server.call(lambda: guard.active) == 1
        fourth = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        fourth.request("GET", "/healthz")
        assert fourth.getresponse().status == 200
        fourth.close()
    finally:
        first.close()
        second.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put structlog and the root logger back as they were after a test configures them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_log_lines(restore_logging: None) -> None:
    """configure_logging writes JSON lines led by timestamp, level and event, stdlib included."""
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    structlog.get_logger("flowweaver.engine").info("task_dispatched", run_id="r1", task_id="t1")
    logging.getLogger("aiohttp.server").error("Error handling request %s", "x")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert list(lines[0])[:3] == ["timestamp", "level", "event"]
    assert lines[0]["event"] == "task_dispatched"
    assert lines[0]["run_id"] == "r1"
    assert lines[1]["event"] == "Error handling request x"
    assert lines[1]["level"] == "error"
    assert lines[1]["logger"] == "aiohttp.server"


def test_console_log_lines(restore_logging: None) -> None:
    """configure_logging(json=False) writes readable key=value lines."""
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.get_logger().info("run_started", run_id="r9")
    text = out.getvalue()
    assert "run_started" in text
    assert "run_id=r9" in text
    assert not text.startswith("{")


def test_access_log_and_run_logs_are_structured(server: LiveServer) -> None:
    """Each request is one structured access line; lines about a run carry its run_id."""
    with capture_logs() as logs:

        async def main() -> str:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                    assert r.status == 201
                async with s.post(
                    f"{server.url}/runs", json={"workflowId": "example-workflow"}
                ) as r:
                    run_id: str = (await r.json())["id"]
                await wait_finished(s, server.url, run_id)
                return run_id

        run_id = run(main())
        server.wait_logged(f"/events/{run_id}")
    access = [e for e in logs if e["event"] == "http_request"]
    posted = next(e for e in access if e["path"] == "/runs")
    assert posted["method"] == "POST"
    assert posted["status"] == 201
    assert posted["route"] == "/runs"
    assert posted["duration_ms"] >= 0
    streamed = next(e for e in access if e["path"] == f"/events/{run_id}")
    assert streamed["route"] == "/events/{runId}"
    about_runs = [e for e in logs if str(e["event"]).startswith(("run_", "task_"))]
    assert {e["event"] for e in about_runs} >= {"run_started", "run_finished"}
    for entry in about_runs:
        assert entry.get("run_id") == run_id, entry
    for entry in logs:
        if "task_id" in entry:
            assert "run_id" in entry, entry


def test_a_trickled_body_gets_408_and_is_closed(servers: Any) -> None:
    """A request whose body does not arrive within the body timeout gets a 408 problem."""
    server = servers(body_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(
            b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"id": '
        )
        answer = read_to_end(sock)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"application/problem+json" in answer
    assert b"body-timeout" in answer
    assert server.store.list_workflows() == []
