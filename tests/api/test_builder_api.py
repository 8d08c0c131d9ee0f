"""A built workflow registers over HTTP as its JSON does, and its mistakes are the 422's."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from flowweaver import ValidationError, Workflow

from .conftest import LiveServer, run


def _mistakes() -> list[Workflow]:
    made = []
    for add in (
        lambda wf: wf.task("a", "echo", retry={"max_attempts": 0}),
        lambda wf: wf.task("a", "echo", after=["nope"]),
        lambda wf: (wf.task("a", "echo"), wf.task("a", "noop")),
        lambda wf: wf.task("a", "echo", inputs={"x": "$.[["}),
        lambda wf: wf.task("a", "echo", colour="red"),
    ):
        wf = Workflow("w", timeout=10)
        add(wf)
        made.append(wf)
    return made


async def _post(s: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with s.post(
        url, data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("wf", _mistakes())
def test_the_builders_errors_are_the_servers(server: LiveServer, wf: Workflow) -> None:
    """POST /workflows of the same document answers 422 with the builder's errors."""
    with pytest.raises(ValidationError) as built:
        wf.spec()
    document = {"id": wf.id, "defaults": {"timeout": 10}, "tasks": wf._tasks}

    async def main() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            return await _post(s, f"{server.url}/workflows", document)

    status, problem = run(main())
    assert status == 422
    assert problem["errors"] == [{"path": e.path, "message": e.message} for e in built.value.errors]


def test_a_built_workflow_registers_as_its_json(server: LiveServer) -> None:
    """POSTing to_json() registers version 1; the builder's spec() then changes nothing."""
    wf = Workflow("built-over-http", description="from Python")
    first = wf.task("first", "echo", inputs={"x": Workflow.param("x")})
    wf.task("second", "echo", inputs={"x": first.result})

    async def main() -> tuple[tuple[int, Any], tuple[int, Any]]:
        async with aiohttp.ClientSession() as s:
            posted = await _post(s, f"{server.url}/workflows", json.loads(wf.to_json()))
            async with s.get(f"{server.url}/workflows/built-over-http") as r:
                shown = r.status, await r.json()
            return posted, shown

    posted, shown = run(main())
    assert posted == (201, {"id": "built-over-http", "version": 1})
    assert shown[0] == 200
    assert server.engine.register_workflow(wf.spec()) == (1, False)
