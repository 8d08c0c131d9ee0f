"""Hostile data over REST: regex filters cannot freeze the server, task data is capped."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec

from flowweaver.domain.spec import WorkflowSpec

from .conftest import LiveServer, run

CATASTROPHIC = "$.params.items[?@ =~ /(a+)+$/]"


def _regex_workflow(workflow_id: str) -> dict[str, Any]:
    task = {"id": "t", "handler": "echo", "inputs": {"x": CATASTROPHIC}}
    return {"id": workflow_id, "tasks": [task]}


async def _timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as response:
        return response.status, await response.json()


def test_a_regex_filter_is_refused_and_the_server_keeps_answering(server: LiveServer) -> None:
    """POST /workflows with a catastrophic regex is a quick 422; /healthz answers meanwhile."""
    document = {
        "id": "redos",
        "tasks": [{"id": "t", "handler": "echo", "inputs": {"x": CATASTROPHIC}}],
    }

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            (post_s, (status, body)), (health_s, (health, _)) = await asyncio.gather(
                _timed(_status(s, "POST", f"{server.url}/workflows", json=document)),
                _timed(_status(s, "GET", f"{server.url}/healthz")),
            )
            assert status == 422
            assert body["errors"][0]["path"] == "$.tasks[0].inputs.x"
            assert "regular expressions are not supported" in body["errors"][0]["message"]
            assert health == 200
            assert post_s < 2.0 and health_s < 2.0
            status, _ = await _status(s, "GET", f"{server.url}/workflows/redos")
            assert status == 404

    run(main())


def test_a_regex_stored_before_the_rule_fails_its_task_without_freezing(
    server: LiveServer,
) -> None:
    """A definition stored unchecked (as if from an older version) cannot run its regex."""
    document = {
        "id": "old",
        "tasks": [{"id": "t", "handler": "echo", "inputs": {"x": CATASTROPHIC}}],
    }
    server.store.register_workflow(msgspec.convert(document, WorkflowSpec), datetime.now(UTC))
    # 28 characters backtrack for several seconds (doubling with each one) while holding
    # the GIL; before the fix every request waited on it.
    params = {"items": ["a" * 28 + "!"]}

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            post = asyncio.ensure_future(
                _timed(
                    _status(
                        s,
                        "POST",
                        f"{server.url}/runs",
                        json={"workflowId": "old", "parameters": params},
                        headers={"Prefer": "wait=5"},
                    )
                )
            )
            health_s, (health, _) = await _timed(_status(s, "GET", f"{server.url}/healthz"))
            post_s, (status, body) = await post
            assert health == 200 and health_s < 1.0
            assert status == 201 and post_s < 2.0
            assert body["status"] == "failed"
            task = body["tasks"][0]
            assert task["lastError"]["type"] == "InputError"
            assert "regular expressions are not supported" in task["lastError"]["message"]

    run(main())


def test_task_inputs_over_the_default_cap_fail_the_run_over_rest(server: LiveServer) -> None:
    """A 600 KB parameter referenced twice (1.2 MB of inputs) fails with InputTooLarge."""
    workflow = {
        "id": "amplify",
        "tasks": [
            {"id": "t", "handler": "echo", "inputs": {"a": "$.params.big", "b": "$.params.big"}}
        ],
    }

    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            status, _ = await _status(s, "POST", f"{server.url}/workflows", json=workflow)
            assert status == 201
            status, body = await _status(
                s,
                "POST",
                f"{server.url}/runs",
                json={"workflowId": "amplify", "parameters": {"big": "x" * 600_000}},
                headers={"Prefer": "wait=10"},
            )
            assert status == 201
            assert body["status"] == "failed"
            error = body["tasks"][0]["lastError"]
            assert error["type"] == "InputTooLarge"
            assert error["retryable"] is False
            assert "task 't'" in error["message"] and "1048576 bytes" in error["message"]
            async with s.get(f"{server.url}/runs/{body['id']}/events") as response:
                history = await response.read()
            # RunStarted holds the parameter once; no event holds it twice over.
            assert len(history) < 700_000

    run(main())
