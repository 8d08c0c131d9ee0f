"""Flowweaver: an event-sourced workflow engine.

The names users write: ``@flowweaver.handler("name")``, ``flowweaver.Engine``, the errors, ...
The engine and the stores load on first use, so ``import flowweaver`` in a handler file stays
cheap (importing the engine costs about 0.4 s: pykka, eventsourcing, the stores).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from flowweaver.errors import (
    AuthError,
    BadResponseError,
    ChainBrokenError,
    ConcurrencyError,
    ConflictError,
    EngineClosedError,
    EventSchemaError,
    FieldError,
    FlowweaverError,
    HandlerError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    RunUnavailableError,
    ServerError,
    ServerUnreachableError,
    StoreConfigError,
    StoreError,
    StoreLockedError,
    TaskInputError,
    TokenExistsError,
    ValidationError,
)

if TYPE_CHECKING:
    from flowweaver.builder import Workflow
    from flowweaver.client import AsyncClient, Client
    from flowweaver.engine import Engine, RunHandle
    from flowweaver.handlers import HandlerRegistry, TaskContext, handler
    from flowweaver.store import open_store

__version__ = importlib.metadata.version("flowweaver")

_LAZY = {
    "AsyncClient": "flowweaver.client",
    "Client": "flowweaver.client",
    "Engine": "flowweaver.engine",
    "HandlerRegistry": "flowweaver.handlers",
    "RunHandle": "flowweaver.engine",
    "TaskContext": "flowweaver.handlers",
    "Workflow": "flowweaver.builder",
    "handler": "flowweaver.handlers",
    "open_store": "flowweaver.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowweaver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AsyncClient",
    "AuthError",
    "BadResponseError",
    "ChainBrokenError",
    "Client",
    "ConcurrencyError",
    "ConflictError",
    "Engine",
    "EngineClosedError",
    "EventSchemaError",
    "FieldError",
    "FlowweaverError",
    "HandlerError",
    "HandlerRegistry",
    "IdempotencyConflictError",
    "InvalidCommandError",
    "NotFoundError",
    "RunHandle",
    "RunUnavailableError",
    "ServerError",
    "ServerUnreachableError",
    "StoreConfigError",
    "StoreError",
    "StoreLockedError",
    "TaskContext",
    "TaskInputError",
    "TokenExistsError",
    "ValidationError",
    "Workflow",
    "handler",
    "open_store",
]
