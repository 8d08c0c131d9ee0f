"""POST /runs with ``Prefer: wait=N`` (RFC 7240): the ended run, else the run as it stands."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from flowweaver.api import ApiConfig
from flowweaver.api.app import BRIDGE
from flowweaver.api.bridge import EngineBridge
from flowweaver.api.errors import ApiError
from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.api.prefer import preferences, wait_seconds
from flowweaver.engine import Engine
from flowweaver.ports import LocalLeases
from flowweaver.store import MemoryEventStore

from .conftest import Gates, LiveServer, Servers, example_registry, run

PROBLEM = "application/problem+json"
GATED = {
    "id": "gated",
    "tasks": [
        {"id": "first", "handler": "echo", "inputs": {"value": 1}},
        {
            "id": "held",
            "handler": "gate",
            "dependencies": ["first"],
            "inputs": {"gate": "$.params.gate"},
        },
    ],
}


async def _post(s: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> Any:
    async with s.post(url, json=body, **kw) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def _register(s: aiohttp.ClientSession, server: LiveServer, *workflows: Any) -> None:
    for workflow in workflows:
        async with s.post(f"{server.url}/workflows", json=workflow) as response:
            assert response.status in (200, 201), await response.text()


def _gated(gate: str, **extra: Any) -> dict[str, Any]:
    return {"workflowId": "gated", "parameters": {"gate": gate}, **extra}


def test_wait_answers_with_the_finished_run(server: LiveServer) -> None:
    """A run that ends within N seconds is the answer: 201, completed, Preference-Applied."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, EXAMPLE_WORKFLOW)
            status, headers, body = await _post(
                s,
                f"{server.url}/runs",
                {"workflowId": "example-workflow"},
                headers={"Prefer": "wait=10"},
            )
            assert status == 201, body
            assert headers["Preference-Applied"] == "wait=10"
            assert headers["Location"] == f"/runs/{body['id']}"
            assert body["status"] == "completed"
            assert {t["status"] for t in body["tasks"]} == {"completed"}
            async with s.get(f"{server.url}/runs/{body['id']}") as response:
                assert await response.json() == body

    run(main())


def test_a_longer_run_is_answered_as_it_stands_after_n_seconds(
    server: LiveServer, gates: Gates
) -> None:
    """A run still going after N seconds is answered then, as it stands, not applied."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, GATED)
            started = time.monotonic()
            status, headers, body = await _post(
                s, f"{server.url}/runs", _gated("slow"), headers={"Prefer": "wait=1"}
            )
            elapsed = time.monotonic() - started
            assert status == 201, body
            assert "Preference-Applied" not in headers
            assert body["status"] == "running"
            assert {t["id"]: t["status"] for t in body["tasks"]} == {
                "first": "completed",
                "held": "running",
            }
            assert 0.9 <= elapsed < 5, elapsed
            gates.open("slow")

    run(main())


@pytest.mark.parametrize(
    "prefer", ["wait", "wait=", "wait=61", "wait=1.5", "wait=-1", "wait=soon", "wait=00000099"]
)
def test_a_bad_wait_is_a_400_and_starts_nothing(server: LiveServer, prefer: str) -> None:
    """A wait that is not 0..60 whole seconds is a 400 problem, and no run is stored."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, EXAMPLE_WORKFLOW)
            status, headers, body = await _post(
                s,
                f"{server.url}/runs",
                {"workflowId": "example-workflow"},
                headers={"Prefer": f"respond-async, {prefer}"},
            )
            assert status == 400, body
            assert headers["Content-Type"].startswith(PROBLEM)
            assert body["errors"][0]["path"] == "$.headers.Prefer"
            assert "0 to 60" in body["detail"]
            async with s.get(f"{server.url}/runs") as response:
                assert (await response.json())["runs"] == []

    run(main())


