"""Map tasks over HTTP on a real loopback server: a malformed map is a 422 that stores
nothing; GET /runs/{id} shows a map task's element counts while it runs and when it is done;
the events carry each element's index; the OpenAPI document has both fields."""

from __future__ import annotations

from typing import Any

import aiohttp

from .conftest import JSON_TYPE, Gates, LiveServer, run

PROBLEM = "application/problem+json"
WAIT = {"Prefer": "wait=20", **JSON_TYPE}


def _workflow(handler: str = "echo", path: str = "$.items") -> dict[str, Any]:
    return {
        "id": "fan-out",
        "tasks": [
            {
                "id": "fan",
                "handler": handler,
                "inputs": {"items": "$.params.xs", "gate": "map"},
                "map": path,
            },
            {"id": "after", "handler": "noop", "dependencies": ["fan"]},
        ],
    }


def test_a_malformed_map_is_a_422_and_stores_nothing(server: LiveServer) -> None:
    """A path that does not parse: 422 at $.tasks[0].map, and the store is as it was."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            top = server.store.max_position()
            async with s.post(
                f"{server.url}/workflows", json=_workflow(path="$.items[?"), headers=JSON_TYPE
            ) as r:
                body = await r.json(content_type=None)
                assert r.status == 422, body
                assert r.headers["Content-Type"].startswith(PROBLEM)
            assert [e["path"] for e in body["errors"]] == ["$.tasks[0].map"]
            assert body["errors"][0]["message"].startswith("invalid JSONPath")
            assert server.store.max_position() == top
            async with s.get(f"{server.url}/workflows/fan-out") as r:
                assert r.status == 404

    run(main())


def test_a_run_shows_its_map_progress_and_the_results_in_order(
    server: LiveServer, gates: Gates
) -> None:
    """While elements block the task shows running counts; at the end every element completed,
    the output is the list in order, and the events name each element's index."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"{server.url}/workflows", json=_workflow("gate"), headers=JSON_TYPE
            ) as r:
                assert r.status == 201, await r.text()
            body = {"workflowId": "fan-out", "parameters": {"xs": list(range(10))}}
            async with s.post(f"{server.url}/runs", json=body, headers=JSON_TYPE) as r:
                assert r.status == 201, await r.text()
                run_id = (await r.json())["id"]
            gates.wait_entered("map")
            async with s.get(f"{server.url}/runs/{run_id}") as r:
                state = await r.json()
            fan, after = state["tasks"]
            assert fan["status"] == "running"
            elements = fan["elements"]
            assert elements["total"] == 10
            assert elements["running"] >= 1
            assert elements["completed"] + elements["running"] <= 10
            assert "elements" not in after
            gates.open("map")
            async with s.get(f"{server.url}/runs/{run_id}?at=1") as r:
                assert "elements" not in (await r.json())["tasks"][0]
            done = await _wait_finished(s, server, run_id)
            fan = done["tasks"][0]
            assert fan["elements"] == {
                "total": 10,
                "completed": 10,
                "failed": 0,
                "running": 0,
                "waitingRetry": 0,
                "cancelled": 0,
            }
            assert fan["output"] == {"result": [{"gate": "map"}] * 10}
            async with s.get(f"{server.url}/runs/{run_id}/events?limit=1000") as r:
                events = (await r.json())["events"]
            started = [e for e in events if e["type"] == "MapElementStarted"]
            assert sorted(e["index"] for e in started) == list(range(10))
            assert {e["taskId"] for e in started} == {"fan"}
            assert len([e for e in events if e["type"] == "MapElementCompleted"]) == 10
            # With echo, each element's result names its item and index: in order.
            echo = {**_workflow(), "id": "fan-echo"}
            async with s.post(f"{server.url}/workflows", json=echo, headers=JSON_TYPE) as r:
                assert r.status == 201, await r.text()
            body = {"workflowId": "fan-echo", "parameters": {"xs": list(range(100, 110))}}
            async with s.post(f"{server.url}/runs", json=body, headers=WAIT) as r:
                echoed = (await r.json())["tasks"][0]
            results = echoed["output"]["result"]
            assert [(r["item"], r["index"]) for r in results] == [(100 + i, i) for i in range(10)]

    run(main())


async def _wait_finished(s: aiohttp.ClientSession, server: LiveServer, run_id: str) -> Any:
    async with s.get(
        f"{server.url}/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
    ) as r:
        async for line in r.content:
            if line.startswith(b"event: Run") and line.strip().endswith(
                (b"Completed", b"Failed", b"Cancelled")
            ):
                break
    async with s.get(f"{server.url}/runs/{run_id}") as r:
        return await r.json()


def test_a_list_that_is_not_a_list_at_run_time_fails_the_task_clearly(server: LiveServer) -> None:
    """A number where the list should be: the run fails, the task says MapInputError."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=_workflow(), headers=JSON_TYPE) as r:
                assert r.status == 201, await r.text()
            body = {"workflowId": "fan-out", "parameters": {"xs": 7}}
            async with s.post(f"{server.url}/runs", json=body, headers=WAIT) as r:
                assert r.status == 201, await r.text()
                state = await r.json()
            assert state["status"] == "failed"
            fan = state["tasks"][0]
            assert fan["lastError"]["type"] == "MapInputError"
            assert fan["lastError"]["retryable"] is False
            assert "not a list" in fan["lastError"]["message"]

    run(main())


def test_the_openapi_document_has_map_and_elements(server: LiveServer) -> None:
    """TaskSpec.map is a string; TaskOut.elements refers to ElementsOut with its counts."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/openapi.json") as r:
            document = await r.json()
        schemas = document["components"]["schemas"]
        assert "map" in schemas["TaskSpec"]["properties"]
        assert "elements" in schemas["TaskOut"]["properties"]
        assert "elements" not in schemas["TaskOut"].get("required", [])
        assert set(schemas["ElementsOut"]["properties"]) == {
            "total",
            "completed",
            "failed",
            "running",
            "waitingRetry",
            "cancelled",
        }

    run(main())
