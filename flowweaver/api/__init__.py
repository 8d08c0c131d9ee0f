"""The aiohttp front end: app factory, routes, SSE, problem+json errors, OpenAPI.

Names load on first use, so that importing the wire types (``flowweaver.api.schemas``, which
the client shares) does not build the server: the app pulls in the engine and its actors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowweaver.api.app import ApiConfig, create_app
    from flowweaver.api.server import GuardedSite, make_runner

_LAZY = {
    "ApiConfig": "flowweaver.api.app",
    "GuardedSite": "flowweaver.api.server",
    "create_app": "flowweaver.api.app",
    "make_runner": "flowweaver.api.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowweaver.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["ApiConfig", "GuardedSite", "create_app", "make_runner"]
