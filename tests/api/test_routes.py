"""The REST routes against a live server: the original README session and every route."""

from __future__ import annotations

import asyncio
import copy
import threading
import uuid
from typing import Any

import aiohttp
import pytest

from flowweaver.api.app import HUB
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.errors import StoreError
from flowweaver.store import MemoryEventStore

from .conftest import JSON_TYPE, LiveServer, run, wait_finished

PROBLEM = "application/problem+json"


async def _post(session: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> Any:
    async with session.post(url, json=body, **kw) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def _get(session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with session.get(url, **kw) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


def _is_problem(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith(PROBLEM)
    assert body["status"] == expected
    assert {"type", "title", "status", "detail"} <= body.keys()


def test_original_readme_session(server: LiveServer) -> None:
    """Register the README's t1 -> t2 -> t3 example, start a run, read it, stream its events."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await _post(s, f"{server.url}/workflows", EXAMPLE_WORKFLOW)
            assert (status, body) == (201, {"id": "example-workflow", "version": 1})
            assert headers["Location"] == "/workflows/example-workflow?version=1"
            status, headers, created = await _post(
                s, f"{server.url}/runs", {"workflowId": "example-workflow"}
            )
            assert status == 201
            run_id = created["id"]
            assert headers["Location"] == f"/runs/{run_id}"
            assert created["workflowId"] == "example-workflow"
            events = await wait_finished(s, server.url, run_id)
            assert events[0].event == "RunStarted"
            assert events[-1].event == "RunCompleted"
            assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
            status, _, state = await _get(s, f"{server.url}/runs/{run_id}")
            assert status == 200
            assert state["status"] == "completed"
            assert state["version"] == len(events)
            tasks = {t["id"]: t for t in state["tasks"]}
            assert [t["id"] for t in state["tasks"]] == ["task1", "task2", "task3"]
            assert tasks["task1"]["output"] == {"data": {"rows": [1, 2, 3], "url": None}}
            assert tasks["task2"]["output"] == {"result": {"count": 3, "ok": True}}
            assert tasks["task3"]["output"] == {"result": {"saved": {"count": 3, "ok": True}}}
            for task in state["tasks"]:
                assert task["status"] == "completed"
                assert task["attempts"] == 1
                assert task["lastError"] is None
                assert task["startedAt"] is not None
                assert task["completedAt"] is not None
            assert {"createdAt", "updatedAt", "workflowVersion"} <= state.keys()

    run(main())


def test_original_readme_one_task_registration(server: LiveServer) -> None:
    """The README's literal curl lines: a one-task workflow, a run, its status and stream."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            body = (
                '{"id":"example-workflow","tasks":[{"id":"task1","name":"Fetch Data",'
                '"handler":"fetch_data"}]}'
            )
            headers = {"Content-Type": "application/json"}
            async with s.post(f"{server.url}/workflows", data=body, headers=headers) as r:
                assert r.status == 201
            async with s.post(
                f"{server.url}/runs", data='{"workflowId":"example-workflow"}', headers=headers
            ) as r:
                assert r.status == 201
                run_id = (await r.json())["id"]
            events = await wait_finished(s, server.url, run_id)
            assert events[-1].event == "RunCompleted"
            _, _, state = await _get(s, f"{server.url}/runs/{run_id}")
            assert state["status"] == "completed"

    run(main())


def test_workflow_versions(server: LiveServer) -> None:
    """Registering again is 200 and records nothing; a change is version 2; both readable."""

    async def main() -> None:
        url = server.url
        changed = copy.deepcopy(EXAMPLE_WORKFLOW)
        changed["description"] = "second"
        async with aiohttp.ClientSession() as s:
            assert (await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW))[0] == 201
            top = server.store.max_position()
            status, _, body = await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            assert (status, body["version"]) == (200, 1)
            assert server.store.max_position() == top
            status, _, body = await _post(s, f"{url}/workflows", changed)
            assert (status, body["version"]) == (201, 2)
            status, _, listed = await _get(s, f"{url}/workflows")
            assert status == 200
            assert [(w["id"], w["version"]) for w in listed["workflows"]] == [
                ("example-workflow", 2)
            ]
            status, _, latest = await _get(s, f"{url}/workflows/example-workflow")
            assert latest["version"] == 2
            assert latest["definition"]["description"] == "second"
            assert "registeredAt" in latest
            status, _, first = await _get(s, f"{url}/workflows/example-workflow?version=1")
            assert first["version"] == 1
            assert "description" not in first["definition"]
            _is_problem(*await _get(s, f"{url}/workflows/example-workflow?version=3"), 404)
            _is_problem(*await _get(s, f"{url}/workflows/nope"), 404)
            _is_problem(*await _get(s, f"{url}/workflows/example-workflow?version=x"), 400)

    run(main())


def test_invalid_workflows_are_refused_and_store_nothing(server: LiveServer) -> None:
    """400 for malformed JSON, 422 with located errors for a bad document; nothing stored."""

    async def main() -> None:
        url = f"{server.url}/workflows"
        cyclic = {
            "id": "loop",
            "tasks": [
                {"id": "a", "handler": "noop", "dependencies": ["b"]},
                {"id": "b", "handler": "noop", "dependencies": ["a"]},
            ],
        }
        async with aiohttp.ClientSession() as s:
            top = server.store.max_position()
            headers = {"Content-Type": "application/json"}
            async with s.post(url, data="{not json", headers=headers) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 400)
            async with s.post(url, data="", headers=headers) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 400)
            status, headers_, body = await _post(s, url, {"id": "x", "tasks": "nope"})
            _is_problem(status, headers_, body, 422)
            assert body["errors"] == [{"path": "$.tasks", "message": "Expected `array`, got `str`"}]
            status, headers_, body = await _post(s, url, cyclic)
            _is_problem(status, headers_, body, 422)
            assert body["errors"][0]["path"] == "$.tasks"
            assert (
                "a -> b -> a" in body["errors"][0]["message"]
                or "b -> a -> b" in (body["errors"][0]["message"])
            )
            status, headers_, body = await _post(
                s, url, {"id": "bad id!", "tasks": [{"id": "t", "handler": "noop"}]}
            )
            _is_problem(status, headers_, body, 422)
            assert body["errors"][0]["path"] == "$.id"
            assert server.store.max_position() == top
            assert server.store.list_workflows() == []

    run(main())


