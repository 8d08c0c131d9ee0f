"""POST /runs/{id}/fork and GET /runs/{id}/lineage over a real server on a SQLite file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowweaver.store import SQLiteEventStore
from tests.fork_support import FORKABLE, Calls

from .conftest import JSON_TYPE, Gates, LiveServer, Servers, example_registry, run

PROBLEM = "application/problem+json"
WAIT = {"Prefer": "wait=20"}
LIVE = {
    "id": "live",
    "tasks": [
        {"id": "first", "handler": "count", "inputs": {"value": 1}},
        {"id": "held", "handler": "gate", "dependencies": ["first"], "inputs": {"gate": "g"}},
    ],
}


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def fork_server(servers: Servers, gates: Gates, calls: Calls, tmp_path: Path) -> LiveServer:
    """A server on a SQLite file with the counting handlers and ``gate``."""
    registry = example_registry(gates)
    calls.register(registry)
    return servers(store=SQLiteEventStore(str(tmp_path / "fork.db")), handlers=registry)


async def _call(
    s: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, dict[str, str], Any]:
    if method == "POST" and "json" not in kw and "data" not in kw:
        kw["headers"] = {**JSON_TYPE, **kw.get("headers", {})}
    async with s.request(method, url, **kw) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def _failed_run(s: aiohttp.ClientSession, server: LiveServer) -> str:
    """Register FORKABLE and run it to failure (b fails); return the run id."""
    status, _, _ = await _call(s, "POST", f"{server.url}/workflows", json=FORKABLE)
    assert status in (200, 201)
    body = {"workflowId": "forkable", "parameters": {"v": 7, "p": "old"}}
    status, _, state = await _call(s, "POST", f"{server.url}/runs", json=body, headers=WAIT)
    assert (status, state["status"]) == (201, "failed")
    run_id: str = state["id"]
    return run_id


def test_a_fork_with_no_body_reruns_from_the_point_of_failure(
    fork_server: LiveServer, calls: Calls
) -> None:
    """No body: 201 with the new run naming its parent; only b and c run again, and with
    Prefer: wait the answer is the ended fork."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            parent = await _failed_run(s, fork_server)
            parent_version = len(fork_server.store.read_run(parent))
            calls.failing.clear()
            url = f"{fork_server.url}/runs/{parent}/fork"
            status, headers, fork = await _call(s, "POST", url, headers=WAIT)
            assert status == 201, fork
            assert headers["Location"] == f"/runs/{fork['id']}"
            assert headers["Preference-Applied"] == "wait=20"
            assert fork["status"] == "completed"
            assert (fork["parentRunId"], fork["parentVersion"]) == (parent, parent_version)
            tasks = {t["id"]: t for t in fork["tasks"]}
            assert tasks["c"]["output"] == {"result": {"value": 7, "p": "old"}}
            assert calls.by_task == Counter({"a": 1, "b": 2, "c": 1, "d": 1})
            # An empty object is the same request.
            status, _, again = await _call(s, "POST", url, json={}, headers=WAIT)
            assert (status, again["status"]) == (201, "completed")
            assert calls.by_task == Counter({"a": 1, "b": 3, "c": 2, "d": 1})
            status, _, shown = await _call(s, "GET", f"{fork_server.url}/runs/{fork['id']}")
            assert (shown["parentRunId"], shown["parentVersion"]) == (parent, parent_version)
            status, _, listed = await _call(s, "GET", f"{fork_server.url}/runs")
            rows = {r["id"]: r for r in listed["runs"]}
            assert rows[fork["id"]]["parentRunId"] == parent
            assert rows[parent]["parentRunId"] is None

    run(main())


