"""Hostile or odd client input: every case is a 400/413/422 problem, never a 500."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from flowweaver.api import schemas
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.domain import spec

from .conftest import LiveServer, run

PROBLEM = "application/problem+json"


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, str, Any]:
    body = await response.read()
    content_type = response.headers.get("Content-Type", "")
    return response.status, content_type, (json.loads(body) if body else None)


def _problem(answer: tuple[int, str, Any], *statuses: int) -> Any:
    status, content_type, body = answer
    assert status in statuses, (status, body)
    assert content_type.startswith(PROBLEM), content_type
    assert body["status"] == status
    return body


def test_the_wire_uses_the_domains_id_type() -> None:
    """The run request's workflowId is checked by the very type the workflow document uses."""
    assert schemas.RunRequest.__annotations__["workflow_id"] in ("Ident", spec.Ident)
    assert schemas.Ident is spec.Ident


def test_a_workflow_id_with_a_trailing_newline_is_refused(server: LiveServer) -> None:
    """POST /runs with workflowId "x\\n" is a 422 at $.workflowId, as in a workflow document."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            body = {"workflowId": "example-workflow\n"}
            async with s.post(f"{server.url}/runs", json=body) as r:
                problem = _problem(await _answer(r), 422)
            assert [e["path"] for e in problem["errors"]] == ["$.workflowId"]
        assert (
            server.store.list_runs(workflow_id=None, status=None, limit=10, cursor=None).runs == []
        )

    run(main())


def test_a_cycle_is_reported_with_the_other_errors(server: LiveServer) -> None:
    """A 422 for a workflow lists its cycle beside its other errors."""
    document = {
        "id": "cyclic",
        "tasks": [
            {"id": "a", "handler": "noop", "dependencies": ["b"]},
            {"id": "b", "handler": "noop", "dependencies": ["a", "ghost"]},
        ],
    }

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{server.url}/workflows", json=document) as r,
        ):
            return _problem(await _answer(r), 422)

    problem: Any = run(main())
    messages = [e["message"] for e in problem["errors"]]
    assert "dependency cycle: a -> b -> a" in messages
    assert "unknown task 'ghost'" in messages
