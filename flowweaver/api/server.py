"""Serving the app on TCP: a connection guard, the structured access log, the runner.

aiohttp gives a client no deadline to finish sending the headers of a request (before 3.14 at
least), so a client trickling bytes could hold a connection, and a few thousand of them the
server. :class:`ConnectionGuard` wraps every connection's protocol and enforces:

- a header deadline on every request: complete headers ``header_timeout`` seconds after the
  connection opened, or after the first byte of a later request on a kept-alive connection,
  else a 408 and close (aiohttp's ``keepalive_timeout`` closes connections idle between
  requests);
- ``max_connections_per_client`` open connections per client address, more get a 503 and are
  closed at once;
- ``max_connections`` in all; past that, ``health_connections`` more are let in for health
  checks only: one request each, ``/healthz`` or ``/readyz``, anything else a 503. So a
  load balancer's probes are answered while idle or hostile clients hold every other slot.

The guard learns where requests begin and end from the app: :func:`connection_middleware`
sees each request start, and the access logger, called once a response is completely written,
each request end. A 408 is only ever written between requests, never into a response.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from flowweaver.observability import metrics

from .errors import Handler, problem_response

log = structlog.get_logger("flowweaver.api.server")
access_log = structlog.get_logger("flowweaver.access")

_END_OF_HEADERS = b"\r\n\r\n"
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


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
TOO_MANY_FROM_CLIENT = _raw_problem(
    503, "Service Unavailable", "too many open connections from your address; retry later"
)


class ConnectionGuard:
    """Counts live connections (in all and per client address) and wraps each protocol."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        *,
        header_timeout: float,
        max_connections: int,
        max_connections_per_client: int = 0,
        health_connections: int = 0,
    ) -> None:
        self.factory = factory
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.max_connections_per_client = max_connections_per_client
        self.health_connections = health_connections
        self.active = 0
        self.health_active = 0
        self.by_client: dict[str, int] = {}

    def __call__(self) -> asyncio.Protocol:
        return _GuardedProtocol(self)


