"""The OpenAPI document says what the server does: streams, list bounds, history parameters."""

from __future__ import annotations

from typing import Any

import aiohttp

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.openapi import build_document
from flowweaver.domain.spec import MAX_TASKS

from .conftest import LiveServer, collect, events_of, run, wait_finished

SSE = "text/event-stream"
DOC = build_document()


def _operation(path: str) -> dict[str, Any]:
    operation: dict[str, Any] = DOC["paths"][path]["get"]
    return operation


def test_every_event_route_describes_its_stream() -> None:
    """The SSE routes document a text/event-stream 200 whose messages carry RunEvent JSON."""
    for path in ("/events/{runId}", "/events", "/runs/{runId}/events"):
        answer = _operation(path)["responses"]["200"]
        media = answer["content"][SSE]
        text = media["schema"]["description"]
        for part in ("`retry:`", "`id:`", "`event:`", "`data:`", "keep-alive", "Last-Event-ID"):
            assert part in text, (path, part)
        assert media["x-sse-data"] == {"$ref": "#/components/schemas/RunEvent"}
        assert "id: 1\nevent: RunStarted\ndata: {" in media["example"]
        assert "Cache-Control" in answer["headers"]


def test_tasks_are_documented_as_one_to_max_tasks() -> None:
    """WorkflowSpec.tasks says minItems 1 and maxItems MAX_TASKS, which validation enforces."""
    tasks = DOC["components"]["schemas"]["WorkflowSpec"]["properties"]["tasks"]
    assert (tasks["minItems"], tasks["maxItems"]) == (1, MAX_TASKS)


def test_the_history_routes_parameters_are_exactly_what_it_reads(server: LiveServer) -> None:
    """JSON history reads after and limit (not Last-Event-ID); the stream ignores limit."""
    operation = _operation("/runs/{runId}/events")
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"runId", "after", "limit", "Last-Event-ID", "types", "since", "until"}
    assert "JSON history only" in params["limit"]["description"]
    assert "SSE only" in params["Last-Event-ID"]["description"]

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            async with s.post(f"{server.url}/runs", json={"workflowId": "example-workflow"}) as r:
                run_id = (await r.json())["id"]
            every = await wait_finished(s, server.url, run_id)
            url = f"{server.url}/runs/{run_id}/events"
            async with s.get(url, params={"after": "1", "limit": "2"}) as r:
                page = await r.json()
            assert [e["version"] for e in page["events"]] == [2, 3]
            async with s.get(url, headers={"Last-Event-ID": "5"}) as r:
                page = await r.json()
            assert page["events"][0]["version"] == 1  # the JSON form ignores Last-Event-ID
            async with s.get(url, params={"limit": "1"}, headers={"Accept": SSE}) as r:
                streamed = events_of(await collect(r))
            assert len(streamed) == len(every)  # the stream ignores limit

    run(main())
