"""`flowweaver serve --store redis://...` runs the original README's session end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.adapters.redis.support import REDIS_URL, delete_keys, new_key_prefix
from tests.serve_process import DEADLINE, ServeProcess
from tests.sse_client import read_sse

pytestmark = [pytest.mark.redis, pytest.mark.slow]


TERMINAL = {"RunCompleted", "RunFailed", "RunCancelled"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    """`flowweaver serve` on a Redis key prefix of its own, deleted afterwards."""
    prefix = new_key_prefix()
    started = ServeProcess(f"{REDIS_URL}?prefix={prefix}", tmp_path, args=["--grace", "5"])
    try:
        started.wait_started()
        yield started
    finally:
        started.close()
        delete_keys(prefix)


def test_serve_on_redis_runs_the_original_readme_session(server: ServeProcess) -> None:
    """Register, run, poll to completed, stream the run's events to the end, stop on SIGTERM."""
    assert "persists nothing" in server.wait_logged("store_durability")["detail"]

    status, created = server.request("POST", "/workflows", EXAMPLE_WORKFLOW)
    assert (status, created["id"], created["version"]) == (201, "example-workflow", 1)

    status, run = server.request("POST", "/runs", {"workflowId": "example-workflow"})
    assert status == 201
    run_id = run["id"]

    deadline = time.monotonic() + DEADLINE
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:  # each poll is a round trip to the server
        status, state = server.request("GET", f"/runs/{run_id}")
        assert status == 200
        if state["status"] in ("completed", "failed", "cancelled"):
            break
    assert state["status"] == "completed", state
    assert [t["status"] for t in state["tasks"]] == ["completed"] * 3
    saved = next(t for t in state["tasks"] if t["id"] == "task3")["output"]
    assert saved["result"]["saved"] is True

    messages = read_sse(server.port, f"/events/{run_id}")
    names = [event for _, event, _ in messages]
    assert names[0] == "RunStarted"
    assert names[-1] == "RunCompleted"
    assert names.count("TaskCompleted") == 3
    assert [int(offset) for offset, _, _ in messages] == list(range(1, len(messages) + 1))
    assert {data["runId"] for _, _, data in messages} == {run_id}

    assert server.stop() == 0
    server.wait_logged("server_stopped")
    assert [line for line in server.logs if line.get("level") in ("error", "critical")] == []
