"""OpenTelemetry: a span per run and per attempt, under the traceparent the run recorded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flowweaver import Workflow
from flowweaver.domain.run import start_run
from flowweaver.domain.spec import workflow_from_builtins
from flowweaver.engine import Engine
from flowweaver.engine.tracing import valid_traceparent
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.ports import Append
from flowweaver.store.memory import MemoryEventStore
from flowweaver.store.sqlite import SQLiteEventStore

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider()
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


class SeenSpans:
    """What ``trace.get_current_span()`` was inside each handler call, by task id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_task: dict[str, list[int]] = {}

    def note(self, task_id: str) -> None:
        span_id = trace.get_current_span().get_span_context().span_id
        with self.lock:
            self.by_task.setdefault(task_id, []).append(span_id)


def registry(seen: SeenSpans) -> HandlerRegistry:
    made = builtin_registry()

    def sync_handler(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.note(context.task_id)
        if context.attempt == 1 and inputs.get("fail_once"):
            raise RuntimeError("first attempt fails")
        return {"ok": True}

    async def async_handler(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        seen.note(context.task_id)
        return {"ok": True}

    made.register("traced_sync", sync_handler)
    made.register("traced_async", async_handler)
    return made


def workflow() -> Workflow:
    wf = Workflow("traced", retry={"max_attempts": 2, "initial_delay": 0})
    flaky = wf.task("flaky", "traced_sync", inputs={"fail_once": True})
    wf.task("after", "traced_async", after=[flaky])
    return wf


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


def test_the_span_tree_of_a_run(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """The run span is the traceparent's child; attempts are its children, retries included."""
    seen = SeenSpans()
    engine = Engine(MemoryEventStore(), handlers=registry(seen), tracer_provider=provider)
    try:
        engine.register_workflow(workflow().spec())
        handle = engine.start_run("traced", traceparent=TRACEPARENT)
        state = engine.wait_run_finished(handle.run_id, timeout=10)
    finally:
        engine.close()
    assert state.status == "completed"
    spans = _by_name(exporter.get_finished_spans())
    (run_span,) = spans["run traced"]
    assert run_span.context is not None and run_span.parent is not None
    assert f"{run_span.context.trace_id:032x}" == TRACE_ID
    assert f"{run_span.parent.span_id:016x}" == PARENT_ID
    assert run_span.parent.is_remote
    assert dict(run_span.attributes or {}) == {
        "flowweaver.run.id": handle.run_id,
        "flowweaver.workflow.id": "traced",
        "flowweaver.workflow.version": 1,
        "flowweaver.run.outcome": "completed",
    }
    flaky = sorted(
        spans["task flaky"], key=lambda s: (s.attributes or {})["flowweaver.task.attempt"]
    )
    (after,) = spans["task after"]
    for attempt in (*flaky, after):
        assert attempt.parent is not None and attempt.context is not None
        assert attempt.parent.span_id == run_span.context.span_id
        assert attempt.context.trace_id == run_span.context.trace_id
    first, second = flaky
    assert dict(first.attributes or {}) == {
        "flowweaver.run.id": handle.run_id,
        "flowweaver.task.id": "flaky",
        "flowweaver.task.attempt": 1,
        "flowweaver.task.handler": "traced_sync",
        "flowweaver.task.outcome": "failed",
        "flowweaver.task.retryable": True,
    }
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "RuntimeError: first attempt fails"
    (event,) = first.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    assert "first attempt fails" in str((event.attributes or {})["exception.stacktrace"])
    assert (second.attributes or {})["flowweaver.task.outcome"] == "completed"
    assert second.status.status_code is StatusCode.OK
    # Handlers, sync on a worker thread and async on the engine's loop, see their attempt span.
    assert seen.by_task["flaky"] == [s.context.span_id for s in flaky if s.context]
    assert after.context is not None and seen.by_task["after"] == [after.context.span_id]


def test_a_failed_run_is_an_error_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A run that fails ends its span with status ERROR naming the failed task."""
    wf = Workflow("broken")
    wf.task("boom", "fail")
    engine = Engine(MemoryEventStore(), handlers=builtin_registry(), tracer_provider=provider)
    try:
        engine.register_workflow(wf.spec())
        handle = engine.start_run("broken")
        assert engine.wait_run_finished(handle.run_id, timeout=10).status == "failed"
    finally:
        engine.close()
    (run_span,) = _by_name(exporter.get_finished_spans())["run broken"]
    assert run_span.parent is None  # no traceparent, no active span: a root
    assert run_span.status.status_code is StatusCode.ERROR
    assert run_span.status.description == "failed tasks: boom"


def test_the_callers_span_is_the_parent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """Started inside a span of the caller's, a run is that span's child."""
    engine = Engine(MemoryEventStore(), handlers=builtin_registry(), tracer_provider=provider)
    wf = Workflow("nested")
    wf.task("a", "noop")
    try:
        engine.register_workflow(wf.spec())
        with provider.get_tracer("test").start_as_current_span("caller") as caller:
            handle = engine.start_run("nested")
        engine.wait_run_finished(handle.run_id, timeout=10)
        started = engine.store.read_run(handle.run_id, upto=1)[0].event
    finally:
        engine.close()
    (run_span,) = _by_name(exporter.get_finished_spans())["run nested"]
    assert run_span.parent is not None
    assert run_span.parent.span_id == caller.get_span_context().span_id
    context = caller.get_span_context()
    recorded = getattr(started, "traceparent", None)
    assert recorded is not None and valid_traceparent(recorded) == recorded
    assert recorded.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_a_resumed_run_joins_its_trace(
    tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A run recorded by a process that died resumes under its stored traceparent."""
    path = str(tmp_path / "fw.db")
    wf = Workflow("resumed")
    wf.task("a", "noop")
    spec = workflow_from_builtins(wf.to_dict())
    store = SQLiteEventStore(path)
    try:
        store.register_workflow(spec, _now())
        state, events = start_run(
            "00000000-0000-4000-8000-0000000000e1", spec, 1, {}, _now(), traceparent=TRACEPARENT
        )
        store.append([Append(run_id=state.id, expected_version=0, events=events)])
    finally:
        store.close()
    engine = Engine(
        SQLiteEventStore(path),
        handlers=builtin_registry(),
        tracer_provider=provider,
        owns_store=True,
    )
    try:
        done = engine.wait_run_finished(state.id, timeout=10)
    finally:
        engine.close()
    assert done.status == "completed"
    spans = _by_name(exporter.get_finished_spans())
    (run_span,) = spans["run resumed"]
    assert run_span.parent is not None and f"{run_span.parent.span_id:016x}" == PARENT_ID
    (attempt,) = spans["task a"]
    assert attempt.parent is not None and run_span.context is not None
    assert attempt.parent.span_id == run_span.context.span_id


def _now() -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (TRACEPARENT, True),
        (f"  {TRACEPARENT} ", True),
        (f"01-{TRACE_ID}-{PARENT_ID}-01-later", True),
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", False),
        (f"00-{'0' * 32}-{PARENT_ID}-01", False),
        (f"00-{TRACE_ID}-{'0' * 16}-01", False),
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", False),
        ("00-abc-def-01", False),
        ("", False),
        (None, False),
    ],
)
def test_only_a_valid_traceparent_is_kept(header: str | None, kept: bool) -> None:
    """A malformed traceparent is ignored, as W3C Trace Context asks."""
    assert (valid_traceparent(header) is not None) is kept


def test_without_the_extra_nothing_of_opentelemetry_is_imported() -> None:
    """With opentelemetry absent, runs work, tracing is None and no module of it is loaded."""
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from flowweaver import Workflow
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.store.memory import MemoryEventStore
wf = Workflow("plain")
wf.task("a", "noop")
engine = Engine(MemoryEventStore(), handlers=builtin_registry())
engine.register_workflow(wf.spec())
run = engine.start_run("plain", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
assert engine.tracing is None
engine.close()
loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v is not None]
assert not loaded, loaded
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.splitlines()[-1:]) == (0, ["ok"]), done.stderr


