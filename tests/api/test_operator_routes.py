"""Operator action routes on a real server (SQLite): pause, resume, cancel, and retry, skip,
complete a task; onTaskFailure on POST /runs; 404, 409, 415, 422, 400 that store nothing."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp

from flowweaver.api.errors import PROBLEM_CONTENT_TYPE, problem_for
from flowweaver.api.openapi import build_document
from flowweaver.errors import RunUnavailableError

from .conftest import JSON_TYPE, LiveServer, run, wait_finished

GATED = {
    "id": "gated",
    "tasks": [
        {"id": "a", "handler": "gate", "inputs": {"gate": "a"}},
        {"id": "b", "handler": "echo", "dependencies": ["a"], "inputs": {"seen": "$.result.gate"}},
    ],
}
FAILING = {
    "id": "failing",
    "tasks": [
        {
            "id": "f",
            "handler": "fail",
            "inputs": {"times": 1},
            "outputs": {"attempt": "$.result.attempt"},
        },
        {"id": "d", "handler": "echo", "dependencies": ["f"], "inputs": {"got": "$.attempt"}},
    ],
}
UNKNOWN_RUN = "00000000-0000-4000-8000-000000000001"
ROUTES = (
    "pause",
    "resume",
    "cancel",
    "tasks/b/retry",
    "tasks/b/skip",
    "tasks/b/complete",
)


async def post(session: aiohttp.ClientSession, url: str, body: Any = None, **kw: Any) -> Any:
    """POST ``body`` as JSON (no body when None); return (status, headers, JSON answer)."""
    if body is not None:
        kw["json"] = body
    elif "data" not in kw:
        kw["headers"] = {**JSON_TYPE, **kw.get("headers", {})}
    async with session.post(url, **kw) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200
        return await response.json()


def problem(answer: Any, status: int) -> dict[str, Any]:
    """Check ``answer`` is a problem+json of ``status``; return its body."""
    got, headers, body = answer
    assert got == status, body
    assert headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
    assert body["status"] == status and body["detail"]
    return dict(body)


async def events(session: aiohttp.ClientSession, url: str, run_id: str) -> list[dict[str, Any]]:
    page = await get(session, f"{url}/runs/{run_id}/events?limit=1000")
    return list(page["events"])


async def wait_status(session: aiohttp.ClientSession, url: str, run_id: str, status: str) -> None:
    """Poll GET /runs/{id} (every 10 ms, 10 s at most) until the run has ``status``."""
    done = threading.Event()
    timer = threading.Timer(10, done.set)
    timer.start()
    try:
        while (await get(session, f"{url}/runs/{run_id}"))["status"] != status:
            assert not done.is_set(), f"run never became {status}"
            await asyncio.sleep(0.01)
    finally:
        timer.cancel()


async def start(
    session: aiohttp.ClientSession, url: str, workflow: dict[str, Any], **extra: Any
) -> str:
    status, _, _ = await post(session, f"{url}/workflows", workflow)
    assert status in (200, 201)
    status, _, body = await post(session, f"{url}/runs", {"workflowId": workflow["id"], **extra})
    assert status == 201, body
    return str(body["id"])


def test_pause_and_resume_record_by_and_reason(sqlite_server: LiveServer, gates: Any) -> None:
    """POST pause and resume answer 202 with the run; the events carry by and reason."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, GATED)
            gates.wait_entered("a")
            status, _, state = await post(s, f"{url}/runs/{run_id}/pause", {"reason": "look"})
            assert status == 202 and state["status"] == "paused" and state["id"] == run_id
            again = problem(await post(s, f"{url}/runs/{run_id}/pause"), 409)
            assert "paused" in again["detail"]
            gates.open("a")
            status, _, state = await post(s, f"{url}/runs/{run_id}/resume")  # no body at all
            assert status == 202 and state["status"] == "running"
            stored = await wait_finished(s, url, run_id)
            assert stored[-1].event == "RunCompleted"
            by_type = {e["type"]: e for e in await events(s, url, run_id)}
            assert (by_type["RunPaused"]["by"], by_type["RunPaused"]["reason"]) == (
                "anonymous",
                "look",
            )
            assert (by_type["RunResumed"]["by"], by_type["RunResumed"]["reason"]) == (
                "anonymous",
                "",
            )
            problem(await post(s, f"{url}/runs/{run_id}/resume"), 409)

    run(main())