def test_runs_idempotency(server: LiveServer) -> None:
    """A repeated key answers 200 with the same run; other parameters 409; header works too."""

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            request = {"workflowId": "example-workflow", "idempotencyKey": "k1", "parameters": {}}
            status, _, first = await _post(s, f"{url}/runs", request)
            assert status == 201
            status, _, again = await _post(s, f"{url}/runs", request)
            assert (status, again["id"]) == (200, first["id"])
            top = server.store.max_position()
            other = {**request, "parameters": {"x": 1}}
            status, headers, body = await _post(s, f"{url}/runs", other)
            _is_problem(status, headers, body, 409)
            assert "k1" in body["detail"]
            status, _, by_header = await _post(
                s,
                f"{url}/runs",
                {"workflowId": "example-workflow", "parameters": {}},
                headers={"Idempotency-Key": "k1"},
            )
            assert (status, by_header["id"]) == (200, first["id"])
            status, headers, body = await _post(
                s, f"{url}/runs", request, headers={"Idempotency-Key": "k2"}
            )
            _is_problem(status, headers, body, 422)
            assert body["errors"][0]["path"] == "$.idempotencyKey"
            status, _, fresh = await _post(
                s,
                f"{url}/runs",
                {"workflowId": "example-workflow"},
                headers={"Idempotency-Key": "k3"},
            )
            assert status == 201
            assert fresh["idempotencyKey"] == "k3"
            await wait_finished(s, url, first["id"])
            await wait_finished(s, url, fresh["id"])
            assert server.store.read_run(first["id"])[-1].name == "RunCompleted"
            assert top < server.store.max_position()  # only k3's run added events

    run(main())


