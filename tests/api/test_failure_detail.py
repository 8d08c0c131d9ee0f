"""Failure detail over HTTP on a live server and a SQLite store: GET /runs/{id} (and ?at=) shows
a task's lastError with its traceback and its logs; the JSON history and SSE carry them in the
events as stored; the OpenAPI document describes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from flowweaver.api.openapi import openapi_document
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.store import SQLiteEventStore

from .conftest import LiveServer, Servers, collect, events_of, run, wait_finished

WORKFLOW = {
    "id": "detail",
    "tasks": [
        {
            "id": "flaky",
            "handler": "flaky",
            "retry": {"maxAttempts": 2, "initialDelay": 0.01},
        },
        {"id": "broken", "handler": "broken"},
    ],
}


def flaky(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fail the first attempt after logging, complete the second."""
    context.log.info("attempting", attempt=context.attempt)
    if context.attempt == 1:
        raise ConnectionError("upstream refused")
    return {"ok": True}


def broken(inputs: dict[str, Any], context: Any) -> None:
    """Log a warning and fail for good."""
    context.log.warning("config missing", key="db_url")
    raise KeyError("db_url")


@pytest.fixture
def detail_server(servers: Servers, tmp_path: Path) -> LiveServer:
    """A live server on a SQLite file with the two handlers of WORKFLOW."""
    registry: HandlerRegistry = builtin_registry()
    registry.register("flaky", flaky)
    registry.register("broken", broken)
    return servers(store=SQLiteEventStore(str(tmp_path / "fw.db")), handlers=registry)


async def _json(session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with session.get(url, **kw) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _start(session: aiohttp.ClientSession, url: str) -> str:
    async with session.post(f"{url}/workflows", json=WORKFLOW) as response:
        assert response.status == 201
    async with session.post(f"{url}/runs", json={"workflowId": "detail"}) as response:
        assert response.status == 201
        run_id: str = (await response.json())["id"]
    return run_id


def test_get_run_shows_traceback_and_logs(detail_server: LiveServer) -> None:
    """A failed task's lastError has the traceback; each task shows its latest attempt's logs."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, detail_server.url)
            await wait_finished(s, detail_server.url, run_id)
            body = await _json(s, f"{detail_server.url}/runs/{run_id}")
            tasks = {t["id"]: t for t in body["tasks"]}
            failed = tasks["broken"]
            assert failed["status"] == "failed"
            error = failed["lastError"]
            assert error["type"] == "KeyError"
            assert error["message"] == "'db_url'"
            assert error["traceback"].startswith("Traceback (most recent call last):\n")
            assert ", in broken\n" in error["traceback"]
            assert error["traceback"].endswith("KeyError: 'db_url'\n")
            assert "flowweaver/engine" not in error["traceback"]
            (line,) = failed["logs"]
            assert set(line) == {"timestamp", "level", "message", "fields"}
            assert (line["level"], line["message"], line["fields"]) == (
                "warning",
                "config missing",
                {"key": "db_url"},
            )
            retried = tasks["flaky"]
            assert retried["status"] == "completed"
            assert retried["attempts"] == 2
            assert retried["lastError"]["type"] == "ConnectionError"
            assert [x["fields"] for x in retried["logs"]] == [{"attempt": 2}]

    run(main())


def test_get_run_at_a_version_shows_that_attempts_detail(detail_server: LiveServer) -> None:
    """?at= the version of the first TaskFailed shows attempt 1's logs, not attempt 2's."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, detail_server.url)
            events = await wait_finished(s, detail_server.url, run_id)
            first_failure = next(
                m for m in events if m.event == "TaskFailed" and m.json()["taskId"] == "flaky"
            )
            body = await _json(s, f"{detail_server.url}/runs/{run_id}?at={first_failure.id}")
            task = next(t for t in body["tasks"] if t["id"] == "flaky")
            assert task["status"] == "waiting_retry"
            assert ", in flaky\n" in task["lastError"]["traceback"]
            assert [x["fields"] for x in task["logs"]] == [{"attempt": 1}]

    run(main())


def test_history_and_stream_carry_the_detail_as_stored(detail_server: LiveServer) -> None:
    """JSON history and SSE: TaskFailed has error.traceback and logs, TaskCompleted its logs."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, detail_server.url)
            async with s.get(f"{detail_server.url}/events/{run_id}") as response:
                streamed = [m.json() for m in events_of(await collect(response))]
            page = await _json(s, f"{detail_server.url}/runs/{run_id}/events")
            assert page["events"] == streamed
            failures = {
                (e["taskId"], e["attempt"]): e for e in streamed if e["type"] == "TaskFailed"
            }
            assert set(failures) == {("flaky", 1), ("broken", 1)}
            flaky_failure = failures[("flaky", 1)]
            assert flaky_failure["error"]["traceback"].endswith(
                "ConnectionError: upstream refused\n"
            )
            assert [x["message"] for x in flaky_failure["logs"]] == ["attempting"]
            (completed,) = [e for e in streamed if e["type"] == "TaskCompleted"]
            assert [x["fields"] for x in completed["logs"]] == [{"attempt": 2}]
            stored = [
                msgspec.json.decode(msgspec.json.encode(r.event))
                for r in detail_server.store.read_run(run_id)
                if type(r.event).__name__ == "TaskFailed"
            ]
            assert [e["error"]["traceback"] for e in stored] == [
                e["error"]["traceback"] for e in streamed if e["type"] == "TaskFailed"
            ]

    run(main())


def test_openapi_describes_traceback_and_logs() -> None:
    """The OpenAPI document has lastError.traceback, TaskOut.logs and the log line's fields."""
    schemas = msgspec.json.decode(openapi_document())["components"]["schemas"]
    assert "traceback" in schemas["ErrorOut"]["required"]
    assert "logs" in schemas["TaskOut"]["required"]
    assert schemas["TaskOut"]["properties"]["logs"]["items"] == {
        "$ref": "#/components/schemas/LogLineOut"
    }
    assert set(schemas["LogLineOut"]["required"]) == {"timestamp", "level", "message", "fields"}