def test_the_loop_answers_other_requests_while_requests_wait(
    servers: Servers, gates: Gates
) -> None:
    """Requests held by Prefer: wait take no thread: others are answered meanwhile, even POSTs."""
    held = 20  # more than the bridge's 16 threads: a thread per wait would starve the rest
    server = servers(handlers=example_registry(gates), workers=held + 2)

    async def main() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await _register(s, server, GATED, EXAMPLE_WORKFLOW)
            waits = [
                asyncio.ensure_future(
                    _post(s, f"{server.url}/runs", _gated(f"g{i}"), headers={"Prefer": "wait=30"})
                )
                for i in range(held)
            ]
            for i in range(held):
                await asyncio.to_thread(gates.wait_entered, f"g{i}")
            bridge: EngineBridge = server.app[BRIDGE]  # type: ignore[index]
            # A handler may be entered before its POST has begun to wait (its first task
            # starts as the run is created): wait until every request waits.
            deadline = time.monotonic() + 10
            while await asyncio.to_thread(server.call, lambda: bridge.waits.waiting) < held:
                assert time.monotonic() < deadline, "the requests never all waited"
                await asyncio.sleep(0.01)
            assert await asyncio.to_thread(server.call, lambda: bridge.waits.waiting) == held
            async with s.get(f"{server.url}/healthz") as response:
                assert response.status == 200
            status, _, other = await _post(
                s,
                f"{server.url}/runs",
                {"workflowId": "example-workflow"},
                headers={"Prefer": "wait=10"},
            )
            assert (status, other["status"]) == (201, "completed")
            assert not any(w.done() for w in waits)
            for i in range(held):
                gates.open(f"g{i}")
            for status, headers, body in await asyncio.gather(*waits):
                assert (status, body["status"]) == (201, "completed")
                assert headers["Preference-Applied"] == "wait=30"
            assert await asyncio.to_thread(server.call, lambda: bridge.waits.waiting) == 0

    run(main())


def test_a_repeated_idempotency_key_waits_too(server: LiveServer, gates: Gates) -> None:
    """The same key again with Prefer: wait is answered 200 with the run once it ends."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, GATED)
            request = _gated("again", idempotencyKey="order-1")
            status, _, first = await _post(s, f"{server.url}/runs", request)
            assert (status, first["status"]) == (201, "running")
            waiting = asyncio.ensure_future(
                _post(s, f"{server.url}/runs", request, headers={"Prefer": "wait=30"})
            )
            await asyncio.to_thread(gates.wait_entered, "again")
            gates.open("again")
            status, headers, body = await waiting
            assert (status, body["id"], body["status"]) == (200, first["id"], "completed")
            assert headers["Preference-Applied"] == "wait=30"
            # Repeated once more, the run has ended: the answer comes at once, applied.
            status, headers, body = await _post(
                s, f"{server.url}/runs", request, headers={"Prefer": "wait=5"}
            )
            assert (status, body["status"], headers["Preference-Applied"]) == (
                200,
                "completed",
                "wait=5",
            )

    run(main())


def test_waits_beyond_the_limit_are_answered_at_once(servers: Servers, gates: Gates) -> None:
    """With max_waits requests waiting, the next Prefer: wait is answered at once, as it stands."""
    server = servers(handlers=example_registry(gates), max_waits=1)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, GATED)
            first = asyncio.ensure_future(
                _post(s, f"{server.url}/runs", _gated("a"), headers={"Prefer": "wait=30"})
            )
            await asyncio.to_thread(gates.wait_entered, "a")
            started = time.monotonic()
            status, headers, body = await _post(
                s, f"{server.url}/runs", _gated("b"), headers={"Prefer": "wait=30"}
            )
            assert time.monotonic() - started < 5
            assert status == 201
            assert body["status"] in ("pending", "running")
            assert "Preference-Applied" not in headers
            assert not first.done()
            gates.open("a")
            gates.open("b")
            status, headers, body = await first
            assert (body["status"], headers["Preference-Applied"]) == ("completed", "wait=30")

    run(main())


def test_closing_the_api_answers_waiting_requests_at_once(server: LiveServer, gates: Gates) -> None:
    """A draining server answers the requests that wait, as their runs stand, not after N s."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, GATED)
            waiting = asyncio.ensure_future(
                _post(s, f"{server.url}/runs", _gated("shut"), headers={"Prefer": "wait=60"})
            )
            await asyncio.to_thread(gates.wait_entered, "shut")
            bridge: EngineBridge = server.app[BRIDGE]  # type: ignore[index]
            await asyncio.to_thread(server.call, bridge.waits.close)
            status, headers, body = await asyncio.wait_for(waiting, 10)
            assert (status, body["status"]) == (201, "running")
            assert "Preference-Applied" not in headers
            gates.open("shut")

    run(main())


