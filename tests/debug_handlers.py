"""The workflow and handlers of the debugging tests on every store (API and CLI).

``load`` logs, then fails with a KeyError (a traceback) when the run's ``mode`` parameter is
``bad``, or on its first attempt when it is ``flaky``; ``report`` logs and completes.
"""

from __future__ import annotations

from typing import Any

from flowweaver.handlers import HandlerRegistry, builtin_registry

DEBUGGED: dict[str, Any] = {
    "id": "debugged",
    "onTaskFailure": "pause",
    "tasks": [
        {
            "id": "load",
            "handler": "load",
            "inputs": {"mode": "$.params.mode"},
            "retry": {"maxAttempts": 1},
        },
        {
            "id": "report",
            "handler": "report",
            "dependencies": ["load"],
            "inputs": {"rows": "$.result.rows"},
        },
    ],
}


def load(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    """Log a warning; fail for a bad mode, or a flaky one's first attempt; else give rows."""
    mode = inputs.get("mode")
    context.log.warning("config missing", key="db_url", attempt=context.attempt)
    if mode == "bad" or (mode == "flaky" and context.attempt == 1):
        raise KeyError("db_url")
    return {"rows": 3}


def report(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    """Log the rows and publish them."""
    context.log.info("reporting", rows=inputs["rows"])
    return {"reported": inputs["rows"]}


def debug_registry() -> HandlerRegistry:
    """Return the built-in handlers with ``load`` and ``report``."""
    registry = builtin_registry()
    registry.register("load", load)
    registry.register("report", report)
    return registry
