"""Connection limits against raw sockets on loopback: per client, per request, health slots."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from structlog.testing import capture_logs

from flowweaver.observability import metrics

from .conftest import LiveServer
from .raw_http import connect, read_to_end


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one response with a Content-Length from a kept-alive connection: (head, body)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the end of the headers: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the end of the body"
        body += chunk
    assert len(body) == length, "more than one response"
    return head, body


def _get(path: str, *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET %b HTTP/1.1\r\nHost: localhost\r\n%b\r\n" % (path.encode(), connection)


def _rejected(reason: str) -> float:
    value: float = metrics.http_rejected.labels(reason=reason)._value.get()
    return value


def test_connections_beyond_the_per_client_cap_are_refused(servers: Any) -> None:
    """A client address holding max_connections_per_client connections gets a 503 for one more."""
    server = servers(max_connections_per_client=3)
    before = _rejected("too_many_from_client")
    held = [connect(server) for _ in range(3)]
    try:
        for sock in held:  # each is answered, and stays open (kept alive)
            sock.sendall(_get("/healthz"))
            head, _ = _read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK")
        with connect(server) as extra:
            answer = read_to_end(extra)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Content-Type: application/problem+json" in answer
        problem = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert problem["status"] == 503
        assert "your address" in problem["detail"]
        assert _rejected("too_many_from_client") == before + 1
        # One of the three leaves: its slot is free again for the same address.
        held[0].sendall(_get("/healthz", close=True))
        assert b"200 OK" in read_to_end(held[0])
        with connect(server) as again:
            again.sendall(_get("/healthz", close=True))
            assert read_to_end(again).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in held:
            sock.close()


def test_the_header_deadline_applies_to_every_request_on_a_connection(servers: Any) -> None:
    """A later request on a kept-alive connection must complete its headers in time: else 408."""
    server = servers(header_timeout=0.3, keepalive_timeout=30)
    before = _rejected("header_timeout")
    with connect(server) as sock:
        # A request with a body (its bytes may come after the headers), answered.
        body = b'{"id": "w", "tasks": []}'
        sock.sendall(
            b"POST /workflows HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        sock.sendall(body)
        head, _ = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 422 ")
        # A second request in time is answered on the same connection.
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        sock.sendall(b"Host: localhost\r\n\r\n")
        head, _ = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK")
        # A third one trickles: cut after the header deadline, not the keep-alive timeout.
        with capture_logs() as logs:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            started = time.monotonic()
            answer = read_to_end(sock)
            elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"status":408' in answer
    assert elapsed < 5
    assert _rejected("header_timeout") == before + 1
    assert [e["timeout"] for e in logs if e["event"] == "request_header_timeout"] == [0.3]


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(
    servers: Any,
) -> None:
    """Between requests only the keep-alive timeout applies: the connection closes, no 408."""
    server = servers(header_timeout=0.2, keepalive_timeout=0.6)
    with connect(server) as sock:
        sock.sendall(_get("/healthz"))
        head, _ = _read_response(sock)
        answered = time.monotonic()
        assert head.startswith(b"HTTP/1.1 200 OK")
        rest = read_to_end(sock)
        idle = time.monotonic() - answered
    assert rest == b""
    assert idle >= 0.5


def test_health_checks_are_answered_while_idle_connections_hold_every_slot(
    servers: Any,
) -> None:
    """Past max_connections, health_connections more connections may ask /healthz or /readyz."""
    server = servers(max_connections=3, health_connections=2)
    idle = [connect(server) for _ in range(3)]
    try:
        assert server.site is not None
        guard = server.site.guard
        assert guard is not None
        deadline = time.monotonic() + 10
        while server.call(lambda: guard.active) < 3:
            assert time.monotonic() < deadline
        # Probes get in, one request each, and are answered.
        for path in ("/healthz", "/readyz", "/healthz?verbose=1"):
            with connect(server) as probe:
                probe.sendall(_get(path))  # kept alive by the client: the server closes it
                answer = read_to_end(probe)
            assert answer.startswith(b"HTTP/1.1 200 OK"), answer[:80]
        # Anything else on a health connection is a 503 problem.
        before = _rejected("health_only")
        with connect(server) as other:
            other.sendall(_get("/runs"))
            answer = read_to_end(other)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"application/problem+json" in answer
        problem = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert "/healthz" in problem["detail"]
        assert _rejected("health_only") == before + 1
        # With the health slots taken too, one more connection is refused at once.
        probes = [connect(server) for _ in range(2)]
        try:
            deadline = time.monotonic() + 10
            while server.call(lambda: guard.health_active) < 2:
                assert time.monotonic() < deadline
            with connect(server) as refused:
                assert read_to_end(refused).startswith(b"HTTP/1.1 503 Service Unavailable")
        finally:
            for sock in probes:
                sock.close()
        assert server.call(lambda: guard.active) == 3
    finally:
        for sock in idle:
            sock.close()


def test_a_request_the_http_parser_refuses_is_logged_without_an_error(server: LiveServer) -> None:
    """A header aiohttp's parser refuses (a control character) is answered 400 and access-logged."""
    with capture_logs() as logs:
        with connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Odd: a\x01b\r\n\r\n")
            answer = read_to_end(sock)
        deadline = time.monotonic() + 5
        while not [e for e in logs if e["event"] == "http_request"]:
            assert time.monotonic() < deadline, "the refused request was never access-logged"
            time.sleep(0.01)
    assert answer.split(b" ", 2)[1] == b"400"  # aiohttp answers a request it cannot parse as 1.0
    [logged] = [e for e in logs if e["event"] == "http_request"]
    assert (logged["status"], logged["route"]) == (400, "unmatched")
