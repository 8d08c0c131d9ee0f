"""Handlers for the web UI's browser tests, loaded by ``serve --handlers``."""

from __future__ import annotations

from typing import Any

from flowweaver.handlers import handler


@handler("ui_flaky")
def ui_flaky(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    """Log, then fail (a traceback) while the attempt is at most ``failures``; else give rows."""
    context.log.warning("source not ready", attempt=context.attempt)
    if context.attempt <= int(inputs.get("failures", 0)):
        raise LookupError(f"no rows yet (attempt {context.attempt})")
    return {"rows": 3}


@handler("ui_gate")
def ui_gate(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    """Wait until the run is cancelled or ``seconds`` pass (a task that stays running)."""
    context.cancelled.wait(float(inputs.get("seconds", 30)))
    return {"waited": True}


@handler("ui_element")
def ui_element(inputs: dict[str, Any], context: Any) -> int:
    """A map element: the first attempt of element ``failIndex`` fails; the others square."""
    if inputs["index"] == inputs.get("failIndex") and context.attempt == 1:
        raise LookupError(f"element {inputs['index']} not ready")
    return int(inputs["item"]) ** 2