def test_at_version_reset_parameters_and_outputs_reach_a_downstream_task(
    fork_server: LiveServer, calls: Calls
) -> None:
    """atVersion, reset, parameters and an output override all shape the fork: c sees the
    override through b and the new parameter."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            parent = await _failed_run(s, fork_server)
            events = fork_server.store.read_run(parent)
            a_done = next(e.version for e in events if e.name == "TaskCompleted")
            calls.failing.clear()
            body = {
                "atVersion": a_done,
                "reset": ["b"],
                "parameters": {"v": 7, "p": "new"},
                "outputs": {"a": {"result": {"value": 42}}},
                "reason": "try 42",
            }
            url = f"{fork_server.url}/runs/{parent}/fork"
            status, _, fork = await _call(s, "POST", url, json=body, headers=WAIT)
            assert (status, fork["status"], fork["parentVersion"]) == (201, "completed", a_done)
            tasks = {t["id"]: t for t in fork["tasks"]}
            assert tasks["a"]["output"] == {"result": {"value": 42}}
            assert tasks["c"]["output"] == {"result": {"value": 42, "p": "new"}}
            # d had not completed at a_done, so it ran again; a never did.
            assert calls.by_task == Counter({"a": 1, "b": 2, "c": 1, "d": 2})

    run(main())


def test_a_live_run_can_be_forked_and_is_not_changed(fork_server: LiveServer, gates: Gates) -> None:
    """Forking a running run answers at once; the parent's log gains nothing from it."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await _call(s, "POST", f"{fork_server.url}/workflows", json=LIVE)
            _, _, parent = await _call(
                s, "POST", f"{fork_server.url}/runs", json={"workflowId": "live"}
            )
            gates.wait_entered("g")
            before = [e.name for e in fork_server.store.read_run(parent["id"])]
            url = f"{fork_server.url}/runs/{parent['id']}/fork"
            status, _, fork = await _call(s, "POST", url)
            assert (status, fork["status"]) == (201, "running")
            assert [e.name for e in fork_server.store.read_run(parent["id"])] == before
            gates.open("g")
            for run_id in (parent["id"], fork["id"]):
                # A run's SSE stream closes after its terminal event: read it to the end.
                async with s.get(
                    f"{fork_server.url}/events/{run_id}", timeout=aiohttp.ClientTimeout(20)
                ) as r:
                    await r.read()
                _, _, ended = await _call(s, "GET", f"{fork_server.url}/runs/{run_id}")
                assert ended["status"] == "completed"

    run(main())


def test_lineage_of_a_fork_of_a_fork_both_ways(fork_server: LiveServer, calls: Calls) -> None:
    """GET lineage names each run's parent and lists its forks newest first, paged."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            root = await _failed_run(s, fork_server)
            calls.failing.clear()
            base = fork_server.url

            async def fork(of: str) -> str:
                status, _, made = await _call(s, "POST", f"{base}/runs/{of}/fork", headers=WAIT)
                assert status == 201
                run_id: str = made["id"]
                return run_id

            child = await fork(root)
            second = await fork(root)
            grandchild = await fork(child)
            _, _, top = await _call(s, "GET", f"{base}/runs/{root}/lineage")
            assert top["runId"] == root
            assert top["parent"] is None
            assert [c["runId"] for c in top["children"]] == [second, child]
            assert {c["status"] for c in top["children"]} == {"completed"}
            root_version = len(fork_server.store.read_run(root))
            assert [c["atVersion"] for c in top["children"]] == [root_version] * 2
            assert top["nextCursor"] is None
            _, _, middle = await _call(s, "GET", f"{base}/runs/{child}/lineage")
            assert middle["parent"] == {"runId": root, "atVersion": root_version}
            assert [c["runId"] for c in middle["children"]] == [grandchild]
            _, _, bottom = await _call(s, "GET", f"{base}/runs/{grandchild}/lineage")
            assert bottom["parent"]["runId"] == child
            assert bottom["children"] == []
            _, _, page = await _call(s, "GET", f"{base}/runs/{root}/lineage?limit=1")
            assert [c["runId"] for c in page["children"]] == [second]
            cursor = page["nextCursor"]
            _, _, rest = await _call(s, "GET", f"{base}/runs/{root}/lineage?cursor={cursor}")
            assert [c["runId"] for c in rest["children"]] == [child]

    run(main())


def test_a_repeated_key_answers_200_with_the_fork_and_a_reused_one_409(
    fork_server: LiveServer,
) -> None:
    """The same key and body give 200 and the same fork; the same key with another body is
    409 problem+json and stores nothing; the Idempotency-Key header works as the field does."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            parent = await _failed_run(s, fork_server)
            url = f"{fork_server.url}/runs/{parent}/fork"
            body = {"reset": ["b"], "idempotencyKey": "again-1"}
            status, _, first = await _call(s, "POST", url, json=body, headers=WAIT)
            assert status == 201
            status, _, second = await _call(s, "POST", url, json=body)
            assert (status, second["id"]) == (200, first["id"])
            status, _, third = await _call(
                s, "POST", url, json={"reset": ["b"]}, headers={"Idempotency-Key": "again-1"}
            )
            assert (status, third["id"]) == (200, first["id"])
            before = fork_server.store.max_position()
            status, headers, problem = await _call(
                s, "POST", url, json={"reset": ["c"], "idempotencyKey": "again-1"}
            )
            assert status == 409
            assert headers["Content-Type"].startswith(PROBLEM)
            assert "again-1" in problem["detail"]
            assert fork_server.store.max_position() == before

    run(main())


