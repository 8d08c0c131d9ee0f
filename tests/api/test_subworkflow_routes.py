"""Sub-workflows over HTTP on a real loopback server: a run whose task runs a child workflow,
the links both ways (GET /runs/{id} and the lineage route), and the 422 answers of bad
definitions (unknown child, cycle, handler and workflow both), which store nothing."""

from __future__ import annotations

from typing import Any

import aiohttp

from .conftest import LiveServer, run

PROBLEM = "application/problem+json"
CHILD = {
    "id": "greet",
    "tasks": [{"id": "hello", "handler": "echo", "inputs": {"to": "$.params.to"}}],
}
PARENT = {
    "id": "welcome",
    "tasks": [{"id": "sub", "workflow": "greet", "inputs": {"to": "$.params.name"}}],
}


async def _post(s: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> Any:
    async with s.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def test_a_sub_workflow_run_links_parent_and_child(server: LiveServer) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            assert (await _post(s, f"{server.url}/workflows", CHILD))[0] == 201
            assert (await _post(s, f"{server.url}/workflows", PARENT))[0] == 201
            status, parent = await _post(
                s,
                f"{server.url}/runs",
                {"workflowId": "welcome", "parameters": {"name": "Ada"}},
                Prefer="wait=10",
            )
            assert status == 201, parent
            assert parent["status"] == "completed", parent
            [sub] = parent["tasks"]
            assert sub["output"] == {"result": {"hello": {"result": {"to": "Ada"}}}}
            child_id = sub["childRunId"]
            async with s.get(f"{server.url}/runs/{child_id}") as r:
                child = await r.json()
            assert (child["parentRunId"], child["parentTaskId"]) == (parent["id"], "sub")
            assert child["parameters"] == {"to": "Ada"}
            assert child["parentVersion"] is None
            async with s.get(f"{server.url}/runs/{child_id}/lineage") as r:
                lineage = await r.json()
            assert lineage["parent"] == {"runId": parent["id"], "atVersion": None, "taskId": "sub"}
            async with s.get(f"{server.url}/runs/{parent['id']}/lineage") as r:
                lineage = await r.json()
            assert [(c["runId"], c["atVersion"]) for c in lineage["children"]] == [(child_id, None)]
            async with s.get(f"{server.url}/runs/{parent['id']}/events") as r:
                events = (await r.json())["events"]
            [link] = [e for e in events if e["type"] == "ChildRunStarted"]
            assert (link["taskId"], link["childRunId"], link["workflowId"]) == (
                "sub",
                child_id,
                "greet",
            )

    run(main())


def test_bad_sub_workflows_are_422_and_store_nothing(server: LiveServer) -> None:
    async def main() -> None:
        url = f"{server.url}/workflows"
        async with aiohttp.ClientSession() as s:
            top = server.store.max_position()
            cases = [
                (
                    {"id": "lost", "tasks": [{"id": "t", "workflow": "nowhere"}]},
                    "$.tasks[0].workflow",
                    "no workflow 'nowhere' is registered",
                ),
                (
                    {"id": "both", "tasks": [{"id": "t", "handler": "noop", "workflow": "x"}]},
                    "$.tasks[0].workflow",
                    "not both",
                ),
                (
                    {"id": "loop", "tasks": [{"id": "t", "workflow": "loop"}]},
                    "$.tasks[0].workflow",
                    "sub-workflow cycle: loop -> loop",
                ),
            ]
            for body, path, message in cases:
                async with s.post(url, json=body) as r:
                    problem = await r.json(content_type=None)
                    assert r.status == 422, problem
                    assert r.headers["Content-Type"].startswith(PROBLEM)
                [error] = problem["errors"]
                assert error["path"] == path
                assert message in error["message"]
            assert server.store.max_position() == top
            assert (await _post(s, url, {"id": "b", "tasks": [{"id": "t", "handler": "noop"}]}))[
                0
            ] == 201
            assert (await _post(s, url, {"id": "a", "tasks": [{"id": "t", "workflow": "b"}]}))[
                0
            ] == 201
            status, problem = await _post(
                s, url, {"id": "b", "tasks": [{"id": "t", "workflow": "a"}]}
            )
            assert status == 422
            assert "b -> a -> b" in problem["errors"][0]["message"]
            async with s.get(f"{url}/b") as r:
                assert (await r.json())["version"] == 1

    run(main())


def test_the_openapi_document_has_the_sub_workflow_fields(server: LiveServer) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/openapi.json") as r:
            schemas = (await r.json())["components"]["schemas"]
        assert "workflow" in schemas["TaskSpec"]["properties"]
        assert "handler" not in schemas["TaskSpec"].get("required", [])
        assert "childRunId" in schemas["TaskOut"]["properties"]
        assert "parentTaskId" in schemas["RunOut"]["properties"]
        assert "taskId" in schemas["ParentOut"]["properties"]

    run(main())
