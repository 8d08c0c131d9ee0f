"""The actor engine: run actors, the task-worker pool, timers and recovery.

``Engine`` and ``RunHandle`` load on first use: a module of this package that needs no actor
(``lineage``, ``operator``: the wire types import them) stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowweaver.engine.engine import Engine, RunHandle


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'flowweaver.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module("flowweaver.engine.engine"), name)
    globals()[name] = value
    return value


__all__ = ["Engine", "RunHandle"]
