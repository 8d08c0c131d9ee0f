"""Concurrency limits and priorities over HTTP: queued runs, their status filter and cancel,
priorities on POST /runs, 422s for bad limits, and the OpenAPI document."""

from __future__ import annotations

from typing import Any

import aiohttp

from .conftest import Gates, LiveServer, run, wait_finished

PROBLEM = "application/problem+json"


def _limited(limit: Any = 1, key: str | None = None) -> dict[str, Any]:
    concurrency: dict[str, Any] = {"limit": limit}
    if key is not None:
        concurrency["key"] = key
    return {
        "id": "one-at-a-time",
        "concurrency": concurrency,
        "tasks": [{"id": "work", "handler": "gate", "inputs": {"gate": "$.params.gate"}}],
    }


def test_a_bad_limit_or_key_is_a_422_and_stores_nothing(server: LiveServer) -> None:
    async def main() -> None:
        url = f"{server.url}/workflows"
        async with aiohttp.ClientSession() as s:
            top = server.store.max_position()
            for document, path in [
                (_limited(0), "$.concurrency.limit"),
                (_limited(-1), "$.concurrency.limit"),
                (_limited(1, key="customer"), "$.concurrency.key"),
            ]:
                async with s.post(url, json=document) as r:
                    body = await r.json(content_type=None)
                    assert r.status == 422, body
                    assert r.headers["Content-Type"].startswith(PROBLEM)
                assert [e["path"] for e in body["errors"]] == [path]
            assert server.store.max_position() == top
            async with s.get(url) as r:
                assert (await r.json())["workflows"] == []

    run(main())


def test_runs_over_the_limit_are_queued_listed_cancelled_and_dequeued(
    server: LiveServer, gates: Gates
) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=_limited(1)) as r:
                assert r.status == 201, await r.text()
            ids = []
            for gate, priority in [("a", 0), ("b", 3), ("c", 0)]:
                body = {"workflowId": "one-at-a-time", "parameters": {"gate": gate}}
                if priority:
                    body["priority"] = priority
                async with s.post(f"{server.url}/runs", json=body) as r:
                    assert r.status == 201, await r.text()
                    answer = await r.json()
                ids.append(answer["id"])
                assert answer["priority"] == priority
                assert answer["status"] == ("running" if gate == "a" else "queued")
            first, second, third = ids
            async with s.get(f"{server.url}/runs", params={"status": "queued"}) as r:
                assert r.status == 200
                listed = await r.json()
            assert {x["id"] for x in listed["runs"]} == {second, third}
            assert {x["status"] for x in listed["runs"]} == {"queued"}
            async with s.get(f"{server.url}/runs/{second}/events") as r:
                events = (await r.json())["events"]
            assert [e["type"] for e in events] == ["RunStarted", "RunQueued"]
            assert events[0]["priority"] == 3
            assert events[1]["priority"] == 3
            async with s.post(
                f"{server.url}/runs/{second}/cancel", json={"reason": "not needed"}
            ) as r:
                assert r.status == 202, await r.text()
                assert (await r.json())["status"] == "cancelled"
            gates.wait_entered("a")
            gates.open("a")
            gates.open("c")
            streamed = await wait_finished(s, server.url, third)
            assert [m.event for m in streamed][:3] == ["RunStarted", "RunQueued", "RunDequeued"]
            assert streamed[-1].event == "RunCompleted"
            async with s.get(f"{server.url}/runs/{first}") as r:
                assert (await r.json())["status"] == "completed"
            async with s.get(f"{server.url}/runs/{second}") as r:
                state = await r.json()
            assert state["status"] == "cancelled"
            assert state["tasks"][0]["status"] == "cancelled"

    run(main())


def test_a_bad_priority_is_a_422(server: LiveServer) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=_limited(1)) as r:
                assert r.status == 201
            top = server.store.max_position()
            for priority in ["high", 1.5, 10**9]:
                body = {"workflowId": "one-at-a-time", "priority": priority}
                async with s.post(f"{server.url}/runs", json=body) as r:
                    problem = await r.json(content_type=None)
                    assert r.status == 422, problem
                assert [e["path"] for e in problem["errors"]] == ["$.priority"]
            assert server.store.max_position() == top

    run(main())


def test_the_openapi_document_has_the_new_fields_and_status(server: LiveServer) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/openapi.json") as r:
            document = await r.json()
        schemas = document["components"]["schemas"]
        assert "priority" in schemas["RunRequest"]["properties"]
        assert "priority" in schemas["RunOut"]["properties"]
        assert "queued" in schemas["RunOut"]["properties"]["status"]["enum"]
        assert set(schemas["Concurrency"]["properties"]) == {"limit", "key"}
        listing = document["paths"]["/runs"]["get"]["parameters"]
        [status] = [p for p in listing if p["name"] == "status"]
        assert "queued" in status["schema"]["enum"]

    run(main())
