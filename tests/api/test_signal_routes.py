"""POST /runs/{id}/signals/{name} on a real loopback server (SQLite): a signal sent before and
after its task is reached, a wait that times out, and bad input answered with problem+json
that stores nothing; POST /workflows refuses a bad wait."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from flowweaver.api.app import ApiConfig
from flowweaver.engine import Engine
from flowweaver.store import SQLiteEventStore

from .conftest import JSON_TYPE, LiveServer, Servers, example_registry, run, wait_finished
from .test_operator_routes import UNKNOWN_RUN, events, get, post, problem, start, wait_status

APPROVAL = {
    "id": "approval",
    "tasks": [
        {"id": "prepare", "handler": "gate", "inputs": {"gate": "prepare"}},
        {
            "id": "approve",
            "dependencies": ["prepare"],
            "wait": {"signal": "approval", "timeout": 3600},
            "outputs": {"approved": "$.result.approved"},
        },
        {
            "id": "ship",
            "handler": "echo",
            "dependencies": ["approve"],
            "inputs": {"approved": "$.approved"},
        },
    ],
}
QUICK = {
    "id": "quick",
    "tasks": [{"id": "approve", "wait": {"signal": "approval", "timeout": 0.2}}],
}


async def task_status(s: aiohttp.ClientSession, url: str, run_id: str, task_id: str) -> str:
    state = await get(s, f"{url}/runs/{run_id}")
    [task] = [t for t in state["tasks"] if t["id"] == task_id]
    return str(task["status"])


def test_a_signal_after_the_task_is_reached_completes_it(
    sqlite_server: LiveServer, gates: Any
) -> None:
    """202 with the run; SignalReceived carries name, payload and by; the run completes."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, APPROVAL)
            gates.open("prepare")
            await wait_status_of_task(s, url, run_id, "approve", "waiting")
            status, _, state = await post(
                s, f"{url}/runs/{run_id}/signals/approval", {"payload": {"approved": True}}
            )
            assert status == 202 and state["id"] == run_id
            stored = await wait_finished(s, url, run_id)
            assert stored[-1].event == "RunCompleted"
            by_type = {e["type"]: e for e in await events(s, url, run_id)}
            received = by_type["SignalReceived"]
            assert (received["name"], received["payload"], received["by"]) == (
                "approval",
                {"approved": True},
                "anonymous",
            )
            final = await get(s, f"{url}/runs/{run_id}")
            [ship] = [t for t in final["tasks"] if t["id"] == "ship"]
            assert ship["output"] == {"result": {"approved": True}}

    run(main())


async def wait_status_of_task(
    s: aiohttp.ClientSession, url: str, run_id: str, task_id: str, status: str
) -> None:
    """Poll until the task has ``status`` (10 s at most)."""
    for _ in range(1000):
        if await task_status(s, url, run_id, task_id) == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"task {task_id} never became {status}")


def test_a_signal_before_the_task_is_reached_is_kept(sqlite_server: LiveServer, gates: Any) -> None:
    """Sent while an earlier task runs (no body: the payload is null), it completes the wait
    when the task is reached; a second signal of the name is a 409."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, APPROVAL)
            gates.wait_entered("prepare")
            early = f"{url}/runs/{run_id}/signals/approval"
            status, _, state = await post(s, early, {"payload": {"approved": "early"}})
            assert status == 202
            assert [t["status"] for t in state["tasks"] if t["id"] == "approve"] == ["pending"]
            again = problem(await post(s, early, {"payload": {"approved": "late"}}), 409)
            assert "already received" in again["detail"]
            gates.open("prepare")
            stored = await wait_finished(s, url, run_id)
            assert stored[-1].event == "RunCompleted"
            final = await get(s, f"{url}/runs/{run_id}")
            [ship] = [t for t in final["tasks"] if t["id"] == "ship"]
            assert ship["output"] == {"result": {"approved": "early"}}
            kinds = [e["type"] for e in await events(s, url, run_id)]
            assert kinds.count("SignalReceived") == 1

    run(main())


def test_a_wait_without_a_signal_times_out_and_the_ended_run_refuses_signals(
    sqlite_server: LiveServer,
) -> None:
    """The task fails with SignalTimeout; a signal to the failed run is a 409."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, QUICK)
            await wait_status(s, url, run_id, "failed")
            final = await get(s, f"{url}/runs/{run_id}")
            [task] = final["tasks"]
            assert task["status"] == "failed"
            failed = [e for e in await events(s, url, run_id) if e["type"] == "TaskFailed"]
            assert failed[0]["error"]["type"] == "SignalTimeout"
            body = problem(await post(s, f"{url}/runs/{run_id}/signals/approval", {}), 409)
            assert "ended" in body["detail"]

    run(main())