def test_on_task_failure_pause_then_retry_skip_complete(sqlite_server: LiveServer) -> None:
    """POST /runs with onTaskFailure pause; retry the failed task, then resume to the end."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, FAILING, onTaskFailure="pause")
            await wait_status(s, url, run_id, "paused")
            base = f"{url}/runs/{run_id}/tasks"
            conflict = problem(await post(s, f"{base}/d/retry"), 409)
            assert "pending" in conflict["detail"]
            status, _, state = await post(s, f"{base}/f/retry", {"reason": "flaky"})
            assert status == 202 and state["status"] == "paused"
            done = threading.Event()
            timer = threading.Timer(10, done.set)
            timer.start()
            try:
                while True:
                    tasks = {t["id"]: t for t in (await get(s, f"{url}/runs/{run_id}"))["tasks"]}
                    if tasks["f"]["status"] == "completed":
                        break
                    assert not done.is_set()
                    await asyncio.sleep(0.01)
            finally:
                timer.cancel()
            await post(s, f"{url}/runs/{run_id}/resume")
            stored = await wait_finished(s, url, run_id)
            assert stored[-1].event == "RunCompleted"
            retried = [e for e in await events(s, url, run_id) if e["type"] == "TaskRetried"]
            assert [(e["by"], e["reason"]) for e in retried] == [("anonymous", "flaky")]

            other = await start(s, url, FAILING, onTaskFailure="pause", idempotencyKey="k2")
            await wait_status(s, url, other, "paused")
            base = f"{url}/runs/{other}/tasks"
            status, _, state = await post(
                s, f"{base}/f/complete", {"output": {"attempt": 7}, "reason": "by hand"}
            )
            assert status == 202
            assert {t["id"]: t["output"] for t in state["tasks"]}["f"] == {"attempt": 7}
            problem(await post(s, f"{base}/f/skip"), 409)  # completed already
            problem(await post(s, f"{base}/f/complete", {"output": 1}), 409)
            status, _, state = await post(s, f"{base}/d/skip", {"reason": "not today"})
            assert status == 202
            await post(s, f"{url}/runs/{other}/resume")
            stored = await wait_finished(s, url, other)
            assert stored[-1].event == "RunCompleted"
            by_type = {e["type"]: e for e in await events(s, url, other)}
            done_by_hand = [e for e in await events(s, url, other) if e["type"] == "TaskCompleted"]
            assert [(e["attempt"], e["by"], e["reason"]) for e in done_by_hand] == [
                (0, "anonymous", "by hand")
            ]
            assert (by_type["TaskSkipped"]["by"], by_type["TaskSkipped"]["reason"]) == (
                "anonymous",
                "not today",
            )
            # The same key with another onTaskFailure is another request.
            status, _, _ = await post(
                s,
                f"{url}/runs",
                {"workflowId": "failing", "idempotencyKey": "k2", "onTaskFailure": "fail"},
            )
            assert status == 409

    run(main())


def test_cancel_records_by_and_reason(sqlite_server: LiveServer, gates: Any) -> None:
    """POST cancel answers 202 with cancelRequested; RunCancelRequested carries by, reason."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, GATED)
            gates.wait_entered("a")
            status, _, state = await post(s, f"{url}/runs/{run_id}/cancel", {"reason": "stop"})
            assert status == 202 and state["cancelRequested"] is True
            gates.open("a")
            await wait_finished(s, url, run_id)
            requested = [
                e for e in await events(s, url, run_id) if e["type"] == "RunCancelRequested"
            ]
            assert [(e["by"], e["reason"]) for e in requested] == [("anonymous", "stop")]
            ended = problem(await post(s, f"{url}/runs/{run_id}/cancel"), 409)
            assert "ended" in ended["detail"]

    run(main())


