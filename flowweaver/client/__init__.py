"""Clients of a Flowweaver server: :class:`Client` (blocking, httpx) and :class:`AsyncClient`
(asyncio, aiohttp), the same typed methods on both (see :mod:`flowweaver.client.calls`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowweaver.client.calls import ROUTES, STREAMS, Call, Event, HistoryPage, LogPage, RunDiff

if TYPE_CHECKING:
    from flowweaver.client.aio import AsyncClient
    from flowweaver.client.sync import Client

_LAZY = {"AsyncClient": "flowweaver.client.aio", "Client": "flowweaver.client.sync"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowweaver.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ROUTES",
    "STREAMS",
    "AsyncClient",
    "Call",
    "Client",
    "Event",
    "HistoryPage",
    "LogPage",
    "RunDiff",
]
