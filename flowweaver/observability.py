"""Structured logs (structlog) and Prometheus metrics: the only place either is configured."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric Flowweaver exports, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "flowweaver_runs_started", "Runs started", ["workflow"], registry=r
        )
        self.runs_finished = Counter(
            "flowweaver_runs_finished",
            "Runs that reached a terminal status",
            ["workflow", "status"],
            registry=r,
        )
        self.task_duration = Histogram(
            "flowweaver_task_duration_seconds",
            "Handler run time per attempt",
            ["handler"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
            registry=r,
        )
        self.task_retries = Counter(
            "flowweaver_task_retries", "Attempts retried after a failure", registry=r
        )
        self.task_failures = Counter(
            "flowweaver_task_failures", "Failed attempts by error type", ["error_type"], registry=r
        )
        self.queue_depth = Gauge(
            "flowweaver_worker_queue_depth", "Jobs waiting for a worker", registry=r
        )
        self.workers_replaced = Counter(
            "flowweaver_workers_replaced",
            "Workers replaced after a handler timed out",
            registry=r,
        )
        self.events_appended = Counter(
            "flowweaver_events_appended", "Run events appended to the store", registry=r
        )
        self.append_latency = Histogram(
            "flowweaver_append_seconds",
            "Latency of one append to the store",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
            registry=r,
        )
        self.live_runs = Gauge("flowweaver_live_runs", "Run actors alive", registry=r)
        self.schedule_fires = Counter(
            "flowweaver_schedule_fires",
            "Fires the scheduler decided, by schedule and decision",
            ["schedule", "decision"],
            registry=r,
        )
        self.schedule_runs_not_started = Counter(
            "flowweaver_schedule_runs_not_started",
            "Fired runs that could not start (their workflow or handler is gone)",
            ["schedule"],
            registry=r,
        )
        self.scheduler_leader = Gauge(
            "flowweaver_scheduler_leader", "1 while this process fires the schedules", registry=r
        )
        self.scheduler_rounds_failed = Counter(
            "flowweaver_scheduler_rounds_failed",
            "Scheduler rounds that failed (the store could not be reached)",
            registry=r,
        )
        self.sse_subscribers = Gauge("flowweaver_sse_subscribers", "Open SSE streams", registry=r)
        self.sse_events_sent = Counter(
            "flowweaver_sse_events_sent", "Events written to SSE streams", registry=r
        )
        self.sse_dropped = Counter(
            "flowweaver_sse_dropped",
            "SSE subscribers dropped because their unread backlog passed the byte limit",
            registry=r,
        )
        self.sse_flush_timeouts = Counter(
            "flowweaver_sse_flush_timeouts",
            "SSE streams cut because their client did not take the end of the stream in time",
            registry=r,
        )
        self.http_requests = Counter(
            "flowweaver_http_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "flowweaver_http_request_seconds",
            "Time to answer an HTTP request (SSE: the whole stream)",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=r,
        )
        self.http_connections = Gauge(
            "flowweaver_http_connections", "Open HTTP connections", registry=r
        )
        self.http_rejected = Counter(
            "flowweaver_http_connections_rejected",
            "Connections closed by the server's limits, by reason",
            ["reason"],
            registry=r,
        )
        self.http_refused = Counter(
            "flowweaver_http_requests_refused",
            "Requests refused by a per-client limit (429), by reason",
            ["reason"],
            registry=r,
        )


metrics = Metrics()

_configured = False


def _lead_with_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Put timestamp, level and event first in each JSON line, then the context."""
    lead: dict[str, Any] = {k: event.pop(k) for k in ("timestamp", "level", "event") if k in event}
    lead.update(event)
    return lead


def _exception_of(value: Any) -> BaseException | None:
    """Return the exception an ``exc_info`` value names (True: the one being handled)."""
    if isinstance(value, BaseException):
        return value
    if isinstance(value, tuple) and len(value) == 3 and isinstance(value[1], BaseException):
        return value[1]
    if value is True:
        return sys.exc_info()[1]
    return None


def render_exception(error: BaseException) -> str:
    """Return ``error``'s traceback with its type and stack, but without its message.

    Exception messages can quote what a client sent: aiohttp's parser errors quote the
    offending header line (an ``Authorization`` header included), a ``KeyError`` its key, a
    decoding error the value. Log lines keep the type and the stack (file, line, code), which
    point at the bug, and leave the message out; chained exceptions are rendered the same way.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(chain) < 16:
        seen.add(id(current))
        chain.append(current)
        cause = current.__cause__
        current = (
            cause if cause is not None or current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for i, item in enumerate(reversed(chain)):
        if i:
            parts.append("\nThe above exception led to the following one:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_tb(item.__traceback__))
        kind = type(item)
        parts.append(f"{kind.__module__}.{kind.__qualname__} (message not logged)\n")
    return "".join(parts).rstrip("\n")


def _format_exception(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Turn ``exc_info`` into an ``exception`` field without the message (see above)."""
    value = event.pop("exc_info", None)
    error = _exception_of(value)
    if error is not None:
        event["exception"] = render_exception(error)
    return event


def configure_logging(
    *, json: bool | None = None, level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Configure structlog once: JSON lines, or readable lines when ``json`` is False.

    ``json=None`` picks readable output on a terminal and JSON otherwise. Records of the
    standard ``logging`` module (aiohttp's, the eventsourcing library's) go through the same
    processors, so every line of the process has one format.
    """
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    out = stream or sys.stderr
    if json is None:
        json = not out.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        shared.append(_lead_with_event)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            _format_exception,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _format_exception,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_flowweaver", False):
            root.removeHandler(old)
    handler._flowweaver = True  # type: ignore[attr-defined]  # marks the handler we own
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiohttp's own access log is replaced by our structured one (flowweaver.api.server).
    logging.getLogger("aiohttp.access").propagate = False
    _configured = True
