"""A `flowweaver serve` subprocess for tests, and the JSON log lines it writes to stderr."""

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEADLINE = 30.0


class ServeProcess:
    """`flowweaver serve --port 0` on loopback; ``wait_started()`` learns the real port."""

    def __init__(
        self,
        store_url: str,
        cwd: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        script = Path(sys.executable).with_name("flowweaver")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "flowweaver.cli"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            [
                *command, "serve", "--store", store_url, "--host", "127.0.0.1",
                "--port", "0", "--log-format", "json", *args,
            ],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
        )  # fmt: skip
        self.pid = self.process.pid
        self.port = 0
        self.logs: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            try:
                self._lines.put(json.loads(raw))
            except ValueError:
                self._lines.put({"event": "unparsed", "line": raw.decode(errors="replace")})
        self._lines.put(None)

    def wait_started(self) -> None:
        """Block until the server listens; learn its port."""
        self.port = int(self.wait_logged("server_started")["port"])

    def drain(self) -> list[dict[str, Any]]:
        """Read every log line written so far; return them all."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return self.logs
            if line is not None:
                self.logs.append(line)

    def wait_logged(
        self, event: str, timeout: float = DEADLINE, where: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any]:
        """Return the first log line of ``event`` (matching ``where``), reading as lines come."""
        for line in self.logs:
            if line.get("event") == event and where(line):
                return line
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"serve {self.pid} exited before logging {event}: {self.logs}")
            self.logs.append(line)
            if line.get("event") == event and where(line):
                return line
        raise AssertionError(f"serve {self.pid} did not log {event} within {timeout} s")

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = DEADLINE
    ) -> tuple[int, Any]:
        """Send one JSON request; return the status and the decoded JSON answer.

        An error answer must be problem+json.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body)
            # Every POST says JSON, even with no body (flowweaver/api/exposure.py).
            headers = {"Content-Type": "application/json"} if method != "GET" else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            content_type = response.getheader("Content-Type", "")
            raw = response.read()
            if response.status >= 400:
                assert content_type.startswith("application/problem+json"), (response.status, raw)
            return response.status, json.loads(raw or b"null")
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
        """SIGKILL the process and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=DEADLINE)

    def close(self) -> None:
        """Kill the process if it still runs (stopped or not) and close its pipe."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=DEADLINE)
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