def test_bad_run_requests(server: LiveServer) -> None:
    """Unknown workflow 404, missing handler or bad fields 422, bad JSON 400; nothing stored."""

    async def main() -> None:
        url = f"{server.url}/runs"
        async with aiohttp.ClientSession() as s:
            await _post(
                s,
                f"{server.url}/workflows",
                {"id": "needs", "tasks": [{"id": "t", "handler": "not_registered"}]},
            )
            top = server.store.max_position()
            _is_problem(*await _post(s, url, {"workflowId": "nope"}), 404)
            status, headers, body = await _post(s, url, {"workflowId": "needs"})
            _is_problem(status, headers, body, 422)
            assert "not_registered" in body["errors"][0]["message"]
            status, headers, body = await _post(s, url, {"workflowId": "needs", "params": {}})
            _is_problem(status, headers, body, 422)
            assert body["errors"][0]["path"] == "$"
            status, headers, body = await _post(s, url, {"workflowId": "x", "parameters": [1]})
            _is_problem(status, headers, body, 422)
            assert body["errors"][0]["path"] == "$.parameters"
            _is_problem(*await _post(s, url, {"workflowId": "x", "idempotencyKey": ""}), 422)
            _is_problem(*await _post(s, url, {"workflowId": "x", "version": 0}), 422)
            _is_problem(*await _post(s, url, [1, 2]), 422)
            async with s.post(
                url, data=b"\xff\xfe", headers={"Content-Type": "application/json"}
            ) as r:
                assert r.status == 400
            assert server.store.max_position() == top

    run(main())


def test_run_list_filters_and_pages(server: LiveServer, gates: Any) -> None:
    """GET /runs filters by workflow and status, pages with a cursor, refuses bad queries."""

    async def main() -> None:
        url = server.url
        blocked = {
            "id": "blocked",
            "tasks": [{"id": "t", "handler": "gate", "inputs": {"gate": "g"}}],
        }
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            await _post(s, f"{url}/workflows", blocked)
            ids = []
            for _ in range(5):
                _, _, body = await _post(s, f"{url}/runs", {"workflowId": "example-workflow"})
                ids.append(body["id"])
            for run_id in ids:
                await wait_finished(s, url, run_id)
            _, _, running = await _post(s, f"{url}/runs", {"workflowId": "blocked"})
            _, _, page = await _get(s, f"{url}/runs?workflowId=example-workflow&limit=2")
            seen = [r["id"] for r in page["runs"]]
            assert len(seen) == 2
            while page["nextCursor"]:
                _, _, page = await _get(
                    s,
                    f"{url}/runs?workflowId=example-workflow&limit=2&cursor={page['nextCursor']}",
                )
                seen += [r["id"] for r in page["runs"]]
            assert seen == list(reversed(ids))
            _, _, page = await _get(s, f"{url}/runs?status=running")
            assert [r["id"] for r in page["runs"]] == [running["id"]]
            assert page["runs"][0]["workflowId"] == "blocked"
            _, _, page = await _get(s, f"{url}/runs?status=completed&limit=1000")
            assert len(page["runs"]) == 5
            _is_problem(*await _get(s, f"{url}/runs?status=weird"), 400)
            _is_problem(*await _get(s, f"{url}/runs?limit=0"), 400)
            _is_problem(*await _get(s, f"{url}/runs?limit=1001"), 400)
            _is_problem(*await _get(s, f"{url}/runs?limit=ten"), 400)
            _is_problem(*await _get(s, f"{url}/runs?cursor=zzz"), 400)
            gates.open("g")
            await wait_finished(s, url, running["id"])

    run(main())


