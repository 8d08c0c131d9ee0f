"""The blocking and the asyncio client against a real server on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import flowweaver
from flowweaver.api.schemas import RunOut, WorkflowCreated
from flowweaver.client import AsyncClient, Client
from tests.client.support import CHAIN, chain, serving
from tests.store_urls import StoreUrls, store_urls

__all__ = ["store_urls"]

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_call_answers_the_servers_structs(
    kind: str, store_urls: StoreUrls, tmp_path: Path
) -> None:
    """Register, start (idempotently), follow, read, diff, verify, fork, pause and list a run
    through Client: each answer is the Struct the server encodes, errors are our classes."""
    with (
        serving(store_urls(kind), tmp_path) as server,
        Client(f"http://127.0.0.1:{server.port}") as client,
    ):
        created = client.register_workflow(chain(2, 0.01))
        assert created == WorkflowCreated(id=CHAIN, version=1)
        run = client.start_run(CHAIN, {"n": 1}, idempotency_key="k")
        assert isinstance(run, RunOut)
        assert client.start_run(CHAIN, {"n": 1}, idempotency_key="k").id == run.id
        with pytest.raises(flowweaver.IdempotencyConflictError):
            client.start_run(CHAIN, {"n": 2}, idempotency_key="k")
        events = list(client.events(run.id))
        assert [e.offset for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "RunCompleted"
        assert type(events[0].decode()).__name__ == "RunStarted"
        state = client.get_run(run.id)
        assert state.status == "completed"
        assert state.version == len(events)
        assert client.get_run(run.id, at=1).status == "running"
        assert [e.offset for e in client.history(run.id, after=2).events] == list(
            range(3, len(events) + 1)
        )
        assert client.log_page(run_id=run.id).events[-1].type == "RunCompleted"
        assert client.diff_run(run.id, 0, 1).run["status"] == ["pending", "running"]
        assert client.verify_run(run.id).ok
        assert client.export_run(run.id).count(b"\n") == len(events)
        fork = client.fork_run(run.id, reset=["t1"], reason="again")
        assert fork.parent_run_id == run.id
        assert client.lineage(run.id).children[0].run_id == fork.id
        assert {r.id for r in client.list_runs(workflow_id=CHAIN).runs} == {run.id, fork.id}
        assert client.list_workflows().workflows[0].id == CHAIN
        assert client.get_workflow(CHAIN, version=1).definition.id == CHAIN
        with pytest.raises(flowweaver.InvalidCommandError):
            client.pause_run(run.id)
        with pytest.raises(flowweaver.NotFoundError) as missing:
            client.get_run(MISSING)
        assert (missing.value.kind, missing.value.ident) == ("run", MISSING)
        with pytest.raises(flowweaver.NotFoundError):
            list(client.events(MISSING))
        with pytest.raises(flowweaver.ValidationError) as invalid:
            client.register_workflow({"id": "x", "tasks": "none"})
        assert invalid.value.errors[0].path == "$.tasks"
        assert client.health().status == "ok"
        assert client.ready().status == "ready"
        assert "flowweaver" in client.metrics()


@pytest.mark.parametrize("kind", KINDS)
def test_async_client_does_what_the_blocking_one_does(
    kind: str, store_urls: StoreUrls, tmp_path: Path
) -> None:
    """AsyncClient starts, follows (async for) and reads a run, and raises the same errors."""

    async def drive(url: str) -> None:
        async with AsyncClient(url) as client:
            await client.register_workflow(chain(2, 0.01))
            run = await client.start_run(CHAIN, wait=10)
            assert run.status == "completed"
            offsets = [e.offset async for e in client.events(run.id)]
            assert offsets == list(range(1, run.version + 1))
            assert (await client.get_run(run.id)).version == run.version
            seen = []
            async for event in client.log_events():
                seen.append(event)
                if event.is_terminal:
                    break
            assert [e.version for e in seen] == offsets
            with pytest.raises(flowweaver.NotFoundError):
                await client.get_run(MISSING)
            with pytest.raises(flowweaver.InvalidCommandError):
                await client.cancel_run(run.id)

    with serving(store_urls(kind), tmp_path) as server:
        asyncio.run(drive(f"http://127.0.0.1:{server.port}"))
