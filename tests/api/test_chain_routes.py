"""GET /runs/{id}/verify and /runs/{id}/export against a live server on a SQLite file."""

from __future__ import annotations

import sqlite3
import uuid

import aiohttp
import msgspec

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.store.sqlite import SQLiteEventStore

from .conftest import LiveServer, run, wait_finished


async def _finished_run(s: aiohttp.ClientSession, url: str) -> str:
    async with s.post(f"{url}/workflows", json=EXAMPLE_WORKFLOW) as r:
        assert r.status in (200, 201)
    async with s.post(f"{url}/runs", json={"workflowId": "example-workflow"}) as r:
        run_id: str = (await r.json())["id"]
    await wait_finished(s, url, run_id)
    return run_id


def _tamper(store: SQLiteEventStore, run_id: str, version: int) -> None:
    """Change one byte of one stored event, behind the store's back."""
    with sqlite3.connect(store.path) as db:
        (state,) = db.execute(
            "SELECT state FROM fw_events WHERE originator_id=? AND originator_version=?",
            (uuid.UUID(run_id).hex, version),
        ).fetchone()
        changed = state.replace(b'"timestamp":"2', b'"timestamp":"3', 1)
        assert changed != state
        db.execute(
            "UPDATE fw_events SET state=? WHERE originator_id=? AND originator_version=?",
            (changed, uuid.UUID(run_id).hex, version),
        )


def test_verify_answers_ok_with_the_last_version_and_its_hash(sqlite_server: LiveServer) -> None:
    """A run as the engine stored it verifies: ok, its last version, that event's hash."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _finished_run(s, sqlite_server.url)
            async with s.get(f"{sqlite_server.url}/runs/{run_id}/events") as r:
                events = (await r.json())["events"]
            async with s.get(f"{sqlite_server.url}/runs/{run_id}/verify") as r:
                assert r.status == 200
                assert r.content_type == "application/json"
                body = await r.json()
            assert body == {"ok": True, "version": len(events), "head": events[-1]["hash"]}

    run(main())


def test_verify_names_the_version_whose_byte_was_changed(sqlite_server: LiveServer) -> None:
    """One byte changed in one stored event: ok false at exactly that version; export is
    refused with a 409 problem and sends no line."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _finished_run(s, sqlite_server.url)
            store = sqlite_server.store
            assert isinstance(store, SQLiteEventStore)
            _tamper(store, run_id, 3)
            async with s.get(f"{sqlite_server.url}/runs/{run_id}/verify") as r:
                assert r.status == 200
                body = await r.json()
            assert body["ok"] is False
            assert body["firstBadVersion"] == 3
            assert "does not match" in body["reason"]
            async with s.get(f"{sqlite_server.url}/runs/{run_id}/export") as r:
                assert r.status == 409
                assert r.content_type == "application/problem+json"
                problem = await r.json()
            assert "version 3" in problem["detail"]

    run(main())


def test_export_streams_the_stored_events_as_ndjson(sqlite_server: LiveServer) -> None:
    """Export: application/x-ndjson, one line per stored event, the stored bytes exactly."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            run_id = await _finished_run(s, sqlite_server.url)
            async with s.get(f"{sqlite_server.url}/runs/{run_id}/export") as r:
                assert r.status == 200
                assert r.content_type == "application/x-ndjson"
                body = await r.read()
            store = sqlite_server.store
            assert isinstance(store, SQLiteEventStore)
            rows = store.read_stored(run_id)
            lines = body.splitlines()
            assert len(lines) == len(rows)
            for line, (version, topic, data) in zip(lines, rows, strict=True):
                assert line == (
                    b'{"runId":"%s","version":%d,"topic":"%s","event":%s}'
                    % (run_id.encode(), version, topic.encode(), data)
                )
                assert msgspec.json.decode(line)["event"]["hash"]

    run(main())


def test_verify_and_export_of_an_unknown_run_are_404(sqlite_server: LiveServer) -> None:
    """A run that is not there, or no run id at all, is a 404 problem on both routes."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for run_id in (str(uuid.uuid4()), "nope"):
                for route in ("verify", "export"):
                    async with s.get(f"{sqlite_server.url}/runs/{run_id}/{route}") as r:
                        assert r.status == 404, (run_id, route)
                        assert r.content_type == "application/problem+json"

    run(main())
