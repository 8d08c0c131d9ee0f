"""Serving the app on TCP: a connection guard, the structured access log, the runner.

aiohttp gives a client no deadline to finish sending the headers of its first request on a
connection (before 3.14 at least), so a client trickling bytes could hold a connection, and a
few thousand of them the server. :class:`ConnectionGuard` wraps every connection's protocol:
a connection that has not sent complete request headers ``header_timeout`` seconds after it
opened gets a 408 and is closed, and connections beyond ``max_connections`` get a 503 and are
closed at once. Later requests on a kept-alive connection are bounded by aiohttp's
``keepalive_timeout``, which closes a connection idle (or mid-headers) after a response.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from flowweaver.observability import metrics

log = structlog.get_logger("flowweaver.api.server")
access_log = structlog.get_logger("flowweaver.access")

_END_OF_HEADERS = b"\r\n\r\n"


def _raw_problem(status: int, reason: str, detail: str) -> bytes:
    body = b'{"type":"about:blank","title":"%b","status":%d,"detail":"%b"}' % (
        reason.encode(),
        status,
        detail.encode(),
    )
    head = (
        b"HTTP/1.1 %d %b\r\nContent-Type: application/problem+json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, reason.encode(), len(body))
    )
    return head + body


REQUEST_TIMEOUT = _raw_problem(408, "Request Timeout", "the request headers did not arrive in time")
TOO_MANY_CONNECTIONS = _raw_problem(
    503, "Service Unavailable", "the server has too many open connections; retry later"
)


class ConnectionGuard:
    """Counts live connections and wraps each protocol aiohttp makes in a guard."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        header_timeout: float,
        max_connections: int,
    ) -> None:
        self.factory = factory
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.active = 0

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self)


class _GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's protocol; enforces the header deadline and the connection bound."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.tail = b""
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self.guard
        if guard.active >= guard.max_connections:
            metrics.http_rejected.labels(reason="too_many_connections").inc()
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        guard.active += 1
        self.counted = True
        metrics.http_connections.inc()
        if guard.header_timeout > 0:
            loop = asyncio.get_running_loop()
            self.deadline = loop.call_later(guard.header_timeout, self._too_slow)
        self.inner = guard.factory()
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        self.deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        metrics.http_rejected.labels(reason="header_timeout").inc()
        peer = transport.get_extra_info("peername")
        log.info("request_header_timeout", peer=str(peer), timeout=self.guard.header_timeout)
        transport.write(REQUEST_TIMEOUT)
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.deadline is not None:
            window = self.tail + data
            if _END_OF_HEADERS in window:
                self.deadline.cancel()
                self.deadline = None
                self.tail = b""
            else:
                self.tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.counted:
            self.counted = False
            self.guard.active -= 1
            metrics.http_connections.dec()
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self.transport = None


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`."""

    __slots__ = ("_guard_options", "_host", "_port", "guard")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float = 10.0,
        max_connections: int = 1024,
        backlog: int = 512,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard_options = (header_timeout, max_connections)
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the requested one until started)."""
        if self._server is not None:
            sockets = getattr(self._server, "sockets", None)
            if sockets:
                return int(sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        header_timeout, max_connections = self._guard_options
        self.guard = ConnectionGuard(
            server, header_timeout=header_timeout, max_connections=max_connections
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
        )


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, and the HTTP metrics."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        route = _route_name(request)
        status = response.status
        metrics.http_requests.labels(method=request.method, route=route, status=str(status)).inc()
        metrics.http_duration.labels(route=route).observe(time)
        access_log.info(
            "http_request",
            method=request.method,
            path=request.path,
            route=route,
            status=status,
            duration_ms=round(time * 1000, 3),
            bytes=response.body_length,
            remote=request.remote,
        )

    @property
    def enabled(self) -> bool:
        return True


def _route_name(request: web.BaseRequest) -> str:
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return str(resource.canonical)


def make_runner(
    app: web.Application,
    *,
    access_log_class: type[AbstractAccessLogger] = AccessLogger,
    **options: Any,
) -> web.AppRunner:
    """Return an AppRunner with the structured access log and cancellation on disconnect.

    A handler is cancelled when its client goes away, so SSE streams unsubscribe at once.
    After answering a request without reading its whole body (a 408, 413 or 415), the server
    reads and drops what is left for 2 s at most (aiohttp's default is 10) before closing.
    """
    options.setdefault("lingering_time", 2.0)  # reading an unread body after an answer
    return web.AppRunner(
        app,
        access_log_class=access_log_class,
        handler_cancellation=True,
        **options,
    )