def test_a_run_that_ended_before_the_wait_began_is_found_at_once() -> None:
    """A wait registered after its run ended gets the final state the engine reported."""
    engine = Engine(MemoryEventStore(), handlers=example_registry(), owns_store=True)
    bridge = EngineBridge(engine, threads=2)

    async def main() -> None:
        bridge.waits.attach(asyncio.get_running_loop())
        try:
            engine.register_workflow(EXAMPLE_WORKFLOW)
            handle = engine.start_run("example-workflow")
            final = await asyncio.to_thread(engine.wait_run_finished, handle.run_id, 10)
            found = await asyncio.wait_for(bridge.waits.wait_finished(handle.run_id), 5)
            assert found is not None
            assert (found.status, found.version) == ("completed", final.version)
        finally:
            bridge.waits.close()

    try:
        run(main())
    finally:
        bridge.close()
        engine.close(grace=2)


def test_prefer_parsing() -> None:
    """Preferences come from every Prefer field, the first of a name counts, quotes unwrap."""
    assert preferences(['respond-async, WAIT = 5; x="a,b"', "wait=7", 'return="min\\"imal"']) == {
        "respond-async": None,
        "wait": "5",
        "return": 'min"imal',
    }
    assert wait_seconds(["return=minimal"]) is None
    assert wait_seconds(['wait="0060"']) == 60
    assert wait_seconds(["wait=0"]) == 0
    with pytest.raises(ApiError):
        wait_seconds(["wait=6o"])


class _OwnedElsewhere(LocalLeases):
    """Leases of a store several processes share, where another process owns every run."""

    shared = True

    def acquire(self, run_id: str) -> bool:
        return False


def test_a_run_another_engine_ends_is_seen_by_the_wait() -> None:
    """With a shared store, a run ended by another engine answers the wait (re-read each second)."""
    store = MemoryEventStore()
    api_engine = Engine(store, handlers=example_registry(), leases=_OwnedElsewhere(), recover=False)
    server = LiveServer(api_engine, ApiConfig(tail_wait=0.2, shutdown_timeout=2.0)).start()
    other: list[Engine] = []

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _register(s, server, EXAMPLE_WORKFLOW)
            waiting = asyncio.ensure_future(
                _post(
                    s,
                    f"{server.url}/runs",
                    {"workflowId": "example-workflow"},
                    headers={"Prefer": "wait=20"},
                )
            )
            bridge: EngineBridge = server.app[BRIDGE]  # type: ignore[index]
            # The wait's count lives on the server's loop: no event to await from this one.
            while await asyncio.to_thread(server.call, lambda: bridge.waits.waiting) == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the POST has not reached its wait yet
            assert api_engine.live_runs() == 0  # the API's engine does not run it
            other.append(Engine(store, handlers=example_registry()))  # recovers and runs it
            status, headers, body = await asyncio.wait_for(waiting, 10)
            assert (status, body["status"]) == (201, "completed")
            assert headers["Preference-Applied"] == "wait=20"

    try:
        run(main())
    finally:
        server.stop()
        for engine in other:
            engine.close(grace=2)
        api_engine.close(grace=2)
