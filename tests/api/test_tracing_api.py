"""The traceparent header of POST /runs is recorded and becomes the parent of the run's span."""

from __future__ import annotations

from typing import Any

import aiohttp
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowweaver.api import ApiConfig
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.engine import Engine
from flowweaver.store import MemoryEventStore

from .conftest import LiveServer, example_registry, run

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def test_post_runs_with_a_traceparent() -> None:
    """The header is stored in RunStarted and parents the run span; a bad one is ignored."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = Engine(
        MemoryEventStore(), handlers=example_registry(), owns_store=True, tracer_provider=provider
    )
    server = LiveServer(engine, ApiConfig(tail_wait=0.2, shutdown_timeout=2.0)).start()

    async def post_run(s: aiohttp.ClientSession, traceparent: str) -> dict[str, Any]:
        async with s.post(
            f"{server.url}/runs",
            json={"workflowId": "example-workflow"},
            headers={"traceparent": traceparent, "Prefer": "wait=10"},
        ) as response:
            assert response.status == 201, await response.text()
            body: dict[str, Any] = await response.json()
        async with s.get(f"{server.url}/runs/{body['id']}/events") as response:
            page = await response.json()
        return {"run": body, "started": page["events"][0]}

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as response:
                assert response.status == 201
            good = await post_run(s, f"00-{TRACE_ID}-{PARENT_ID}-01")
            bad = await post_run(s, "not-a-traceparent")
            return good, bad

    try:
        good, bad = run(main())
    finally:
        server.stop()
        engine.close(grace=2)
        provider.shutdown()
    assert good["run"]["status"] == "completed"
    assert good["started"]["traceparent"] == f"00-{TRACE_ID}-{PARENT_ID}-01"
    assert bad["started"]["traceparent"] is None
    runs = [s for s in exporter.get_finished_spans() if s.name == "run example-workflow"]
    by_run = {(s.attributes or {})["flowweaver.run.id"]: s for s in runs}
    traced = by_run[good["run"]["id"]]
    assert traced.parent is not None and traced.context is not None
    assert (f"{traced.context.trace_id:032x}", f"{traced.parent.span_id:016x}") == (
        TRACE_ID,
        PARENT_ID,
    )
    assert by_run[bad["run"]["id"]].parent is None
    tasks = [s for s in exporter.get_finished_spans() if s.name.startswith("task ")]
    assert len(tasks) == 6
    assert {s.parent.span_id for s in tasks if s.parent} == {
        s.context.span_id for s in runs if s.context
    }
