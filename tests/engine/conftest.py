"""Engines on real stores (memory and a SQLite file), with handlers registered per test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.ports import EventStore
from flowweaver.store import MemoryEventStore, SQLiteEventStore


@pytest.fixture
def registry() -> HandlerRegistry:
    """A registry with the built-ins only; tests add their own handlers."""
    return builtin_registry()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """Each engine test runs on the memory store and on a SQLite file."""
    store: EventStore
    if request.param == "memory":
        store = MemoryEventStore()
    else:
        store = SQLiteEventStore(str(tmp_path / "engine.db"))
    yield store
    store.close()


EngineFactory = Callable[..., Engine]


@pytest.fixture
def make_engine(store: EventStore, registry: HandlerRegistry) -> Iterator[EngineFactory]:
    """Build engines on the test's store; every one is closed at the end of the test."""
    engines: list[Engine] = []

    def make(**options: Any) -> Engine:
        options.setdefault("handlers", registry)
        options.setdefault("workers", 4)
        engine = Engine(store, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close(grace=2)


@pytest.fixture
def engine(make_engine: EngineFactory) -> Engine:
    """One engine with four workers."""
    return make_engine()


class Gate:
    """A handler that blocks until the test opens it, and says when it has been entered."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0

    def __call__(self, inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        self.calls += 1
        self.entered.set()
        self.opened.wait(30)
        return {"cancelled": context.is_cancelled()}


@pytest.fixture
def gate(registry: HandlerRegistry) -> Gate:
    """A gate registered as the handler ``gate``."""
    g = Gate()
    registry.register("gate", g)
    return g


def chain(workflow_id: str = "chain3", handler: str = "echo", n: int = 3) -> dict[str, Any]:
    """A linear workflow t1 -> t2 -> ... that passes each output on."""
    tasks: list[dict[str, Any]] = [
        {"id": "t1", "handler": handler, "inputs": {"value": "$.params.value"}}
    ]
    tasks += (
        {
            "id": f"t{i}",
            "handler": handler,
            "dependencies": [f"t{i - 1}"],
            "inputs": {"value": "$.result.value"},
        }
        for i in range(2, n + 1)
    )
    return {"id": workflow_id, "tasks": tasks}


@pytest.fixture(autouse=True)
def no_actor_outlives_its_test() -> Iterator[None]:
    """Every engine a test opened is closed by its end: no run actor or worker thread is left."""
    yield
    deadline = threading.Event()
    for _ in range(200):
        left = [
            t.name
            for t in threading.enumerate()
            if t.is_alive() and t.name.startswith(("RunActor", "TaskWorker"))
        ]
        if not left:
            return
        deadline.wait(0.025)
    raise AssertionError(f"threads left behind: {left}")
