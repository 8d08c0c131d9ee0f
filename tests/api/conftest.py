"""A real server on loopback, a real HTTP client and a small SSE client parsed by hand.

The server runs on its own event loop in a thread (as in production, engine calls cross to
the engine's threads through the bridge); each test drives its client with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from flowweaver.api import ApiConfig, GuardedSite, create_app, make_runner
from flowweaver.api.server import AccessLogger
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.ports import EventStore
from flowweaver.store import MemoryEventStore, SQLiteEventStore

JSON_TYPE = {"Content-Type": "application/json"}
"""Every POST says it sends JSON, even one with no body (see flowweaver/api/exposure.py)."""


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test's client coroutine to the end."""
    return asyncio.run(coro)


class Gates:
    """A ``gate`` handler that blocks until the test opens the gate named in its inputs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}

    def _get(self, table: dict[str, threading.Event], name: str) -> threading.Event:
        with self._lock:
            return table.setdefault(name, threading.Event())

    def open(self, name: str) -> None:
        self._get(self._gates, name).set()

    def wait_entered(self, name: str, timeout: float = 10.0) -> None:
        assert self._get(self.entered, name).wait(timeout), f"gate {name} never entered"

    def handler(self, inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        name = str(inputs.get("gate", "default"))
        self._get(self.entered, name).set()
        gate = self._get(self._gates, name)
        while not gate.wait(0.05):
            if context.is_cancelled():
                return {"gate": name, "cancelled": True}
        return {"gate": name}


def example_registry(gates: Gates | None = None) -> HandlerRegistry:
    """Return the built-ins, the original README's three handlers, and ``gate``."""
    registry = builtin_registry()
    registry.register("fetch_data", lambda inputs: {"rows": [1, 2, 3], "url": inputs.get("url")})
    registry.register(
        "process_data", lambda inputs: {"count": len(inputs["source"]["rows"]), "ok": True}
    )
    registry.register("save_result", lambda inputs: {"saved": inputs["processed"]})
    if gates is not None:
        registry.register("gate", gates.handler)
    return registry


@dataclass(frozen=True)
class Logged:
    """One answered request, as the access log saw it."""

    method: str
    path: str
    status: int


class RecordingAccessLogger(AccessLogger):
    """The production access logger, which also tells the test what was answered."""

    def log(self, request: Any, response: Any, time: float) -> None:
        super().log(request, response, time)
        try:
            server: LiveServer = request.app[SERVER]
        except AssertionError:  # refused by the HTTP parser before routing: no app to ask
            return
        with server.logged_changed:
            server.logged.append(Logged(request.method, request.path_qs, response.status))
            server.logged_changed.notify_all()


SERVER: web.AppKey[Any] = web.AppKey("test_server", object)


class LiveServer:
    """The app served on 127.0.0.1 on a free port, on its own loop in a thread."""

    def __init__(self, engine: Engine, config: ApiConfig) -> None:
        self.engine = engine
        self.config = config
        self.logged: list[Logged] = []
        self.logged_changed = threading.Condition()
        self.app: web.Application | None = None
        self.site: GuardedSite | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="test-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> EventStore:
        return self.engine.store

    def start(self) -> LiveServer:
        self._thread.start()
        self.port = self._ready.result(timeout=10)
        return self

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)
            raise

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.app = create_app(self.engine, config=self.config)
        self.app[SERVER] = self
        runner = make_runner(
            self.app,
            access_log_class=RecordingAccessLogger,
            keepalive_timeout=self.config.keepalive_timeout,
            shutdown_timeout=self.config.shutdown_timeout,
        )
        await runner.setup()
        self.site = GuardedSite(
            runner,
            "127.0.0.1",
            0,
            header_timeout=self.config.header_timeout,
            max_connections=self.config.max_connections,
            max_connections_per_client=self.config.max_connections_per_client,
            health_connections=self.config.health_connections,
        )
        await self.site.start()
        self._ready.set_result(self.site.port)
        await self._stop.wait()
        await runner.cleanup()

    def wait_logged(self, path_prefix: str, timeout: float = 15.0) -> Logged:
        """Block until a request whose path starts with ``path_prefix`` has been answered."""
        with self.logged_changed:
            found: list[Logged] = []

            def seen() -> bool:
                found[:] = [r for r in self.logged if r.path.startswith(path_prefix)]
                return bool(found)

            assert self.logged_changed.wait_for(seen, timeout), f"{path_prefix} not answered"
            return found[0]

    def call(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the server's loop and return its result."""
        assert self.loop is not None
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(func())
            except BaseException as e:
                done.set_exception(e)

        self.loop.call_soon_threadsafe(call)
        return done.result(timeout=10)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=20)
        assert not self._thread.is_alive(), "the server did not stop"