class _GuardedProtocol(asyncio.Protocol):
    """Forwards to aiohttp's protocol; enforces the header deadline and the connection bounds.

    ``between`` is true while the connection waits for a new request (from its opening, and
    after each response): the first byte then starts the header deadline, which the end of
    the headers or the start of the request's handler stops. Bytes that arrive while a request
    is handled are its body, or a pipelined request: those fall under aiohttp's keep-alive
    timeout, which closes a connection still waiting for a complete request that long after
    its last response.
    """

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.tail = b""
        self.counted = False
        self.client = ""
        self.health_only = False
        self.between = True
        self.in_flight = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self.guard
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        per_client = guard.max_connections_per_client
        if per_client and guard.by_client.get(self.client, 0) >= per_client:
            self._refuse("too_many_from_client", TOO_MANY_FROM_CLIENT)
            return
        if guard.active >= guard.max_connections:
            if guard.health_active >= guard.health_connections:
                self._refuse("too_many_connections", TOO_MANY_CONNECTIONS)
                return
            self.health_only = True
            guard.health_active += 1
        else:
            guard.active += 1
        guard.by_client[self.client] = guard.by_client.get(self.client, 0) + 1
        self.counted = True
        metrics.http_connections.inc()
        self._arm()
        self.inner = guard.factory()
        if type(self.inner) is RequestHandler:
            self.inner.__class__ = _QuietRequestHandler
        self.inner.connection_made(transport)

    def _refuse(self, reason: str, answer: bytes) -> None:
        assert self.transport is not None
        metrics.http_rejected.labels(reason=reason).inc()
        self.transport.write(answer)
        self.transport.close()

    def _arm(self) -> None:
        """Start the header deadline (from now)."""
        self.between = False
        self.tail = b""
        if self.guard.header_timeout > 0 and self.deadline is None:
            loop = asyncio.get_running_loop()
            self.deadline = loop.call_later(self.guard.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.tail = b""

    def _too_slow(self) -> None:
        self.deadline = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.in_flight:
            return  # a request is being answered: never write into its response
        metrics.http_rejected.labels(reason="header_timeout").inc()
        log.info("request_header_timeout", peer=self.client, timeout=self.guard.header_timeout)
        transport.write(REQUEST_TIMEOUT)
        transport.close()

    def request_started(self) -> None:
        """A request's handler runs (its headers were complete)."""
        self.in_flight += 1
        self.between = False
        self._disarm()

    def request_finished(self) -> None:
        """A response was completely written."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.health_only:
            if self.transport is not None:
                self.transport.close()  # one health check per reserved connection
            return
        if not self.in_flight:
            self.between = True

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if self.between and not self.in_flight:
            self._arm()
        if self.deadline is not None:
            window = self.tail + data
            if _END_OF_HEADERS in window:
                self._disarm()
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
        self._disarm()
        if self.counted:
            self.counted = False
            guard = self.guard
            if self.health_only:
                guard.health_active -= 1
            else:
                guard.active -= 1
            left = guard.by_client.get(self.client, 1) - 1
            if left > 0:
                guard.by_client[self.client] = left
            else:
                guard.by_client.pop(self.client, None)
            metrics.http_connections.dec()
        if self.inner is not None:
            self.inner.connection_lost(exc)
        self.transport = None


UNPARSABLE_DETAIL = (
    "the request is not valid HTTP/1.1: a malformed request line or header, or one over the "
    "size limit"
)


class _QuietRequestHandler(RequestHandler):
    """aiohttp's protocol, but answering what its parser refuses without quoting it.

    aiohttp answers such requests with a plain-text 400 quoting the offending line, and logs
    that quote at error level: an ``Authorization`` header with a stray control character, or
    a request line with ``?ticket=``, would be written to the log and sent back. Here the
    answer is a fixed problem+json 400 and the log line names the error's type only.
    """

    __slots__ = ()  # the same layout as RequestHandler: connection_made swaps the class

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, None)
        log.info(
            "request_unparsable",
            peer=request.remote,
            error=type(exc).__name__ if exc is not None else None,
        )
        response = problem_response(400, "unparsable-request", UNPARSABLE_DETAIL)
        response.force_close()
        return response


def _guarded(request: web.BaseRequest) -> _GuardedProtocol | None:
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, _GuardedProtocol) else None


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection guard that a request started; keep health connections to probes."""
    connection = _guarded(request)
    if connection is not None:
        connection.request_started()
        if connection.health_only and request.path not in HEALTH_PATHS:
            metrics.http_rejected.labels(reason="health_only").inc()
            response = problem_response(
                503,
                "too-many-connections",
                "the server has too many open connections; only /healthz and /readyz are "
                "answered on this one; retry later",
                instance=request.path,
                headers={"Retry-After": "1"},
            )
            response.force_close()
            return response
    return await handler(request)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a :class:`ConnectionGuard`; HTTPS with a context.

    Under TLS the guard sees a connection once its handshake is done; the handshake itself
    must end within ``header_timeout`` seconds, so that clients that stall it cannot pile up
    uncounted.
    """

    __slots__ = ("_guard_options", "_host", "_port", "guard")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float = 10.0,
        max_connections: int = 1024,
        max_connections_per_client: int = 0,
        health_connections: int = 0,
        backlog: int = 512,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard_options: dict[str, Any] = {
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "max_connections_per_client": max_connections_per_client,
            "health_connections": health_connections,
        }
        self.guard: ConnectionGuard | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

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
        self.guard = ConnectionGuard(server, **self._guard_options)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            ssl=self._ssl_context,
            ssl_handshake_timeout=(
                (self._guard_options["header_timeout"] or None) if self._ssl_context else None
            ),
            family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
        )


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, and the HTTP metrics."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # aiohttp calls this once the response is completely written: the request has ended.
        connection = _guarded(request)
        if connection is not None:
            connection.request_finished()
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
    try:
        match_info = getattr(request, "match_info", None)
    except AssertionError:
        # A request aiohttp's parser refused (a control character in a header) is answered
        # 400 before routing, and web.Request.match_info asserts that routing happened.
        return "unmatched"
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