def test_importing_flowweaver_imports_no_opentelemetry() -> None:
    """Even installed, OpenTelemetry loads only when an engine starts, not on import."""
    code = (
        "import sys, flowweaver, flowweaver.engine, flowweaver.api.app;"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_no_span_is_made_until_a_provider_is_set() -> None:
    """Installed but with no provider, no span is started; one set later is used from then on."""
    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from flowweaver import Workflow
from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.store.memory import MemoryEventStore

class Counting:
    def __init__(self, tracer):
        self.tracer, self.started = tracer, 0
    def start_span(self, *args, **kwargs):
        self.started += 1
        return self.tracer.start_span(*args, **kwargs)

wf = Workflow("plain")
wf.task("b", "noop", after=[wf.task("a", "noop")])
engine = Engine(MemoryEventStore(), handlers=builtin_registry())
counting = Counting(engine.tracing._tracer)
engine.tracing._tracer = counting
engine.register_workflow(wf.spec())
run = engine.start_run("plain")
assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
assert counting.started == 0, counting.started
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
run = engine.start_run("plain")
assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
engine.close()
names = sorted(span.name for span in exporter.get_finished_spans())
assert names == ["run plain", "task a", "task b"], names
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.splitlines()[-1:]) == (0, ["ok"]), done.stderr
