"""Time travel over a live server on SQLite: GET /runs/{id}?asOf= and GET /runs/{id}/diff."""

from __future__ import annotations

import bisect
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from flowweaver import travel
from flowweaver.api.examples import EXAMPLE_WORKFLOW

from .conftest import LiveServer, run, wait_finished

PROBLEM = "application/problem+json"


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, Any]:
    async with session.get(url) as response:
        return response.status, response.content_type, await response.json(content_type=None)


async def _finished_run(session: aiohttp.ClientSession, url: str) -> tuple[str, list[Any]]:
    """Run the README example to its end; return its id and its events as JSON."""
    async with session.post(f"{url}/workflows", json=EXAMPLE_WORKFLOW) as response:
        assert response.status in (200, 201)
    async with session.post(f"{url}/runs", json={"workflowId": "example-workflow"}) as response:
        run_id = (await response.json())["id"]
    await wait_finished(session, url, run_id)
    status, _, page = await _get(session, f"{url}/runs/{run_id}/events")
    assert status == 200
    return run_id, page["events"]


def _stamp(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _bad(status: int, content_type: str, body: Any, path: str | None = None) -> None:
    assert status == 400, body
    assert content_type == PROBLEM
    if path is not None:
        assert body["errors"][0]["path"] == path


def test_as_of_each_event_instant_is_the_last_event_stamped_then(
    sqlite_server: LiveServer,
) -> None:
    """An instant equal to an event's stamp includes it; after the last one is the head."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id, events = await _finished_run(s, sqlite_server.url)
            stamps = [_stamp(e) for e in events]
            assert stamps == sorted(stamps)
            url = f"{sqlite_server.url}/runs/{run_id}"
            for instant in [*stamps, stamps[-1] + timedelta(days=1)]:
                for text in (instant.isoformat(), instant.isoformat().replace("+00:00", "Z")):
                    status, _, state = await _get(s, f"{url}?asOf={quote(text)}")
                    assert status == 200, state
                    assert state["version"] == bisect.bisect_right(stamps, instant)
            # a literal + in the query (read as a space) is still the offset's sign
            shifted = (stamps[-1] + timedelta(hours=2)).replace(tzinfo=None).isoformat()
            status, _, state = await _get(s, f"{url}?asOf={shifted}+02:00")
            assert (status, state["version"]) == (200, len(events))
            status, _, state = await _get(s, f"{url}?asOf={quote(shifted + '+02:00')}")
            assert (status, state["version"]) == (200, len(events))

    run(main())


def test_as_of_refusals(sqlite_server: LiveServer) -> None:
    """Before the run began, both at and asOf, no offset, garbage: 400; unknown run: 404."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id, events = await _finished_run(s, sqlite_server.url)
            url = f"{sqlite_server.url}/runs/{run_id}"
            before = (_stamp(events[0]) - timedelta(microseconds=1)).isoformat()
            _bad(*await _get(s, f"{url}?asOf={quote(before)}"), path="$.query.asOf")
            now = quote(_stamp(events[-1]).isoformat())
            _bad(*await _get(s, f"{url}?asOf={now}&at=1"), path="$.query.asOf")
            _bad(*await _get(s, f"{url}?asOf=2026-01-01T00:00:00"), path="$.query.asOf")
            _bad(*await _get(s, f"{url}?asOf=last-tuesday"), path="$.query.asOf")
            _bad(*await _get(s, f"{url}?asOf={'9' * 100}"), path="$.query.asOf")
            status, content_type, _ = await _get(
                s, f"{sqlite_server.url}/runs/{uuid.uuid4()}?asOf={now}"
            )
            assert (status, content_type) == (404, PROBLEM)

    run(main())


def test_diff_over_http(sqlite_server: LiveServer) -> None:
    """The diff names changed run and task fields and lists events from+1..to."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id, events = await _finished_run(s, sqlite_server.url)
            head = len(events)
            status, _, body = await _get(
                s, f"{sqlite_server.url}/runs/{run_id}/diff?from=1&to={head}"
            )
            assert status == 200, body
            assert (body["runId"], body["from"], body["to"]) == (run_id, 1, head)
            assert body["run"]["status"] == ["running", "completed"]
            assert body["run"]["version"] == [1, head]
            assert body["tasks"]["task3"]["status"] == ["pending", "completed"]
            assert body["tasks"]["task3"]["output"] == [
                None,
                {"result": {"saved": {"count": 3, "ok": True}}},
            ]
            assert body["events"] == events[1:]
            assert (body["eventCount"], body["eventsTruncated"], body["nextAfter"]) == (
                head - 1,
                False,
                None,
            )
            status, _, body = await _get(s, f"{sqlite_server.url}/runs/{run_id}/diff?from=3&to=3")
            assert (status, body["run"], body["tasks"], body["events"]) == (200, {}, {}, [])

    run(main())


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("from=3&to=2", "$.query.to"),
        ("from=0&to=999", "$.query.to"),
        ("from=-1&to=2", "$.query.from"),
        ("from=1", "$.query.to"),
        ("from=x&to=2", "$.query.from"),
        ("to=2&from=99999999999999999999", "$.query.from"),
    ],
)
def test_diff_refuses_bad_ranges(sqlite_server: LiveServer, query: str, path: str) -> None:
    """0 <= from <= to <= head, both integers, to required: else a 400 naming the parameter."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id, _ = await _finished_run(s, sqlite_server.url)
            _bad(*await _get(s, f"{sqlite_server.url}/runs/{run_id}/diff?{query}"), path=path)

    run(main())


def test_diff_of_unknown_run_is_404(sqlite_server: LiveServer) -> None:
    """A run id nobody has, or one that is no UUID: 404 problem+json."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for run_id in (uuid.uuid4(), "nope"):
                status, content_type, _ = await _get(
                    s, f"{sqlite_server.url}/runs/{run_id}/diff?from=0&to=1"
                )
                assert (status, content_type) == (404, PROBLEM)

    run(main())


def test_diff_caps_its_events_and_says_how_to_page_on(
    sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap the events are cut: eventsTruncated, and nextAfter pages the history."""
    monkeypatch.setattr(travel, "MAX_DIFF_EVENTS", 4)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id, events = await _finished_run(s, sqlite_server.url)
            head = len(events)
            url = f"{sqlite_server.url}/runs/{run_id}"
            status, _, body = await _get(s, f"{url}/diff?from=2&to={head}")
            assert status == 200
            assert body["events"] == events[2:6]
            assert (body["eventCount"], body["eventsTruncated"], body["nextAfter"]) == (
                head - 2,
                True,
                6,
            )
            assert body["run"]["status"] == ["running", "completed"]  # the changes are whole
            status, _, page = await _get(s, f"{url}/events?after={body['nextAfter']}")
            assert page["events"] == events[6:]

    run(main())