@dataclass
class Servers:
    """Starts servers for a test and stops them (and their engines) after it."""

    started: list[LiveServer] = field(default_factory=list)

    def __call__(
        self,
        *,
        store: EventStore | None = None,
        handlers: HandlerRegistry | None = None,
        workers: int = 4,
        **config: Any,
    ) -> LiveServer:
        base = {"tail_wait": 0.2, "shutdown_timeout": 2.0}
        base.update(config)
        engine = Engine(
            store if store is not None else MemoryEventStore(),
            handlers=handlers if handlers is not None else example_registry(),
            workers=workers,
            owns_store=True,
        )
        server = LiveServer(engine, ApiConfig(**base))
        self.started.append(server)
        return server.start()

    def close(self) -> None:
        for server in reversed(self.started):
            try:
                server.stop()
            finally:
                server.engine.close(grace=2)


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Return a factory of live servers; each is stopped after the test."""
    made = Servers()
    yield made
    made.close()


@pytest.fixture
def gates() -> Iterator[Gates]:
    made = Gates()
    yield made
    # Let any handler still blocked go, so engines close at once.
    with made._lock:
        for gate in made._gates.values():
            gate.set()


@pytest.fixture
def server(servers: Servers, gates: Gates) -> LiveServer:
    """A live server on the memory store with the example handlers and ``gate``."""
    return servers(handlers=example_registry(gates))


@pytest.fixture
def sqlite_server(servers: Servers, gates: Gates, tmp_path: Any) -> LiveServer:
    """A live server on a SQLite file."""
    return servers(
        store=SQLiteEventStore(str(tmp_path / "fw.db")), handlers=example_registry(gates)
    )


# --- the SSE client ---------------------------------------------------------------------------


@dataclass
class Message:
    """One SSE message, or a comment (``comment`` set, the rest empty)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comment: str | None = None

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[Message]:
    """Parse an event stream into messages and comments, until the server closes it."""
    current = Message()
    has_fields = False
    while True:
        raw = await response.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n").rstrip("\r")
        if line == "":
            if has_fields:
                yield current
            current, has_fields = Message(), False
            continue
        if line.startswith(":"):
            yield Message(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        has_fields = True
        if name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "data":
            current.data = value if not current.data else current.data + "\n" + value
        elif name == "retry":
            current.retry = int(value)


async def collect(
    response: aiohttp.ClientResponse, *, until: Callable[[Message], bool] | None = None
) -> list[Message]:
    """Read messages (comments included) until ``until`` says stop or the stream ends."""
    out: list[Message] = []
    async for message in sse_messages(response):
        out.append(message)
        if until is not None and until(message):
            break
    return out


def events_of(messages: list[Message]) -> list[Message]:
    """Return the event messages only (no comments, no retry-only message)."""
    return [m for m in messages if m.event is not None]


async def wait_finished(session: aiohttp.ClientSession, url: str, run_id: str) -> list[Message]:
    """Follow the run's stream to its terminal event and return the events."""
    async with session.get(f"{url}/events/{run_id}") as response:
        assert response.status == 200
        return events_of(await collect(response))
