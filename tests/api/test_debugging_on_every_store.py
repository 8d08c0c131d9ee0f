"""Time-travel debugging and audit end to end over HTTP, on SQLite, PostgreSQL and Redis.

A real server on loopback (the app of ``flowweaver serve`` on its own loop, a real engine) on
each kind of store: a run pauses on a failure with a traceback and logs; GET /runs/{id} shows
them, at a version and as of an instant; a diff; an operator retries the task and resumes the
run to the end; a second run fails and a fork with new parameters completes; lineage both ways;
verify; export; the audit feed filtered by types and run, as JSON and as an event stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import pytest

from flowweaver.store import open_store
from tests.debug_handlers import DEBUGGED, debug_registry
from tests.store_urls import StoreUrls, store_kind, store_urls

from .conftest import LiveServer, Message, Servers, collect, run, sse_messages, wait_finished

__all__ = ["store_kind", "store_urls"]  # fixtures used by name

WAIT = {"Prefer": "wait=20"}
JSON = {"Accept": "application/json"}
TIMEOUT = aiohttp.ClientTimeout(total=20)


@pytest.fixture
def debug_server(store_kind: str, store_urls: StoreUrls) -> Iterator[LiveServer]:
    """A live server with the debugging handlers on a fresh store of ``store_kind``."""
    made = Servers()
    try:
        yield made(store=open_store(store_urls(store_kind)), handlers=debug_registry())
    finally:
        made.close()


async def _call(
    s: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    async with s.request(method, url, timeout=TIMEOUT, **kw) as r:
        body = await r.read()
        json_types = ("application/json", "application/problem+json")
        decoded = msgspec.json.decode(body) if body and r.content_type in json_types else body
        return r.status, dict(r.headers), decoded


async def _ok(s: aiohttp.ClientSession, method: str, url: str, status: int = 200, **kw: Any) -> Any:
    got, _, body = await _call(s, method, url, **kw)
    assert got == status, (method, url, got, body)
    return body


async def _events(s: aiohttp.ClientSession, base: str, run_id: str) -> list[dict[str, Any]]:
    page = await _ok(s, "GET", f"{base}/runs/{run_id}/events?limit=1000")
    events: list[dict[str, Any]] = page["events"]
    return events


async def _until(
    s: aiohttp.ClientSession, base: str, run_id: str, after: int, wanted: str
) -> dict[str, Any]:
    """Follow the run's stream after version ``after`` until an event of type ``wanted``."""
    async with s.get(f"{base}/events/{run_id}?after={after}", timeout=TIMEOUT) as response:
        assert response.status == 200
        messages = await collect(response, until=lambda m: m.event == wanted)
    assert messages[-1].event == wanted, [m.event for m in messages]
    found: dict[str, Any] = messages[-1].json()
    return found


async def _first_events(response: aiohttp.ClientResponse, count: int) -> list[Message]:
    """Read an event stream until ``count`` events (comments aside) came."""
    seen: list[Message] = []
    async for message in sse_messages(response):
        if message.event is not None:
            seen.append(message)
            if len(seen) == count:
                break
    return seen


def _tasks(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in state["tasks"]}


