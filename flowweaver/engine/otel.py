"""Spans for runs and task attempts with OpenTelemetry (imported only with the ``otel`` extra).

A run's span is a child of the ``traceparent`` its RunStarted recorded (the POST /runs
header, or the span active where ``Engine.start_run`` was called), so a run that resumes in
another process, or after a restart, joins the same trace. The span starts at the run's
creation time the first time a process dispatches an attempt of it, and ends with the run.
Each attempt's span is a child of its run's; it is the current span while the handler runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import ProxyTracerProvider, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flowweaver.domain.events import RunForked, RunStarted
from flowweaver.domain.run import RunState
from flowweaver.engine.messages import Completed, Failed
from flowweaver.engine.pool import Job
from flowweaver.errors import FlowweaverError
from flowweaver.ports import EventStore

TRACER_NAME = "flowweaver"
MAX_EXPECTED = 10_000
_UNKNOWN: Any = object()
_propagator = TraceContextTextMapPropagator()


class OtelTracing:
    """The engine's tracing hooks on an OpenTelemetry ``TracerProvider``."""

    def __init__(self, store: EventStore, provider: Any = None) -> None:
        from flowweaver import __version__  # noqa: PLC0415 - the package imports the engine lazily

        self._store = store
        self._explicit = provider is not None
        self._tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=provider)
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[Span, Any] | None] = {}  # None: the run has no span
        self._expected: dict[str, str | None] = {}  # bounded: see expect_run

    def _recording(self) -> bool:
        """Whether spans go anywhere: a provider was given, or the global one has been set.

        Until then OpenTelemetry's global provider is a proxy whose spans record nothing, so
        making them only costs time (10 % of W2 with the extra installed and no SDK set up).
        Asked once per run (the check reads the environment, too slow for every attempt).
        """
        return self._explicit or not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)

    def current_traceparent(self) -> str | None:
        """Return the caller's active span as a ``traceparent``, if it has one."""
        found = trace.get_current_span().get_span_context()
        if not found.is_valid:  # no span (the common case): no propagator's work per run
            return None
        return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"

    def expect_run(self, run_id: str, traceparent: str | None) -> None:
        """Note the parent of a run about to start here, so its span needs no store read."""
        with self._lock:
            if len(self._expected) >= MAX_EXPECTED:  # runs that never dispatched here
                self._expected.clear()
            self._expected[run_id] = traceparent

    def run_context(self, run_id: str, state: RunState) -> Any:
        """Return the context of the run's span, starting the span on first use here.

        A run that first dispatches here while no provider is set has no span (None), and its
        attempts none either; a provider set later is used from the next run on.
        """
        with self._lock:
            found = self._runs.get(run_id, _UNKNOWN)
        if found is not _UNKNOWN:
            return None if found is None else found[1]
        if not self._recording():
            with self._lock:
                self._expected.pop(run_id, None)
                found = self._runs.setdefault(run_id, None)
            return None if found is None else found[1]
        with self._lock:
            traceparent = self._expected.pop(run_id, _UNKNOWN)
        if traceparent is _UNKNOWN:  # a run resumed here: RunStarted says
            traceparent = self._traceparent_of(run_id)
        parent = _propagator.extract({"traceparent": traceparent or ""})
        start = state.created_at
        span = self._tracer.start_span(
            f"run {state.workflow_id}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={
                "flowweaver.run.id": run_id,
                "flowweaver.workflow.id": state.workflow_id,
                "flowweaver.workflow.version": state.workflow_version,
            },
            start_time=int(start.timestamp() * 1e9) if start is not None else None,
        )
        with self._lock:
            found = self._runs.setdefault(run_id, (span, trace.set_span_in_context(span)))
        if found is None or found[0] is not span:  # another thread of this run's got there first
            span.end()
        return None if found is None else found[1]

    def _traceparent_of(self, run_id: str) -> str | None:
        try:
            first = self._store.read_run(run_id, upto=1)
        except FlowweaverError:
            return None  # the span is a root: better than no span
        if first and isinstance(first[0].event, RunStarted | RunForked):
            return getattr(first[0].event, "traceparent", None)
        return None

    def end_run(self, run_id: str, state: RunState) -> None:
        """End the run's span: its outcome, and status ERROR when the run failed."""
        with self._lock:
            found = self._runs.pop(run_id, None)
            self._expected.pop(run_id, None)
        if found is None:
            return
        span = found[0]
        span.set_attribute("flowweaver.run.outcome", state.status)
        if state.status == "failed":
            failed = [t.id for t in state.tasks.values() if t.status == "failed"]
            span.set_status(Status(StatusCode.ERROR, "failed tasks: " + ", ".join(failed)))
        span.end()

    def run_attempt(
        self, job: Job, execute: Callable[[Job], Completed | Failed]
    ) -> Completed | Failed:
        """Run ``execute(job)`` inside the attempt's span, made the current one."""
        if job.trace is None:  # its run has no span: no provider was set when it began here
            return execute(job)
        span = self._tracer.start_span(
            f"task {job.task_id}",
            context=job.trace,
            attributes={
                "flowweaver.run.id": job.run_id,
                "flowweaver.task.id": job.task_id,
                "flowweaver.task.attempt": job.attempt,
                "flowweaver.task.handler": job.handler,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            outcome = execute(job)
        except BaseException:  # the worker's own failure (execute catches the handler's)
            span.end()
            raise
        finally:
            otel_context.detach(token)
        if isinstance(outcome, Completed):
            span.set_attribute("flowweaver.task.outcome", "completed")
            span.set_status(Status(StatusCode.OK))
        else:
            error = outcome.error
            span.set_attribute("flowweaver.task.outcome", "failed")
            span.set_attribute("flowweaver.task.retryable", error.retryable)
            span.add_event(
                "exception",
                {
                    "exception.type": error.type,
                    "exception.message": error.message,
                    "exception.stacktrace": error.traceback or "",
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
        span.end()
        return outcome

    def close(self) -> None:
        """End the spans of runs still open: they resume later, here or elsewhere."""
        with self._lock:
            open_runs, self._runs = list(self._runs.values()), {}
        for span, _ in filter(None, open_runs):
            span.set_attribute("flowweaver.run.outcome", "suspended")
            span.end()
