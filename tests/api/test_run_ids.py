"""A run id spelled any way uuid.UUID reads names the same run, answered in its canonical form."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.errors import NotFoundError
from flowweaver.store import SQLiteEventStore

from .conftest import (
    JSON_TYPE,
    Gates,
    LiveServer,
    Servers,
    collect,
    events_of,
    example_registry,
    run,
    wait_finished,
)

HELD = {"id": "held", "tasks": [{"id": "t", "handler": "gate", "inputs": {"gate": "ids"}}]}


def spellings(run_id: str) -> list[str]:
    """Other spellings of a canonical run id that uuid.UUID reads as the same UUID.

    Braces are left out: aiohttp's router does not match `{` in a path segment (a 404).
    """
    return [run_id.upper(), run_id.replace("-", ""), f"urn:uuid:{run_id}"]


async def _start(session: aiohttp.ClientSession, url: str, workflow: dict[str, Any]) -> str:
    async with session.post(f"{url}/workflows", json=workflow) as r:
        assert r.status in (200, 201)
    async with session.post(f"{url}/runs", json={"workflowId": workflow["id"]}) as r:
        assert r.status == 201
        run_id: str = (await r.json())["id"]
    assert str(uuid.UUID(run_id)) == run_id
    return run_id


def test_every_spelling_answers_with_the_canonical_id(server: LiveServer) -> None:
    """GET /runs/{id} and the JSON history answer for every spelling, with the canonical id."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, server.url, EXAMPLE_WORKFLOW)
            await wait_finished(s, server.url, run_id)
            for odd in spellings(run_id):
                async with s.get(f"{server.url}/runs/{odd}") as r:
                    assert r.status == 200, odd
                    assert (await r.json())["id"] == run_id
                async with s.get(f"{server.url}/runs/{odd}/events") as r:
                    assert r.status == 200, odd
                    page = await r.json()
                    assert page["runId"] == run_id
                    assert {e["runId"] for e in page["events"]} == {run_id}
                async with s.post(f"{server.url}/runs/{odd}/cancel", headers=JSON_TYPE) as r:
                    assert r.status == 409, odd  # found, and already ended

    run(main())


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("path", ["/events/{id}", "/runs/{id}/events"])
def test_the_stream_of_an_odd_spelling_ends_after_the_terminal_event(
    servers: Servers, gates: Gates, tmp_path: Path, path: str, store: str
) -> None:
    """A live run's SSE stream opened with an odd spelling follows it and ends with it."""
    server = servers(
        store=SQLiteEventStore(str(tmp_path / "fw.db")) if store == "sqlite" else None,
        handlers=example_registry(gates),
        heartbeat=0.05,
    )

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, server.url, HELD)
            gates.wait_entered("ids")
            odd = run_id.upper()
            headers = {"Accept": "text/event-stream"}
            async with s.get(server.url + path.format(id=odd), headers=headers) as r:
                assert r.status == 200
                # A heartbeat comes only once the replay is done and the stream follows live
                # events: the run's end must now come live, not from a replay.
                first = await collect(r, until=lambda m: m.comment == "keep-alive")
                gates.open("ids")
                async with asyncio.timeout(5):  # it hung here, waiting on the odd spelling
                    rest = await collect(r)
            received = events_of(first + rest)
            assert received[-1].event == "RunCompleted"
            assert {m.json()["runId"] for m in received} == {run_id}

    run(main())


def test_cancel_with_an_odd_spelling_cancels_the_run(server: LiveServer, gates: Gates) -> None:
    """POST /runs/{ODD}/cancel cancels the run and answers its canonical id."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _start(s, server.url, HELD)
            gates.wait_entered("ids")
            odd = f"{server.url}/runs/urn:uuid:{run_id.upper()}/cancel"
            async with s.post(odd, headers=JSON_TYPE) as r:
                assert r.status == 202
                assert (await r.json())["id"] == run_id
            events = await wait_finished(s, server.url, run_id)
            assert events[-1].event == "RunCancelled"

    run(main())


@pytest.mark.parametrize(
    "path", ["/runs/{id}", "/runs/{id}/events", "/events/{id}", "/runs/{id}/cancel"]
)
def test_an_id_that_is_no_uuid_is_404(server: LiveServer, path: str) -> None:
    """A run id that is no UUID in any spelling is a 404 problem on every run route."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            url = server.url + path.format(id="not-a-run")
            method = s.post if path.endswith("cancel") else s.get
            async with method(url, headers=JSON_TYPE) as r:
                assert r.status == 404
                assert r.headers["Content-Type"].startswith("application/problem+json")

    run(main())


def test_the_engine_reads_and_cancels_by_any_spelling(server: LiveServer, gates: Gates) -> None:
    """Engine.get_run, cancel_run and wait_run_finished take any spelling of a run id."""
    engine = server.engine
    engine.register_workflow(HELD)
    run_id = engine.start_run("held").run_id
    gates.wait_entered("ids")
    assert engine.get_run(run_id.upper()).id == run_id
    engine.cancel_run(f"urn:uuid:{run_id}", reason="test")
    final = engine.wait_run_finished(run_id.replace("-", "").upper(), timeout=10)
    assert (final.id, final.status) == (run_id, "cancelled")
    with pytest.raises(NotFoundError):
        engine.get_run("not-a-run")