BAD_FORKS: list[tuple[str, Any, int, str | None]] = [
    ("atVersion 0", {"atVersion": 0}, 422, "$.atVersion"),
    ("atVersion past the end", {"atVersion": 9999}, 422, "$.atVersion"),
    ("atVersion not a number", {"atVersion": "1"}, 422, "$.atVersion"),
    ("unknown reset task", {"reset": ["nope"]}, 422, "$.reset[0]"),
    ("reset not a list", {"reset": "b"}, 422, "$.reset"),
    ("override of a task that runs again", {"outputs": {"b": 1}}, 422, "$.outputs.b"),
    ("override of no task", {"outputs": {"zz": 1}}, 422, "$.outputs.zz"),
    ("unknown field", {"atversion": 1}, 422, None),
    ("parameters not an object", {"parameters": [1]}, 422, "$.parameters"),
    ("empty key", {"idempotencyKey": ""}, 422, "$.idempotencyKey"),
    ("malformed JSON", b"{", 400, None),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "path"), BAD_FORKS, ids=[b[0] for b in BAD_FORKS]
)
def test_a_bad_fork_is_a_precise_problem_and_stores_nothing(
    fork_server: LiveServer, case: str, body: Any, status: int, path: str | None
) -> None:
    """Each bad request answers problem+json with its status (and path), never 500, and the
    log does not grow."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            parent = await _failed_run(s, fork_server)
            before = fork_server.store.max_position()
            url = f"{fork_server.url}/runs/{parent}/fork"
            kw: dict[str, Any] = (
                {"data": body, "headers": {"Content-Type": "application/json"}}
                if isinstance(body, bytes)
                else {"json": body}
            )
            got, headers, problem = await _call(s, "POST", url, **kw)
            assert got == status, problem
            assert headers["Content-Type"].startswith(PROBLEM)
            if path is not None:
                assert path in [e["path"] for e in problem["errors"]], problem
            assert fork_server.store.max_position() == before

    run(main())


def test_unknown_runs_are_404_for_fork_and_lineage(fork_server: LiveServer) -> None:
    """A run id no run has (UUID or not) is 404 problem+json; nothing is stored."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            for run_id in ("8d1f8a52-4a39-4c52-9d6e-2f8e0b1c5a77", "nope"):
                for method, tail in (("POST", "fork"), ("GET", "lineage")):
                    url = f"{fork_server.url}/runs/{run_id}/{tail}"
                    status, headers, _ = await _call(s, method, url)
                    assert status == 404
                    assert headers["Content-Type"].startswith(PROBLEM)
            assert fork_server.store.max_position() == 0

    run(main())


def test_a_bad_lineage_page_is_400(fork_server: LiveServer) -> None:
    """A malformed cursor or limit on lineage is 400 problem+json naming the parameter."""

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            parent = await _failed_run(s, fork_server)
            for query, name in (("cursor=x", "cursor"), ("limit=0", "limit")):
                url = f"{fork_server.url}/runs/{parent}/lineage?{query}"
                status, _, problem = await _call(s, "GET", url)
                assert status == 400
                assert problem["errors"][0]["path"] == f"$.query.{name}"

    run(main())