def test_bad_signals_answer_problems_and_store_nothing(
    sqlite_server: LiveServer, gates: Any
) -> None:
    """404 unknown run or signal, 422 bad name, body or unknown field, 415 without JSON."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, APPROVAL)
            gates.wait_entered("prepare")
            before = len(await events(s, url, run_id))
            base = f"{url}/runs/{run_id}/signals"
            problem(await post(s, f"{url}/runs/{UNKNOWN_RUN}/signals/approval", {}), 404)
            problem(await post(s, f"{url}/runs/not-a-uuid/signals/approval", {}), 404)
            problem(await post(s, f"{base}/nobody-waits", {}), 404)
            bad = problem(await post(s, f"{base}/-bad", {}), 422)
            assert bad["errors"][0]["path"] == "$.name"
            unknown = problem(await post(s, f"{base}/approval", {"payload": 1, "x": 2}), 422)
            assert unknown["errors"]
            problem(await post(s, f"{base}/approval", data=b"{", headers=JSON_TYPE), 400)
            problem(await post(s, f"{base}/approval", data=b"{}", headers={}), 415)
            assert len(await events(s, url, run_id)) == before

    run(main())


def test_payloads_are_bounded(servers: Servers, gates: Any, tmp_path: Any) -> None:
    """A payload over the task data limit is a 422 at $.payload; a body over the body limit 413."""
    engine = Engine(
        SQLiteEventStore(str(tmp_path / "small.db")),
        handlers=example_registry(gates),
        workers=2,
        owns_store=True,
        max_task_io_bytes=100,
    )
    server = LiveServer(engine, ApiConfig(tail_wait=0.2, shutdown_timeout=2.0, body_limit=4096))
    servers.started.append(server)
    server.start()

    async def main() -> None:
        url = server.url
        async with aiohttp.ClientSession() as s:
            run_id = await start(s, url, APPROVAL)
            base = f"{url}/runs/{run_id}/signals/approval"
            # The gate holds prepare running: nothing else is appended while the bounds are tried.
            await wait_status_of_task(s, url, run_id, "prepare", "running")
            before = len(await events(s, url, run_id))
            over = problem(await post(s, base, {"payload": "x" * 200}), 422)
            assert over["errors"][0]["path"] == "$.payload"
            problem(await post(s, base, {"payload": "x" * 5000}), 413)
            assert len(await events(s, url, run_id)) == before
            status, _, _ = await post(s, base, {"payload": {"approved": 1}})
            assert status == 202

    run(main())


def test_registration_refuses_a_bad_wait(sqlite_server: LiveServer) -> None:
    """A wait without a signal, with a handler too, or a timeout of 0 is a 422; nothing kept."""

    async def main() -> None:
        url = sqlite_server.url
        async with aiohttp.ClientSession() as s:
            for task, path in (
                ({"id": "w", "wait": {"timeout": 5}}, "$.tasks[0].wait"),
                ({"id": "w", "handler": "noop", "wait": {"signal": "s"}}, "$.tasks[0]"),
                ({"id": "w", "wait": {"signal": "s", "timeout": 0}}, "$.tasks[0].wait.timeout"),
            ):
                body = problem(
                    await post(s, f"{url}/workflows", {"id": "bad", "tasks": [task]}), 422
                )
                assert body["errors"][0]["path"] == path
            listed = await get(s, f"{url}/workflows")
            assert "bad" not in str(listed)

    run(main())