def test_run_state_as_of_an_event(server: LiveServer) -> None:
    """GET /runs/{id}?at=N is the state right after event N; bad or future N is 400."""

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            _, _, body = await _post(s, f"{url}/runs", {"workflowId": "example-workflow"})
            run_id = body["id"]
            events = await wait_finished(s, url, run_id)
            status, _, first = await _get(s, f"{url}/runs/{run_id}?at=1")
            assert status == 200
            assert first["version"] == 1
            assert first["status"] == "running"
            assert all(t["status"] == "pending" for t in first["tasks"])
            _, _, second = await _get(s, f"{url}/runs/{run_id}?at=2")
            assert second["tasks"][0]["status"] == "scheduled"
            _, _, last = await _get(s, f"{url}/runs/{run_id}?at={len(events)}")
            assert last["status"] == "completed"
            _is_problem(*await _get(s, f"{url}/runs/{run_id}?at={len(events) + 1}"), 400)
            _is_problem(*await _get(s, f"{url}/runs/{run_id}?at=0"), 400)
            _is_problem(*await _get(s, f"{url}/runs/{run_id}?at=-1"), 400)
            _is_problem(*await _get(s, f"{url}/runs/{run_id}?at=x"), 400)
            _is_problem(*await _get(s, f"{url}/runs/00000000-0000-0000-0000-000000000000"), 404)
            _is_problem(*await _get(s, f"{url}/runs/not-a-uuid"), 404)

    run(main())


def test_history_pages(server: LiveServer) -> None:
    """GET /runs/{id}/events pages the history as JSON with after, limit and nextAfter."""

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            _, _, body = await _post(s, f"{url}/runs", {"workflowId": "example-workflow"})
            run_id = body["id"]
            streamed = await wait_finished(s, url, run_id)
            status, _, page = await _get(s, f"{url}/runs/{run_id}/events?limit=4")
            assert status == 200
            assert page["runId"] == run_id
            assert [e["version"] for e in page["events"]] == [1, 2, 3, 4]
            assert page["nextAfter"] == 4
            collected = page["events"]
            while page["nextAfter"] is not None:
                _, _, page = await _get(
                    s, f"{url}/runs/{run_id}/events?after={page['nextAfter']}&limit=4"
                )
                collected += page["events"]
            assert [e["type"] for e in collected] == [m.event for m in streamed]
            assert [list(e)[:4] for e in collected] == [
                ["type", "runId", "version", "timestamp"]
            ] * len(collected)
            assert collected == [m.json() for m in streamed]
            _, _, empty = await _get(s, f"{url}/runs/{run_id}/events?after=1000")
            assert empty["events"] == []
            assert empty["nextAfter"] is None
            _is_problem(*await _get(s, f"{url}/runs/{run_id}/events?after=-1"), 400)
            _is_problem(*await _get(s, f"{url}/runs/{run_id}/events?limit=0"), 400)
            _is_problem(
                *await _get(s, f"{url}/runs/00000000-0000-0000-0000-000000000000/events"), 404
            )

    run(main())


def test_cancel(server: LiveServer, gates: Any) -> None:
    """POST /runs/{id}/cancel is 202 and the run ends cancelled; again is 409; unknown 404."""

    async def main() -> None:
        url = server.url
        workflow = {
            "id": "slow",
            "tasks": [
                {"id": "a", "handler": "gate", "inputs": {"gate": "cancel-me"}},
                {"id": "b", "handler": "noop", "dependencies": ["a"]},
            ],
        }
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", workflow)
            _, _, body = await _post(s, f"{url}/runs", {"workflowId": "slow"})
            run_id = body["id"]
            gates.wait_entered("cancel-me")
            _is_problem(*await _post(s, f"{url}/runs/{run_id}/cancel", {"reason": 5}), 422)
            status, _, state = await _post(s, f"{url}/runs/{run_id}/cancel", {"reason": "test"})
            assert status == 202
            assert state["cancelRequested"] is True
            events = await wait_finished(s, url, run_id)
            assert events[-1].event == "RunCancelled"
            assert events[-1].json()["reason"] == "test"
            _, _, final = await _get(s, f"{url}/runs/{run_id}")
            assert final["status"] == "cancelled"
            assert {t["id"]: t["status"] for t in final["tasks"]}["b"] == "cancelled"
            async with s.post(f"{url}/runs/{run_id}/cancel", headers=JSON_TYPE) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 409)
            unknown = f"{url}/runs/00000000-0000-0000-0000-000000000001/cancel"
            async with s.post(unknown, headers=JSON_TYPE) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 404)

    run(main())


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/runs/a/b/c", 404),
        ("DELETE", "/runs", 405),
        ("PUT", "/workflows", 405),
        ("POST", "/healthz", 405),
    ],
)
def test_unknown_routes_and_methods(
    server: LiveServer, method: str, path: str, expected: int
) -> None:
    """Unknown routes are 404 and wrong methods 405 (with Allow), as problem+json."""

    async def main() -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, f"{server.url}{path}") as r,
        ):
            _is_problem(r.status, dict(r.headers), await r.json(content_type=None), expected)
            if expected == 405:
                assert "Allow" in r.headers

    run(main())


