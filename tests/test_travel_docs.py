"""The time-travel and audit examples of docs/api.md and docs/concepts.md run as written.

A real ``flowweaver serve`` on a SQLite file runs the docs' example run (the README workflow with
idempotency key ``order-17``, so its id is the one the docs show); each ``curl`` and
``flowweaver`` line of the two sections then runs through ``sh`` against it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "d3d648da-52b7-5a89-b411-23579625e03a"
SECTIONS = {"api.md": "## Time travel and audit", "concepts.md": "## Time travel"}


def _commands() -> list[str]:
    found = []
    for page, heading in SECTIONS.items():
        text = (ROOT / "docs" / page).read_text()
        section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
        for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
            found += [line for line in block.splitlines() if line.strip()]
    return found


def test_the_sections_have_examples() -> None:
    """Both sections show curl and flowweaver commands."""
    commands = _commands()
    assert sum(c.startswith("curl ") for c in commands) >= 5
    assert sum(c.startswith("flowweaver ") for c in commands) == 2


@pytest.mark.timeout(120)
def test_every_example_runs_as_written(tmp_path: Path) -> None:
    """Each command exits 0 (a stream is cut after 2 s) and prints what it should."""
    store = f"sqlite:///{tmp_path / 'flowweaver.db'}"
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        assert server.request("POST", "/workflows", EXAMPLE_WORKFLOW)[0] == 201
        body = {
            "workflowId": "example-workflow",
            "idempotencyKey": "order-17",
            "parameters": {"url": "https://example.com"},
        }
        status, run = server.request("POST", "/runs", body)
        assert (status, run["id"]) == (201, RUN_ID)
        deadline = time.monotonic() + 30
        while server.request("GET", f"/runs/{RUN_ID}")[1]["status"] != "completed":
            assert time.monotonic() < deadline, "the example run did not complete"
            time.sleep(0.05)
        # `date -u +%Y-%m-%dT%H:%M:%SZ` in the docs has whole seconds: the run must have begun
        # before the current second did, or "as of now" would be before its first event.
        began = datetime.fromisoformat(run["createdAt"])
        time.sleep(max(0.0, 1.0 - began.microsecond / 1e6 - (time.time() - began.timestamp())))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
        env["FLOWWEAVER_STORE"] = store
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        for command in _commands():
            line = command.replace("localhost:3000", f"127.0.0.1:{server.port}")
            streaming = line.startswith("curl -N")
            if line.startswith("curl "):
                line = "curl -sS --fail-with-body --max-time 2 " + line.removeprefix("curl ")
            done = subprocess.run(
                ["sh", "-c", line],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            expected = (0, 28) if streaming else (0,)  # 28: curl's --max-time ran out
            assert done.returncode in expected, (command, done.stdout, done.stderr)
            if streaming:
                assert "retry: " in done.stdout, command
            elif command.startswith("curl "):
                json.loads(done.stdout)
            else:
                assert RUN_ID in done.stdout.splitlines()[0], command
    finally:
        server.stop()
        server.close()
