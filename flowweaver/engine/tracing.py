"""OpenTelemetry tracing, when the ``otel`` extra is installed; nothing at all when it is not.

The engine asks :func:`load_tracing` once. Without the ``opentelemetry-api`` package it gets
None, and every hook is one ``is None`` test: no module of OpenTelemetry is imported, so a
run costs what it cost before tracing existed. With it, :mod:`flowweaver.engine.otel` makes a
span per run and one per task attempt (see docs/operations.md, "Tracing").
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flowweaver.domain.run import RunState
    from flowweaver.engine.messages import Completed, Failed
    from flowweaver.engine.pool import Job
    from flowweaver.ports import EventStore

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; version ff and all-zero
# ids are invalid. A later version may append fields after a dash.
_TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:-[^\s]*)?$"
)
MAX_TRACEPARENT = 256


def valid_traceparent(value: str | None) -> str | None:
    """Return ``value`` when it is a W3C ``traceparent``, else None (the spec says: ignore it)."""
    if value is None or len(value) > MAX_TRACEPARENT:
        return None
    value = value.strip()
    return value if _TRACEPARENT.match(value) else None


class Tracing(Protocol):
    """The hooks the engine calls when tracing is on."""

    def current_traceparent(self) -> str | None:
        """Return the caller's active span as a ``traceparent``, if it has one."""
        ...

    def expect_run(self, run_id: str, traceparent: str | None) -> None:
        """Note the parent of a run about to start here, so its span needs no store read."""
        ...

    def run_context(self, run_id: str, state: RunState) -> Any:
        """Return the context of the run's span (started on first use) for its attempts."""
        ...

    def end_run(self, run_id: str, state: RunState) -> None:
        """End the run's span with the run's outcome."""
        ...

    def run_attempt(
        self, job: Job, execute: Callable[[Job], Completed | Failed]
    ) -> Completed | Failed:
        """Run ``execute(job)`` inside the attempt's span, the current span of the handler."""
        ...

    def close(self) -> None:
        """End the spans of runs still open here (the engine is closing)."""
        ...


def load_tracing(store: EventStore, provider: Any = None) -> Tracing | None:
    """Return the engine's tracing, or None when OpenTelemetry is not installed.

    ``provider`` is a ``TracerProvider``; None means OpenTelemetry's global one.
    """
    if importlib.util.find_spec("opentelemetry") is None:  # looks, imports nothing
        return None
    try:
        from flowweaver.engine.otel import OtelTracing  # noqa: PLC0415 - optional extra
    except ImportError:  # a namespace package without opentelemetry-api in it
        return None
    return OtelTracing(store, provider)
