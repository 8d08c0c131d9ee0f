"""Audit filters on a live server: ?types= and ?runId= on the SSE feeds and the JSON pages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from flowweaver.api import audit_routes
from flowweaver.api.app import HUB
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.domain.ids import run_id_for_key

from .conftest import (
    Gates,
    LiveServer,
    Message,
    collect,
    events_of,
    run,
    sse_messages,
    wait_finished,
)

SSE = "text/event-stream"
JSON = "application/json"
PROBLEM = "application/problem+json"
FLAKY = {
    "id": "flaky",
    "tasks": [
        {
            "id": "f",
            "handler": "fail",
            "inputs": {"times": 1},
            "retry": {"maxAttempts": 2, "initialDelay": 0},
        },
        {"id": "g", "handler": "noop", "dependencies": ["f"]},
    ],
}


async def _start(session: aiohttp.ClientSession, url: str, workflow: dict[str, Any]) -> str:
    async with session.post(f"{url}/workflows", json=workflow) as response:
        assert response.status in (200, 201)
    async with session.post(f"{url}/runs", json={"workflowId": workflow["id"]}) as response:
        assert response.status == 201
        run_id: str = (await response.json())["id"]
    return run_id


async def _two_runs(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    """A run of the README example and one whose first task fails once: both ended."""
    plain = await _start(session, url, EXAMPLE_WORKFLOW)
    flaky = await _start(session, url, FLAKY)
    await wait_finished(session, url, plain)
    await wait_finished(session, url, flaky)
    return plain, flaky


async def _log(session: aiohttp.ClientSession, url: str, query: str = "") -> Any:
    async with session.get(f"{url}/events?{query}", headers={"Accept": JSON}) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == JSON
        return await response.json()


async def _whole_log(session: aiohttp.ClientSession, url: str) -> list[Any]:
    page = await _log(session, url, "limit=1000")
    assert page["next"] is None
    return list(page["events"])


def _is_bad(status: int, content_type: str, path: str, body: Any) -> None:
    assert (status, content_type) == (400, PROBLEM), body
    assert body["errors"][0]["path"] == path


def test_json_log_pages_carry_positions_and_filter(sqlite_server: LiveServer) -> None:
    """GET /events as JSON: every run's events with positions; types and runId filter it."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            plain, flaky = await _two_runs(s, url)
            every = await _whole_log(s, url)
            positions = [e["position"] for e in every]
            assert positions == sorted(positions)
            assert {e["runId"] for e in every} == {plain, flaky}
            # paging by limit: next is the last position of a full page
            first = await _log(s, url, "limit=3")
            assert first["events"] == every[:3]
            assert first["next"] == positions[2]
            second = await _log(s, url, f"after={first['next']}&limit=3")
            assert second["events"] == every[3:6]
            # filtered by type
            wanted = {"TaskRetried", "RunCompleted"}
            page = await _log(s, url, "types=TaskRetried,RunCompleted")
            assert page["events"] == [e for e in every if e["type"] in wanted]
            assert [e["type"] for e in page["events"]].count("TaskRetried") == 1
            assert page["next"] is None
            # filtered by run, and by both
            page = await _log(s, url, f"runId={flaky}")
            assert page["events"] == [e for e in every if e["runId"] == flaky]
            page = await _log(s, url, f"runId={plain}&types=TaskRetried")
            assert page["events"] == []

    run(main())


