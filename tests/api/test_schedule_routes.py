"""Schedule routes on a real loopback server (SQLite): create or replace, list, show with the
next fire times, pause, resume, trigger, delete; 422 for bad input that stores nothing; and a
server whose scheduler fires a schedule every second."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowweaver.api.errors import PROBLEM_CONTENT_TYPE
from flowweaver.domain.ids import run_id_for_key
from flowweaver.domain.spec import decode_workflow
from flowweaver.store import SQLiteEventStore

from .conftest import JSON_TYPE, LiveServer, Servers, run

NOOP = {
    "id": "nightly",
    "tasks": [{"id": "t", "handler": "echo", "inputs": {"day": "$.params.day"}}],
}
DAILY = {
    "id": "daily-report",
    "workflowId": "nightly",
    "cron": "30 2 * * *",
    "timezone": "Europe/Berlin",
    "parameters": {"day": "today"},
}


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    kw: dict[str, Any] = {"json": body} if body is not None else {"headers": JSON_TYPE}
    if method == "GET":
        kw = {}
    async with session.request(method, url, **kw) as response:
        text = await response.read()
        data = await response.json(content_type=None) if text else None
        return response.status, dict(response.headers), data


@pytest.fixture
def sqlite_server(servers: Servers, tmp_path: Path) -> LiveServer:
    server = servers(store=SQLiteEventStore(str(tmp_path / "fw.db")))
    server.engine.register_workflow(NOOP)
    return server


def test_create_show_replace_and_list(sqlite_server: LiveServer) -> None:
    """POST creates (201) a schedule shown with its next five fire times; again is 200."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            status, headers, made = await call(s, "POST", f"{url}/schedules", DAILY)
            assert status == 201, made
            assert headers["Location"] == "/schedules/daily-report"
            assert (made["version"], made["paused"], made["overlap"]) == (1, False, "skip")
            assert made["catchupWindow"] == 60
            status, _, shown = await call(s, "GET", f"{url}/schedules/daily-report")
            assert status == 200
            fires = shown["nextFireTimes"]
            assert len(fires) == 5
            for fire in fires:
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT02:30:00\+0[12]:00", fire["local"]), fire
                assert fire["utc"].endswith("Z")
            status, _, same = await call(s, "POST", f"{url}/schedules", DAILY)
            assert (status, same["version"]) == (200, 1)
            changed = {**DAILY, "cron": "0 3 * * *", "overlap": "allow"}
            status, _, replaced = await call(s, "POST", f"{url}/schedules", changed)
            assert (status, replaced["version"], replaced["cron"]) == (200, 2, "0 3 * * *")
            status, _, listing = await call(s, "GET", f"{url}/schedules")
            assert [x["id"] for x in listing["schedules"]] == ["daily-report"]

    run(main())


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"cron": "61 * * * *"}, "$.cron"),
        ({"cron": "every day"}, "$.cron"),
        ({"timezone": "Mars/Olympus"}, "$.timezone"),
        ({"workflowId": "no-such-workflow"}, "$.workflowId"),
        ({"overlap": "queue"}, "$.overlap"),
        ({"catchupWindow": -5}, "$.catchupWindow"),
        ({"id": "bad id"}, "$.id"),
    ],
)
def test_bad_input_is_422_and_stores_nothing(
    sqlite_server: LiveServer, changes: dict[str, Any], path: str
) -> None:
    """A bad cron, zone, workflow, overlap or window is 422 naming the path; nothing stored."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            status, headers, body = await call(s, "POST", f"{url}/schedules", {**DAILY, **changes})
            assert status == 422, body
            assert headers["Content-Type"].startswith(PROBLEM_CONTENT_TYPE)
            assert path in [e["path"] for e in body["errors"]]
            _, _, listing = await call(s, "GET", f"{url}/schedules")
            assert listing == {"schedules": []}
        assert sqlite_server.store.schedule_events() == []  # type: ignore[attr-defined]

    run(main())


def test_pause_resume_trigger_delete(sqlite_server: LiveServer) -> None:
    """Pause and resume answer the schedule; trigger starts a run now; delete is 204."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            await call(s, "POST", f"{url}/schedules", DAILY)
            status, _, paused = await call(s, "POST", f"{url}/schedules/daily-report/pause")
            assert (status, paused["paused"]) == (200, True)
            status, headers, fired = await call(s, "POST", f"{url}/schedules/daily-report/trigger")
            assert status == 201, fired
            key = fired["idempotencyKey"]
            assert key.startswith("schedule:daily-report:trigger:") and key.endswith("Z")
            assert fired["runId"] == run_id_for_key("nightly", key)
            assert headers["Location"] == f"/runs/{fired['runId']}"
            state = sqlite_server.engine.wait_run_finished(fired["runId"], timeout=10)
            assert state.status == "completed"
            assert state.parameters == {"day": "today"}
            status, _, resumed = await call(s, "POST", f"{url}/schedules/daily-report/resume")
            assert (status, resumed["paused"], resumed["fired"]) == (200, False, 1)
            assert resumed["lastRunId"] == fired["runId"]
            status, _, _ = await call(s, "DELETE", f"{url}/schedules/daily-report")
            assert status == 204
            for method, path in (
                ("GET", ""),
                ("POST", "/pause"),
                ("POST", "/trigger"),
                ("DELETE", ""),
            ):
                status, _, body = await call(s, method, f"{url}/schedules/daily-report{path}")
                assert status == 404, (method, path, body)

    run(main())


