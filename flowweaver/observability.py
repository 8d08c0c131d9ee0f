"""Structured logs (structlog) and Prometheus metrics: the only place either is configured."""

from __future__ import annotations

import logging
import sys
from typing import Any

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
        self.sse_subscribers = Gauge("flowweaver_sse_subscribers", "Open SSE streams", registry=r)


metrics = Metrics()

_configured = False


def configure_logging(*, json: bool | None = None, level: str = "INFO") -> None:
    """Configure structlog once: JSON lines, or readable lines when ``json`` is False.

    ``json=None`` picks readable output on a terminal and JSON otherwise.
    """
    global _configured  # noqa: PLW0603 - logging is process-wide by nature
    if json is None:
        json = not sys.stderr.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True