def test_since_and_until_keep_the_events_stamped_between_them(sqlite_server: LiveServer) -> None:
    """?since= and ?until= bound the JSON log and a run's history by timestamp, both ends
    included, on their own or with types; an instant with an offset other than Z works."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            plain, flaky = await _two_runs(s, url)
            every = await _whole_log(s, url)
            stamps = sorted({e["timestamp"] for e in every})
            assert len(stamps) > 3
            low, high = stamps[1], stamps[-2]

            def between(e: Any) -> bool:
                return bool(low <= e["timestamp"] <= high)

            page = await _log(s, url, f"since={low}&until={high}&limit=1000")
            assert page["events"] == [e for e in every if between(e)]
            assert every[0] not in page["events"] or every[0]["timestamp"] >= low
            page = await _log(s, url, f"since={high}&types=RunCompleted")
            assert page["events"] == [
                e for e in every if e["timestamp"] >= high and e["type"] == "RunCompleted"
            ]
            page = await _log(s, url, "until=2000-01-01T02:00:00%2B02:00")
            assert page["events"] == []
            async with s.get(
                f"{url}/runs/{flaky}/events?since={low}&until={high}", headers={"Accept": JSON}
            ) as response:
                assert response.status == 200
                history = (await response.json())["events"]
            assert history == [
                {k: v for k, v in e.items() if k != "position"}
                for e in every
                if e["runId"] == flaky and between(e)
            ]
            assert plain

    run(main())


def test_a_filtered_json_page_scans_a_bounded_stretch_and_gives_a_cursor(
    sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With few matches, a page stops after SCAN_BUDGET records and says where to go on."""
    monkeypatch.setattr(audit_routes, "SCAN_BUDGET", 5)
    monkeypatch.setattr(audit_routes, "SCAN_CHUNK", 2)

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            await _two_runs(s, url)
            monkeypatch.setattr(audit_routes, "SCAN_BUDGET", 10_000)
            every = await _whole_log(s, url)
            monkeypatch.setattr(audit_routes, "SCAN_BUDGET", 5)
            completed = [e for e in every if e["type"] == "RunCompleted"]
            assert len(every) > 10
            page = await _log(s, url, "types=RunCompleted")
            assert page["events"] == [e for e in every[:5] if e["type"] == "RunCompleted"]
            assert page["next"] == every[4]["position"]  # the last record looked at
            found: list[Any] = []
            after = 0
            pages = 0
            while after is not None:
                page = await _log(s, url, f"types=RunCompleted&after={after}")
                found += page["events"]
                after = page["next"]
                pages += 1
            assert found == completed
            assert pages == -(-len(every) // 5) + (1 if len(every) % 5 == 0 else 0)

    run(main())


def test_run_history_filtered_by_type(sqlite_server: LiveServer) -> None:
    """GET /runs/{id}/events?types= pages only those events, by run version."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            _, flaky = await _two_runs(s, url)
            async with s.get(f"{url}/runs/{flaky}/events?types=TaskStarted,TaskFailed") as r:
                page = await r.json()
            types = [e["type"] for e in page["events"]]
            assert types == ["TaskStarted", "TaskFailed", "TaskStarted", "TaskStarted"]
            assert page["nextAfter"] is None
            async with s.get(f"{url}/runs/{flaky}/events?types=TaskStarted&limit=1") as r:
                page = await r.json()
            assert len(page["events"]) == 1
            assert page["nextAfter"] == page["events"][0]["version"]

    run(main())


async def _next_event(messages: AsyncIterator[Message]) -> Message:
    """Return the stream's next event message (comments and the retry line skipped)."""
    async with asyncio.timeout(20):
        async for message in messages:
            if message.event is not None:
                return message
    raise AssertionError("the stream ended")


def test_sse_feed_delivers_only_matching_events_and_resumes(sqlite_server: LiveServer) -> None:
    """The global feed with types sends only those, replayed then live, ids being log
    positions; Last-Event-ID resumes after the last one seen."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            await _two_runs(s, url)
            every = await _whole_log(s, url)
            wanted = [e for e in every if e["type"] in ("TaskRetried", "RunCompleted")]
            assert sorted(e["type"] for e in wanted) == [
                "RunCompleted",
                "RunCompleted",
                "TaskRetried",
            ]
            feed = f"{url}/events?types=TaskRetried,RunCompleted"
            async with s.get(feed, headers={"Accept": SSE}) as response:
                messages = sse_messages(response)
                got = [await _next_event(messages) for _ in wanted]
                assert [m.json() for m in got] == _without_position(wanted)
                assert [m.id for m in got] == [str(e["position"]) for e in wanted]
                third = await _start(s, url, EXAMPLE_WORKFLOW)
                live = await _next_event(messages)  # nothing of the third run but its end
            assert (live.event, live.json()["runId"]) == ("RunCompleted", third)
            ends = [e for e in await _whole_log(s, url) if e["runId"] == third]
            assert live.id == str(ends[-1]["position"])
            resume = {"Accept": SSE, "Last-Event-ID": got[0].id or ""}
            async with s.get(feed, headers=resume) as response:
                messages = sse_messages(response)
                again = [await _next_event(messages) for _ in range(3)]
            assert [m.id for m in again] == [got[1].id, got[2].id, live.id]

    run(main())


def test_sse_feed_filtered_by_run(sqlite_server: LiveServer) -> None:
    """?runId= on the global feed sends that run's events only, by log position."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            _, flaky = await _two_runs(s, url)
            mine = [e for e in await _whole_log(s, url) if e["runId"] == flaky]
            async with s.get(f"{url}/events?runId={flaky}", headers={"Accept": SSE}) as response:
                messages = sse_messages(response)
                got = [await _next_event(messages) for _ in mine]
            assert [m.id for m in got] == [str(e["position"]) for e in mine]

    run(main())


def test_filtered_and_unfiltered_feeds_side_by_side(sqlite_server: LiveServer) -> None:
    """Live, three feeds at once (every event, one type, one run) each get exactly theirs."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            await _two_runs(s, url)  # something stored before the feeds start
            top = (await _whole_log(s, url))[-1]["position"]
            flaky = run_id_for_key("flaky", "side-by-side")  # known before the run starts
            feeds = {
                "every": f"{url}/events?after={top}",
                "started": f"{url}/events?after={top}&types=TaskStarted",
            }
            async with contextlib.AsyncExitStack() as stack:
                streams = {}
                for name, feed in feeds.items():
                    response = await stack.enter_async_context(s.get(feed, headers={"Accept": SSE}))
                    streams[name] = sse_messages(response)
                plain = await _start(s, url, EXAMPLE_WORKFLOW)
                # a runId filter before the run exists is a 404: subscribe once it does
                body = {"workflowId": "flaky", "idempotencyKey": "side-by-side"}
                async with s.post(f"{url}/workflows", json=FLAKY):
                    pass
                async with s.post(f"{url}/runs", json=body) as created:
                    assert (await created.json())["id"] == flaky
                response = await stack.enter_async_context(
                    s.get(f"{url}/events?after={top}&runId={flaky}", headers={"Accept": SSE})
                )
                streams["flaky"] = sse_messages(response)
                await wait_finished(s, url, plain)
                await wait_finished(s, url, flaky)
                new = [e for e in await _whole_log(s, url) if e["position"] > top]
                expected = {
                    "every": new,
                    "started": [e for e in new if e["type"] == "TaskStarted"],
                    "flaky": [e for e in new if e["runId"] == flaky],
                }
                for name, wanted in expected.items():
                    got = [await _next_event(streams[name]) for _ in wanted]
                    assert [m.id for m in got] == [str(e["position"]) for e in wanted], name
                    assert [m.json() for m in got] == _without_position(wanted), name
                # one more run: only the unfiltered and the TaskStarted feeds see it
                third = await _start(s, url, EXAMPLE_WORKFLOW)
                await wait_finished(s, url, third)
                assert (await _next_event(streams["every"])).json()["runId"] == third
                started = await _next_event(streams["started"])
                assert (started.event, started.json()["runId"]) == ("TaskStarted", third)

    run(main())


def test_run_stream_filtered_live_ends_after_the_run(
    sqlite_server: LiveServer, gates: Gates
) -> None:
    """A run's stream with types sends matching events live and still ends with the run,
    though its terminal event is not one of them; resuming by version skips what was sent."""

    async def main() -> None:
        url = sqlite_server.url
        workflow = {
            "id": "gated",
            "tasks": [
                {"id": "a", "handler": "gate", "inputs": {"gate": "audit-a"}},
                {"id": "b", "handler": "noop", "dependencies": ["a"]},
            ],
        }
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, url, workflow)
            gates.wait_entered("audit-a")
            stream = f"{url}/runs/{run_id}/events?types=TaskCompleted"
            async with s.get(stream, headers={"Accept": SSE}) as response:
                await _until_following(sqlite_server, run_id)  # what comes next is live
                gates.open("audit-a")
                async with asyncio.timeout(20):
                    got = events_of(await collect(response))  # ends by itself
            assert [m.event for m in got] == ["TaskCompleted", "TaskCompleted"]
            assert [m.json()["taskId"] for m in got] == ["a", "b"]
            async with s.get(
                f"{url}/events/{run_id}?types=TaskCompleted",
                headers={"Last-Event-ID": got[0].id or ""},
            ) as response:
                async with asyncio.timeout(20):
                    again = events_of(await collect(response))
            assert [m.id for m in again] == [got[1].id]

    run(main())


@pytest.mark.parametrize(
    ("path", "headers", "problem"),
    [
        ("/events?types=RunPaused,Nope", {"Accept": SSE}, "$.query.types"),
        ("/events?types=RunPaused,Nope", {"Accept": JSON}, "$.query.types"),
        ("/events?types=,", {"Accept": JSON}, "$.query.types"),
        ("/events?runId=xyz", {"Accept": SSE}, "$.query.runId"),
        ("/events?runId=xyz", {"Accept": JSON}, "$.query.runId"),
        ("/events?limit=0", {"Accept": JSON}, "$.query.limit"),
        ("/events?after=-1", {"Accept": JSON}, "$.query.after"),
        ("/runs/RUN/events?types=taskstarted", {}, "$.query.types"),
        ("/runs/RUN/events?types=Nope", {"Accept": SSE}, "$.query.types"),
        ("/events/RUN?types=Nope", {}, "$.query.types"),
        ("/events?since=yesterday", {"Accept": JSON}, "$.query.since"),
        ("/events?until=2026-01-01T00:00:00", {"Accept": SSE}, "$.query.until"),
        (
            "/events?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            {"Accept": JSON},
            "$.query.until",
        ),
        ("/runs/RUN/events?since=2026-13-01T00:00:00Z", {}, "$.query.since"),
    ],
)
def test_bad_filters_are_400(
    sqlite_server: LiveServer, path: str, headers: dict[str, str], problem: str
) -> None:
    """An unknown type name (names are case-sensitive), an empty list or a runId that is no
    UUID: 400 problem+json naming the parameter, before any stream starts."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, url, EXAMPLE_WORKFLOW)
            async with s.get(url + path.replace("RUN", run_id), headers=headers) as response:
                _is_bad(
                    response.status,
                    response.content_type,
                    problem,
                    await response.json(content_type=None),
                )

    run(main())


def test_unknown_run_in_a_filter_is_404(sqlite_server: LiveServer) -> None:
    """?runId= of no run, and types on an unknown run's history: 404 problem+json."""

    async def main() -> None:
        url = sqlite_server.url
        nobody = uuid.uuid4()
        async with aiohttp.ClientSession() as s:
            for path, accept in (
                (f"/events?runId={nobody}", SSE),
                (f"/events?runId={nobody}", JSON),
                (f"/runs/{nobody}/events?types=RunStarted", JSON),
            ):
                async with s.get(url + path, headers={"Accept": accept}) as response:
                    assert (response.status, response.content_type) == (404, PROBLEM), path

    run(main())


async def _until_following(server: LiveServer, run_id: str) -> None:
    """Wait until a stream of the run has replayed the store and waits for live events."""
    assert server.app is not None
    hub = server.app[HUB]

    def following() -> bool:
        return any(sub.idle for sub in hub._by_run.get(run_id, ()))

    async with asyncio.timeout(10):
        while not server.call(following):  # noqa: ASYNC110 - the state is on the server's loop
            await asyncio.sleep(0.01)


def _without_position(events: list[Any]) -> list[Any]:
    return [{k: v for k, v in e.items() if k != "position"} for e in events]