def test_a_serving_scheduler_fires_every_second(servers: Servers, tmp_path: Path) -> None:
    """With the scheduler on, a 6-field cron fires each second, one run per fire time."""
    server = servers(store=SQLiteEventStore(str(tmp_path / "fw.db")), scheduler=True)
    server.engine.register_workflow(NOOP)
    finished: list[str] = []
    two = threading.Event()

    def ended(run_id: str, state: Any) -> None:
        finished.append(run_id)
        if len(finished) >= 2:
            two.set()

    server.engine.add_finish_listener(ended)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            body = {**DAILY, "cron": "* * * * * *", "timezone": "UTC"}
            status, _, _ = await call(s, "POST", f"{server.url}/schedules", body)
            assert status == 201

    run(main())
    assert two.wait(15)
    fires = [
        e
        for e in server.store.schedule_events()  # type: ignore[attr-defined]
        if type(e).__name__ == "ScheduleFired"
    ]
    keys = [f.idempotency_key for f in fires]
    assert len(set(keys)) == len(keys)
    assert all(
        re.fullmatch(r"schedule:daily-report:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", k) for k in keys
    )
    for fire in fires[:2]:
        assert server.engine.get_run(fire.run_id).submitted_by == "schedule:daily-report"


def test_the_routes_are_in_the_openapi_document() -> None:
    """Every schedule route is documented."""
    from flowweaver.api.openapi import build_document  # noqa: PLC0415

    paths = build_document()["paths"]
    assert set(paths["/schedules"]) == {"get", "post"}
    assert set(paths["/schedules/{scheduleId}"]) == {"get", "delete"}
    for action in ("pause", "resume", "trigger"):
        operation = paths[f"/schedules/{{scheduleId}}/{action}"]["post"]
        assert operation["x-required-role"] == "operator"


def test_a_trigger_this_node_cannot_run_is_422_and_stores_nothing(
    servers: Servers, tmp_path: Path
) -> None:
    """A workflow whose handler is not registered here: trigger is 422, no fire is stored."""
    server = servers(store=SQLiteEventStore(str(tmp_path / "fw.db")))
    server.engine.store.register_workflow(
        decode_workflow(b'{"id":"elsewhere","tasks":[{"id":"t","handler":"not_here"}]}'),
        datetime.now(UTC),
    )

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            body = {**DAILY, "workflowId": "elsewhere"}
            assert (await call(s, "POST", f"{server.url}/schedules", body))[0] == 201
            status, _, problem = await call(
                s, "POST", f"{server.url}/schedules/daily-report/trigger"
            )
            assert status == 422, problem
            assert "not_here" in problem["errors"][0]["message"]

    run(main())
    names = [type(e).__name__ for e in server.store.schedule_events()]  # type: ignore[attr-defined]
    assert names == ["ScheduleCreated"]
