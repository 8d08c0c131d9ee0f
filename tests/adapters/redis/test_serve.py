"""`flowweaver serve --store redis://...` runs the original README's session end to end."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.adapters.redis.support import REDIS_URL, delete_keys, new_key_prefix
from tests.sse_client import read_sse

pytestmark = [pytest.mark.redis, pytest.mark.slow]


TERMINAL = {"RunCompleted", "RunFailed", "RunCancelled"}
DEADLINE = 30.0


class Server:
    """A `flowweaver serve` subprocess and the JSON log lines it writes to stderr."""

    def __init__(self, store_url: str, cwd: Path) -> None:
        script = Path(sys.executable).with_name("flowweaver")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "flowweaver.cli"]
        self.process = subprocess.Popen(
            [
                *command, "serve", "--store", store_url, "--host", "127.0.0.1",
                "--port", "0", "--log-format", "json", "--grace", "5",
            ],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")},
        )  # fmt: skip
        self.logs: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_logged("server_started")["port"])

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                self._lines.put(json.loads(raw))
            except ValueError:
                self._lines.put({"event": "unparsed", "line": raw.decode(errors="replace")})
        self._lines.put(None)

    def wait_logged(self, event: str, timeout: float = DEADLINE) -> dict[str, Any]:
        """Return the first log line of ``event``, reading lines as they come."""
        for line in self.logs:
            if line.get("event") == event:
                return line
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"serve exited before logging {event}: {self.logs}")
            self.logs.append(line)
            if line.get("event") == event:
                return line
        raise AssertionError(f"serve did not log {event} within {timeout} s: {self.logs}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one JSON request; return the status and the decoded JSON answer."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if payload else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def stop(self) -> int:
        """SIGTERM the server and return its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=DEADLINE)
        finally:
            self._reader.join(timeout=DEADLINE)

    def kill(self) -> None:
        """Kill the server if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`flowweaver serve` on a Redis key prefix of its own, deleted afterwards."""
    prefix = new_key_prefix()
    started = Server(f"{REDIS_URL}?prefix={prefix}", tmp_path)
    try:
        yield started
    finally:
        started.kill()
        delete_keys(prefix)


def test_serve_on_redis_runs_the_original_readme_session(server: Server) -> None:
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
