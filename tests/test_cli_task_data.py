"""`flowweaver serve --max-task-data` (FLOWWEAVER_MAX_TASK_DATA) caps each task's data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess

WORKFLOW = {
    "id": "amplify",
    "tasks": [{"id": "t", "handler": "echo", "inputs": {"a": "$.params.big", "b": "$.params.big"}}],
}


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_serve_applies_the_task_data_cap(tmp_path: Path, how: str) -> None:
    """With a 2 KiB cap, inputs of 3 KB fail the task with InputTooLarge naming the cap."""
    args = ["--max-task-data", "2KiB"] if how == "flag" else []
    env = {"FLOWWEAVER_MAX_TASK_DATA": "2KiB"} if how == "environment" else {}
    server = ServeProcess("memory://", tmp_path, args=args, env=env)
    try:
        server.wait_started()
        assert server.request("POST", "/workflows", WORKFLOW)[0] == 201
        status, run = server.request(
            "POST", "/runs", {"workflowId": "amplify", "parameters": {"big": "x" * 1500}}
        )
        assert status == 201
        server.wait_logged("run_finished", where=lambda line: line.get("run_id") == run["id"])
        status, state = server.request("GET", f"/runs/{run['id']}")
        error = state["tasks"][0]["lastError"]
        assert (state["status"], error["type"]) == ("failed", "InputTooLarge")
        assert "limit of 2048 bytes" in error["message"]
        assert server.stop() == 0
    finally:
        server.close()


def test_a_bad_task_data_cap_is_one_line() -> None:
    """A cap that is not a size, or under 1 KiB, is a usage error of one line."""
    for value in ("lots", "100"):
        done = subprocess.run(
            [sys.executable, "-m", "flowweaver.cli", "serve", "--max-task-data", value],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2
        error = done.stderr.strip().splitlines()[-1]
        assert error.startswith("flowweaver: error: argument --max-task-data:"), done.stderr
        assert "Traceback" not in done.stderr
