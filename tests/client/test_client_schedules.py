"""Signals, schedules and whoami through Client and AsyncClient, against a real server on
loopback (SQLite and PostgreSQL): each answer is the Struct the server encodes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import flowweaver
from flowweaver.api.schemas import RunOut
from flowweaver.api.ui_routes import Whoami
from flowweaver.client import AsyncClient, Client
from flowweaver.schedules import ScheduleList, ScheduleOut, ScheduleTriggered
from tests.client.support import CHAIN, chain, serving
from tests.store_urls import StoreUrls, store_urls
from tests.test_cli import fw

__all__ = ["store_urls"]

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
RELEASE: dict[str, Any] = {
    "id": "release",
    "tasks": [
        {"id": "approve", "wait": {"signal": "approval", "timeout": 3600}},
        {
            "id": "ship",
            "handler": "echo",
            "dependencies": ["approve"],
            "inputs": {"approved": "$.result.approved"},
        },
    ],
}
NEVER_SOON = "0 3 1 1 *"
"""A cron that fires on 1 January only: no fire of the scheduler during a test."""


def _until_ended(client: Client, run_id: str) -> list[str]:
    return [e.type for e in client.events(run_id)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_signal_completes_the_waiting_task(
    kind: str, store_urls: StoreUrls, tmp_path: Path
) -> None:
    """send_signal answers the run's state; the waiting task completes with the payload and
    the run ends; a second signal, or one no task waits for, is refused as our errors."""
    with (
        serving(store_urls(kind), tmp_path) as server,
        Client(f"http://127.0.0.1:{server.port}") as client,
    ):
        client.register_workflow(RELEASE)
        run = client.start_run("release")
        answered = client.send_signal(run.id, "approval", {"approved": True})
        assert isinstance(answered, RunOut)
        assert answered.id == run.id
        types = _until_ended(client, run.id)
        assert "SignalReceived" in types
        assert types[-1] == "RunCompleted"
        state = client.get_run(run.id)
        tasks = {t.id: t for t in state.tasks}
        assert tasks["approve"].output == {"result": {"approved": True}}
        assert tasks["ship"].status == "completed"
        with pytest.raises(flowweaver.InvalidCommandError):
            client.send_signal(run.id, "approval")
        other = client.start_run("release")
        with pytest.raises(flowweaver.NotFoundError):
            client.send_signal(other.id, "nobody-waits")
        with pytest.raises(flowweaver.ValidationError):
            client.send_signal(other.id, "bad name")
        client.cancel_run(other.id)


@pytest.mark.parametrize("kind", KINDS)
def test_schedules_through_the_client(kind: str, store_urls: StoreUrls, tmp_path: Path) -> None:
    """Create (and again, unchanged), list, show, pause, resume, trigger and delete a
    schedule; a bad cron is ValidationError and stores nothing; whoami without auth."""
    with (
        serving(store_urls(kind), tmp_path) as server,
        Client(f"http://127.0.0.1:{server.port}") as client,
    ):
        client.register_workflow(chain(1, 0.01))
        made = client.create_schedule(
            "nightly", CHAIN, NEVER_SOON, timezone="Europe/Berlin", parameters={"n": 1}
        )
        assert isinstance(made, ScheduleOut)
        assert (made.id, made.version, made.paused, made.timezone) == (
            "nightly",
            1,
            False,
            "Europe/Berlin",
        )
        assert len(made.next_fire_times) == 5
        again = client.create_schedule(
            "nightly", CHAIN, NEVER_SOON, timezone="Europe/Berlin", parameters={"n": 1}
        )
        assert again.version == 1
        listed = client.list_schedules()
        assert isinstance(listed, ScheduleList)
        assert [s.id for s in listed.schedules] == ["nightly"]
        assert client.get_schedule("nightly") == listed.schedules[0]
        assert client.pause_schedule("nightly", "upgrade").paused
        assert not client.resume_schedule("nightly").paused
        fired = client.trigger_schedule("nightly")
        assert isinstance(fired, ScheduleTriggered)
        assert fired.schedule_id == "nightly"
        assert fired.idempotency_key.startswith("schedule:nightly:trigger:")
        assert _until_ended(client, fired.run_id)[-1] == "RunCompleted"
        assert client.get_run(fired.run_id).parameters == {"n": 1}
        shown = client.get_schedule("nightly")
        assert (shown.fired, shown.last_run_id) == (1, fired.run_id)
        with pytest.raises(flowweaver.ValidationError) as bad:
            client.create_schedule("broken", CHAIN, "61 * * * *")
        assert bad.value.errors[0].path == "$.cron"
        assert client.delete_schedule("nightly") is None
        with pytest.raises(flowweaver.NotFoundError):
            client.get_schedule("nightly")
        assert client.list_schedules().schedules == []
        me = client.whoami()
        assert isinstance(me, Whoami)
        assert (me.auth, me.name, me.role) == ("none", "anonymous", "admin")
        assert me.log_position > 0


def test_async_client_schedules_signals_and_whoami(tmp_path: Path) -> None:
    """AsyncClient has the same methods: a schedule's round trip, a signal, whoami."""

    async def drive(url: str) -> None:
        async with AsyncClient(url) as client:
            await client.register_workflow(chain(1, 0.01))
            await client.register_workflow(RELEASE)
            made = await client.create_schedule("hourly", CHAIN, NEVER_SOON, paused=True)
            assert made.paused
            assert [s.id for s in (await client.list_schedules()).schedules] == ["hourly"]
            assert not (await client.resume_schedule("hourly")).paused
            assert (await client.pause_schedule("hourly")).paused
            fired = await client.trigger_schedule("hourly")
            types = [e.type async for e in client.events(fired.run_id)]
            assert types[-1] == "RunCompleted"
            assert (await client.get_schedule("hourly")).fired == 1
            await client.delete_schedule("hourly")
            with pytest.raises(flowweaver.NotFoundError):
                await client.delete_schedule("hourly")
            run = await client.start_run("release")
            answered = await client.send_signal(run.id, "approval", {"approved": False})
            assert answered.id == run.id
            assert [e.type async for e in client.events(run.id)][-1] == "RunCompleted"
            assert (await client.whoami()).role == "admin"

    store = f"sqlite:///{tmp_path / 'a.db'}"
    with serving(store, tmp_path) as server:
        asyncio.run(drive(f"http://127.0.0.1:{server.port}"))


def test_whoami_and_schedule_roles_with_tokens(tmp_path: Path) -> None:
    """With `serve --auth token`: whoami names the token and its role; a reader may list
    schedules but not create one (AuthError 403)."""
    store = f"sqlite:///{tmp_path / 'auth.db'}"
    made = fw("tokens", "create", "--name", "ro", "--role", "reader", "--store", store,
              cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with (
        serving(store, tmp_path, "--auth", "token") as server,
        Client(f"http://127.0.0.1:{server.port}", token=made.stdout.strip()) as client,
    ):
        me = client.whoami()
        assert (me.auth, me.name, me.role) == ("token", "ro", "reader")
        assert client.list_schedules().schedules == []
        with pytest.raises(flowweaver.AuthError) as refused:
            client.create_schedule("nightly", CHAIN, NEVER_SOON)
        assert refused.value.status == 403