def test_debugging_and_audit_end_to_end(debug_server: LiveServer) -> None:
    """Every debugging and audit route answers the same on this kind of store."""

    async def main() -> None:
        base = debug_server.url
        async with aiohttp.ClientSession() as s:
            await _ok(s, "POST", f"{base}/workflows", 201, json=DEBUGGED)

            # A run that pauses on load's failure: traceback and logs on GET /runs/{id}.
            body = {"workflowId": "debugged", "parameters": {"mode": "flaky"}}
            paused = await _ok(s, "POST", f"{base}/runs", 201, json=body)
            run_id = paused["id"]
            await _until(s, base, run_id, 0, "RunPaused")
            state = await _ok(s, "GET", f"{base}/runs/{run_id}")
            assert state["status"] == "paused"
            load = _tasks(state)["load"]
            assert load["status"] == "failed"
            error = load["lastError"]
            assert (error["type"], error["message"]) == ("KeyError", "'db_url'")
            assert error["traceback"].startswith("Traceback (most recent call last):\n")
            assert ", in load\n" in error["traceback"]
            assert [(x["level"], x["message"], x["fields"]) for x in load["logs"]] == [
                ("warning", "config missing", {"key": "db_url", "attempt": 1})
            ]

            # ?at= and ?asOf= give the state at the failure; the diff from 0 shows it.
            history = await _events(s, base, run_id)
            failed = next(e for e in history if e["type"] == "TaskFailed")
            at = next(i for i, e in enumerate(history, 1) if e is failed)
            at_failure = await _ok(s, "GET", f"{base}/runs/{run_id}?at={at}")
            assert at_failure["version"] == at
            assert _tasks(at_failure)["load"]["lastError"] == error
            as_of = await _ok(
                s, "GET", f"{base}/runs/{run_id}", params={"asOf": failed["timestamp"]}
            )
            assert as_of["version"] >= at
            assert _tasks(as_of)["load"]["lastError"] == error
            status, _, problem = await _call(
                s, "GET", f"{base}/runs/{run_id}", params={"asOf": "2000-01-01T00:00:00Z"}
            )
            assert status == 400, problem
            diff = await _ok(s, "GET", f"{base}/runs/{run_id}/diff?from=0&to={len(history)}")
            assert (diff["from"], diff["to"]) == (0, len(history))
            assert diff["run"]["status"] == ["pending", "paused"]
            assert diff["tasks"]["load"]["status"][1] == "failed"
            assert [e["type"] for e in diff["events"]] == [e["type"] for e in history]

            # Retry the failed task while paused, then resume to the end, while a filtered
            # audit stream that began after the pause sees the operator's two events live.
            query = {"types": "RunPaused", "runId": run_id}
            page = await _ok(s, "GET", f"{base}/events", params=query, headers=JSON)
            (pause_event,) = page["events"]
            live = {
                "types": "TaskRetried,RunResumed",
                "runId": run_id,
                "after": str(pause_event["position"]),
            }
            stream = await s.get(f"{base}/events", params=live, timeout=TIMEOUT)
            assert stream.status == 200
            watching = asyncio.create_task(_first_events(stream, 2))
            retried = await _ok(
                s,
                "POST",
                f"{base}/runs/{run_id}/tasks/load/retry",
                202,
                json={"reason": "flaky upstream"},
            )
            assert retried["status"] == "paused"
            done = await _until(s, base, run_id, len(history), "TaskCompleted")
            assert (done["taskId"], done["attempt"]) == ("load", 2)
            await _ok(s, "POST", f"{base}/runs/{run_id}/resume", 202, json={"reason": "ok"})
            finished = await wait_finished(s, base, run_id)
            seen = await asyncio.wait_for(watching, 20)
            stream.close()
            assert [(m.event, m.json()["reason"]) for m in seen] == [
                ("TaskRetried", "flaky upstream"),
                ("RunResumed", "ok"),
            ]
            assert finished[-1].event == "RunCompleted"
            ended = await _ok(s, "GET", f"{base}/runs/{run_id}")
            assert ended["status"] == "completed"
            assert _tasks(ended)["report"]["output"] == {"result": {"reported": 3}}
            assert _tasks(ended)["load"]["logs"][0]["fields"] == {"key": "db_url", "attempt": 2}

            # A run that fails (onTaskFailure fail); a fork with new parameters completes.
            body = {"workflowId": "debugged", "parameters": {"mode": "bad"}}
            body["onTaskFailure"] = "fail"
            failed_run = await _ok(s, "POST", f"{base}/runs", 201, json=body, headers=WAIT)
            assert failed_run["status"] == "failed"
            parent = failed_run["id"]
            parent_version = failed_run["version"]
            fork = await _ok(
                s,
                "POST",
                f"{base}/runs/{parent}/fork",
                201,
                json={"parameters": {"mode": "good"}, "reason": "fixed config"},
                headers=WAIT,
            )
            assert fork["status"] == "completed"
            assert (fork["parentRunId"], fork["parentVersion"]) == (parent, parent_version)
            assert fork["parameters"] == {"mode": "good"}
            lineage = await _ok(s, "GET", f"{base}/runs/{fork['id']}/lineage")
            assert lineage["parent"] == {"runId": parent, "atVersion": parent_version}
            assert lineage["children"] == []
            lineage = await _ok(s, "GET", f"{base}/runs/{parent}/lineage")
            assert lineage["parent"] is None
            assert [(c["runId"], c["atVersion"]) for c in lineage["children"]] == [
                (fork["id"], parent_version)
            ]
            forked = (await _events(s, base, fork["id"]))[0]
            assert (forked["type"], forked["by"], forked["reason"]) == (
                "RunForked",
                "anonymous",
                "fixed config",
            )

            # Verify and export every run; the export is the stored chain, line by line.
            for ident in (run_id, parent, fork["id"]):
                count = len(await _events(s, base, ident))
                check = await _ok(s, "GET", f"{base}/runs/{ident}/verify")
                assert (check["ok"], check["version"]) == (True, count), check
                status, headers, raw = await _call(s, "GET", f"{base}/runs/{ident}/export")
                assert status == 200
                assert headers["Content-Type"].startswith("application/x-ndjson")
                lines = [msgspec.json.decode(line) for line in raw.splitlines()]
                assert len(lines) == count
                assert [(x["runId"], x["version"]) for x in lines] == [
                    (ident, v) for v in range(1, count + 1)
                ]
                assert lines[-1]["event"]["hash"] == check["head"]

            # The audit feed, filtered by types and run: a JSON page and an event stream.
            query = {"types": "RunPaused,TaskRetried", "runId": run_id}
            page = await _ok(s, "GET", f"{base}/events", params=query, headers=JSON)
            audited = [(e["type"], e["by"]) for e in page["events"]]
            assert audited == [("RunPaused", "engine"), ("TaskRetried", "anonymous")]
            assert page["events"][1]["reason"] == "flaky upstream"
            positions = [e["position"] for e in page["events"]]
            assert positions == sorted(positions)
            page = await _ok(
                s,
                "GET",
                f"{base}/events",
                params={**query, "after": str(positions[0])},
                headers=JSON,
            )
            assert [e["position"] for e in page["events"]] == positions[1:]
            other = await _ok(
                s, "GET", f"{base}/events", params={**query, "runId": parent}, headers=JSON
            )
            assert other["events"] == []
            async with s.get(f"{base}/events", params=query, timeout=TIMEOUT) as response:
                assert response.status == 200
                assert response.content_type == "text/event-stream"
                streamed = await _first_events(response, 2)
            assert [m.event for m in streamed] == ["RunPaused", "TaskRetried"]
            assert [int(m.id or 0) for m in streamed] == positions
            resume = {"Last-Event-ID": str(positions[0])}
            async with s.get(
                f"{base}/events", params=query, headers=resume, timeout=TIMEOUT
            ) as response:
                assert response.status == 200
                (again,) = await _first_events(response, 1)
            assert (again.event, again.id) == ("TaskRetried", str(positions[1]))

            # A run's own history filtered by types, paged by version.
            kinds = {"types": "TaskFailed,TaskCompleted", "limit": "1"}
            seen, after = [], 0
            while True:
                page = await _ok(
                    s,
                    "GET",
                    f"{base}/runs/{run_id}/events",
                    params={**kinds, "after": str(after)},
                )
                seen += [(e["type"], e["taskId"], e["attempt"]) for e in page["events"]]
                if page["nextAfter"] is None:
                    break
                after = page["nextAfter"]
            assert seen == [
                ("TaskFailed", "load", 1),
                ("TaskCompleted", "load", 2),
                ("TaskCompleted", "report", 1),
            ]

    run(main())