def test_bad_requests_store_nothing(sqlite_server: LiveServer, gates: Any) -> None:
    """404 unknown run or task, 409 not allowed, 415/400/422 bad bodies: nothing is stored."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, GATED)
            gates.wait_entered("a")
            before = len(await events(s, url, run_id))
            runs = f"{url}/runs/{run_id}"
            for path in ("pause", "resume", "cancel", "tasks/a/retry", "tasks/a/skip"):
                problem(await post(s, f"{url}/runs/{UNKNOWN_RUN}/{path}"), 404)
                problem(await post(s, f"{url}/runs/not-a-uuid/{path}"), 404)
            for action in ("retry", "skip"):
                problem(await post(s, f"{runs}/tasks/nope/{action}"), 404)
            problem(await post(s, f"{runs}/tasks/nope/complete", {"output": 1}), 404)
            problem(await post(s, f"{runs}/tasks/{'x' * 5000}/skip"), 404)
            problem(await post(s, f"{runs}/resume"), 409)  # running, not paused
            problem(await post(s, f"{runs}/tasks/a/skip"), 409)  # running
            problem(await post(s, f"{runs}/tasks/a/complete", {"output": 1}), 409)
            problem(await post(s, f"{runs}/tasks/a/retry"), 409)
            problem(await post(s, f"{runs}/tasks/b/retry"), 409)  # pending
            problem(await post(s, f"{url}/runs/{UNKNOWN_RUN}/tasks/a/complete", {"output": 1}), 404)
            for path in ROUTES:
                text = {"data": b"reason=x", "headers": {"Content-Type": "text/plain"}}
                problem(await post(s, f"{runs}/{path}", **text), 415)
                problem(await post(s, f"{runs}/{path}", {"reason": ["not", "text"]}), 422)
            problem(
                await post(
                    s, f"{runs}/pause", data=b"{", headers={"Content-Type": "application/json"}
                ),
                400,
            )
            bad = problem(await post(s, f"{runs}/pause", {"reason": 5}), 422)
            assert bad["errors"][0]["path"] == "$.reason"
            problem(await post(s, f"{runs}/pause", {"why": "x"}), 422)
            problem(await post(s, f"{runs}/pause", {"reason": "x" * 5000}), 422)
            problem(await post(s, f"{runs}/tasks/b/complete"), 400)  # the body is required
            missing = problem(await post(s, f"{runs}/tasks/b/complete", {"reason": "x"}), 422)
            assert "output" in missing["errors"][0]["message"]
            deep: Any = 1
            for _ in range(200):
                deep = [deep]
            problem(await post(s, f"{runs}/tasks/b/complete", {"output": deep}), 422)
            assert len(await events(s, url, run_id)) == before
            problem(
                await post(s, f"{url}/runs", {"workflowId": "gated", "onTaskFailure": "x"}), 422
            )

    run(main())


def test_no_owner_answering_is_a_503_with_retry_after() -> None:
    """RunUnavailableError is a 503 problem with Retry-After, never a 500."""
    answer = problem_for(RunUnavailableError("r-1", "no node answered"), "/runs/r-1/pause")
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "1"
    assert answer.content_type == PROBLEM_CONTENT_TYPE


def test_openapi_shows_the_actions_and_on_task_failure() -> None:
    """Each action is a POST answering 202/404/409/503; onTaskFailure is fail or pause."""
    document = build_document()
    for path in ROUTES:
        template = "/runs/{runId}/" + path.replace("tasks/b/", "tasks/{taskId}/")
        responses = document["paths"][template]["post"]["responses"]
        assert {"202", "404", "409", "415", "422", "503"} <= responses.keys()
    schemas = document["components"]["schemas"]
    for name in ("WorkflowSpec", "RunRequest"):
        kinds = schemas[name]["properties"]["onTaskFailure"]["anyOf"][0]["enum"]
        assert kinds == ["fail", "pause"]
    assert schemas["CompleteTaskRequest"]["required"] == ["output"]