def test_body_limit_and_media_type(servers: Any) -> None:
    """A body over the limit is 413 (declared or chunked); a non-JSON media type is 415."""
    server = servers(body_limit=2048)

    async def main() -> None:
        url = f"{server.url}/workflows"
        big = {"id": "big", "description": "x" * 4000, "tasks": [{"id": "t", "handler": "noop"}]}
        async with aiohttp.ClientSession() as s:
            _is_problem(*await _post(s, url, big), 413)

            async def chunks() -> Any:
                for _ in range(10):
                    yield b" " * 1000
                yield b"{}"

            async with s.post(
                url, data=chunks(), headers={"Content-Type": "application/json"}
            ) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 413)
            async with s.post(url, data="id=x", headers={"Content-Type": "text/plain"}) as r:
                _is_problem(r.status, dict(r.headers), await r.json(content_type=None), 415)
            async with s.post(
                url,
                data='{"id": "ok", "tasks": [{"id": "t", "handler": "noop"}]}',
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                assert r.status == 201
            assert server.store.list_workflows()[0].workflow_id == "ok"

    run(main())


def test_health_readiness_and_metrics(server: LiveServer) -> None:
    """/healthz answers; /readyz is 200 with the store up and 503 once it is closed."""

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            assert (await _get(s, f"{url}/healthz"))[2] == {"status": "ok"}
            assert (await _get(s, f"{url}/readyz"))[2] == {"status": "ready"}
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            _, _, body = await _post(s, f"{url}/runs", {"workflowId": "example-workflow"})
            await wait_finished(s, url, body["id"])
            async with s.get(f"{url}/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
            for name in (
                "flowweaver_runs_started_total",
                "flowweaver_runs_finished_total",
                "flowweaver_task_duration_seconds_bucket",
                "flowweaver_task_retries_total",
                "flowweaver_worker_queue_depth",
                "flowweaver_events_appended_total",
                "flowweaver_append_seconds_bucket",
                "flowweaver_sse_subscribers",
                "flowweaver_sse_events_sent_total",
                "flowweaver_http_requests_total",
                "flowweaver_http_connections",
            ):
                assert name in text, name
            assert 'flowweaver_runs_started_total{workflow="example-workflow"}' in text
            assert 'route="/runs/{runId}"' in text or 'route="/events/{runId}"' in text

    run(main())


def test_readiness_fails_when_the_store_does_not_answer(servers: Any) -> None:
    """/readyz is 503 problem+json when store.ping() fails; /healthz stays 200."""

    class DownStore(MemoryEventStore):
        def ping(self) -> None:
            raise StoreError("connection refused")

    server = servers(store=DownStore())

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await _get(s, f"{server.url}/readyz")
            _is_problem(status, headers, body, 503)
            assert "connection refused" in body["detail"]
            assert (await _get(s, f"{server.url}/healthz"))[0] == 200

    run(main())


def test_store_failure_is_503(servers: Any) -> None:
    """A StoreError while answering is a 503 problem with Retry-After, never a 500."""

    class FlakyStore(MemoryEventStore):
        def list_runs(self, **kw: Any) -> Any:
            raise StoreError("disk on fire")

    server = servers(store=FlakyStore())

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await _get(s, f"{server.url}/runs")
            _is_problem(status, headers, body, 503)
            assert headers["Retry-After"] == "1"

    run(main())


def test_openapi_matches_the_routes(server: LiveServer) -> None:
    """Every route of the app is in /openapi.json with its methods, and nothing else is."""

    async def main() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s:
            status, _, doc = await _get(s, f"{server.url}/openapi.json")
            assert status == 200
            return doc

    doc = run(main())
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert server.app is not None
    routed = {
        (route.resource.canonical, route.method)
        for route in server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == routed
    assert server.call(lambda: server.app[HUB].subscribers) == 0  # type: ignore[index]


def test_a_hanging_store_is_not_ready_and_holds_one_thread_at_most(servers: Any) -> None:
    """/readyz gives up after its timeout; while that ping hangs, later probes fail at once."""
    release = threading.Event()

    class HangingStore(MemoryEventStore):
        def ping(self) -> None:
            release.wait(20)

    server = servers(store=HangingStore(), ready_timeout=0.2)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, body = await _get(s, f"{server.url}/readyz")
            _is_problem(status, headers, body, 503)
            status, headers, body = await _get(s, f"{server.url}/readyz")
            _is_problem(status, headers, body, 503)
            assert "previous ping" in body["detail"]
            # Other requests still have their threads.
            assert (await _get(s, f"{server.url}/runs"))[0] == 200
            release.set()
            while (await _get(s, f"{server.url}/readyz"))[0] != 200:  # noqa: ASYNC110 - an HTTP probe, not a local flag
                await asyncio.sleep(0)  # the released ping is finishing; probe again

    run(main())


def test_head_on_streams_answers_headers_only(server: LiveServer) -> None:
    """HEAD on a stream checks the request and answers its headers without following."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{server.url}/workflows", EXAMPLE_WORKFLOW)
            _, _, body = await _post(s, f"{server.url}/runs", {"workflowId": "example-workflow"})
            for path in (f"/events/{body['id']}", "/events"):
                async with s.head(f"{server.url}{path}") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/event-stream")
            async with s.head(f"{server.url}/events/{uuid.uuid4()}") as r:
                assert r.status == 404

    run(main())


def test_a_bad_query_parameter_is_a_400_that_names_it(server: LiveServer) -> None:
    """Every malformed or out-of-range query parameter is a 400 located at $.query.NAME."""

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            await _post(s, f"{url}/workflows", EXAMPLE_WORKFLOW)
            _, _, body = await _post(s, f"{url}/runs", {"workflowId": "example-workflow"})
            run_id = body["id"]
            await wait_finished(s, url, run_id)
            for path, name in [
                ("/workflows/example-workflow?version=0", "version"),
                (f"/workflows/example-workflow?version={2**31 + 1}", "version"),
                ("/runs?status=weird", "status"),
                ("/runs?limit=x&workflowId=example-workflow", "limit"),
                (f"/runs/{run_id}?at=", "at"),
                (f"/runs/{run_id}?at={2**63}", "at"),
                (f"/runs/{run_id}/events?after=-1", "after"),
                (f"/runs/{run_id}/events?limit=1001", "limit"),
            ]:
                answer = await _get(s, url + path)
                _is_problem(*answer, 400)
                problem = answer[2]
                assert [e["path"] for e in problem["errors"]] == [f"$.query.{name}"], path
                assert name in problem["detail"], problem
            # Unknown parameters are ignored; a repeated one counts with its first value.
            status, _, page = await _get(s, f"{url}/runs?limit=1&limit=x&colour=blue")
            assert (status, len(page["runs"])) == (200, 1)

    run(main())
