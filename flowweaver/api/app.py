"""The aiohttp application factory: typed app state, lifecycle, middleware and routes."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from flowweaver.engine import Engine
from flowweaver.errors import FieldError, StoreConfigError, ValidationError
from flowweaver.ports import TokenLog
from flowweaver.tokens import TokenRegistry

from .auth import enable_auth
from .bridge import EngineBridge
from .errors import problem_middleware
from .exposure import Exposure, add_exposure
from .limits import add_limits
from .server import connection_middleware
from .sse import Hub, StreamSettings

DEFAULT_BODY_LIMIT = 1024 * 1024
SWITCH_INTERVAL = 0.0005  # seconds; FLOWWEAVER_SWITCH_INTERVAL overrides it
DEFAULT_SSE_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class ApiConfig:
    """Everything tunable about the HTTP front end (each is a ``serve`` flag too)."""

    body_limit: int = DEFAULT_BODY_LIMIT
    heartbeat: float = 15.0
    sse_retry_ms: int = 3000
    sse_buffer: int = DEFAULT_SSE_BUFFER  # bytes a stream's client may leave unread
    sse_write_timeout: float = 30.0
    sse_drain_timeout: float = 5.0
    replay_page: int = 2000
    tail_page: int = 1000
    tail_wait: float = 1.0
    tail_linger: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024
    max_connections_per_client: int = 128
    health_connections: int = 8  # beyond max_connections, for /healthz and /readyz only
    keepalive_timeout: float = 15.0
    shutdown_timeout: float = 10.0
    threads: int = 16
    ready_timeout: float = 2.0
    max_waits: int = 1024  # requests waiting at once with Prefer: wait (not a serve flag)
    allowed_host: tuple[str, ...] = ()  # Host names answered beside localhost and IP addresses
    cors_origin: tuple[str, ...] = ()  # browser origins given CORS headers
    rate_limit: int = 0  # requests per second per client, 0: none (see limits.py)
    sse_per_client: int = 0  # SSE streams at once per client, 0: no cap of its own
    auth: str = "none"  # "token": every route but /healthz and /readyz needs a token
    scheduler: bool = False  # fire the store's schedules here (serve --scheduler, on by default)


CONFIG: web.AppKey[ApiConfig] = web.AppKey("config", ApiConfig)
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
BRIDGE: web.AppKey[EngineBridge] = web.AppKey("bridge", EngineBridge)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
STREAMS: web.AppKey[StreamSettings] = web.AppKey("streams", StreamSettings)


def create_app(engine: Engine, *, config: ApiConfig | None = None) -> web.Application:
    """Build the app for ``engine``; the caller owns the engine and closes it after the app.

    On startup the app starts its SSE tailer; on shutdown it ends every stream, so that a
    draining server is not held open by clients that follow runs.
    """
    from .routes import add_routes  # noqa: PLC0415 - routes import this module's keys

    config = config or ApiConfig()
    app = web.Application(
        middlewares=[problem_middleware, connection_middleware], client_max_size=config.body_limit
    )
    bridge = EngineBridge(engine, threads=config.threads)
    bridge.waits.limit = config.max_waits
    app[CONFIG] = config
    app[ENGINE] = engine
    app[BRIDGE] = bridge
    app[HUB] = Hub(
        bridge,
        buffer=config.sse_buffer,
        page=config.tail_page,
        wait=config.tail_wait,
        linger=config.tail_linger,
        heartbeat=config.heartbeat,
    )
    app[STREAMS] = StreamSettings(
        retry_ms=config.sse_retry_ms,
        heartbeat=config.heartbeat,
        write_timeout=config.sse_write_timeout,
        drain_timeout=config.sse_drain_timeout,
        replay_page=config.replay_page,
    )
    app.cleanup_ctx.append(_tailer)
    app.cleanup_ctx.append(_waits)
    app.on_shutdown.append(_end_streams)
    app.on_shutdown.append(_end_waits)
    add_exposure(app, Exposure.build(config.allowed_host, config.cors_origin))
    add_routes(app)
    # Who is asking comes before how often: the limits key a client by its principal.
    if config.auth == "token":
        if not isinstance(engine.store, TokenLog):
            raise StoreConfigError(
                f"{type(engine.store).__name__} keeps no tokens: no --auth token"
            )
        enable_auth(app, TokenRegistry(engine.store))
    add_limits(
        app,
        rate=config.rate_limit,
        sse_per_client=config.sse_per_client,
        retry_ms=config.sse_retry_ms,
    )
    return app


def set_switch_interval() -> None:
    """Set the interpreter's thread switch interval for a serving process.

    The event loop, the API's threads and the engine's actors hand work to one another at
    every request; at the interpreter's default of 5 ms a thread that was handed work may wait
    that long for the GIL. ``FLOWWEAVER_SWITCH_INTERVAL`` (seconds) overrides the default.

    Raises:
        ValidationError: the variable is not a positive number of seconds (at most 1).
    """
    raw = os.environ.get("FLOWWEAVER_SWITCH_INTERVAL")
    seconds = SWITCH_INTERVAL
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not 0 < seconds <= 1:
            raise ValidationError(
                [
                    FieldError(
                        "FLOWWEAVER_SWITCH_INTERVAL",
                        f"must be seconds above 0 and at most 1, not {raw[:40]!r}",
                    )
                ]
            )
    sys.setswitchinterval(seconds)


async def _tailer(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    await hub.start()
    yield
    await hub.close()
    # The tailer's thread may be inside a wait on the store: let it return off the loop.
    await asyncio.to_thread(app[BRIDGE].close)


async def _waits(app: web.Application) -> AsyncIterator[None]:
    waits = app[BRIDGE].waits
    waits.attach(asyncio.get_running_loop())
    yield
    waits.close()


async def _end_waits(app: web.Application) -> None:
    # A draining server answers waiting requests at once rather than after their N seconds.
    app[BRIDGE].waits.close()


async def _end_streams(app: web.Application) -> None:
    await app[HUB].close()
