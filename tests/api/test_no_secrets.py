"""No secrets in logs or error answers: parameters, outputs, tokens and tickets stay out.

A real ``flowweaver serve`` process writes JSON lines at DEBUG level while a client submits a
run with ``{"password": "hunter2"}`` in its parameters, whose first task publishes the password
as its output and whose second fails with a message that quotes its inputs. Every request
carries ``Authorization: Bearer sekrit-token``, some ``?ticket=sekrit-ticket``, and a series of
bad requests puts the secrets where a careless error message would echo them. Then every log
line and every error answer is searched for the three strings. The failure message is the
handler's own data: it is stored on TaskFailed and shown in the run, by design, and only there.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from flowweaver.cli import _redact
from tests.serve_process import ServeProcess

SECRETS = ("hunter2", "sekrit-token", "sekrit-ticket")
AUTH = {"Authorization": "Bearer sekrit-token"}
JSON = {"Content-Type": "application/json"}

HANDLERS = """
import flowweaver


@flowweaver.handler("login")
def login(inputs, context):
    context.log.info("logging_in", attempt=context.attempt)
    raise PermissionError(f"login refused for {inputs}")
"""

WORKFLOW = {
    "id": "login-flow",
    "tasks": [
        {"id": "read", "handler": "echo", "inputs": {"value": "$.params.password"}},
        {
            "id": "login",
            "handler": "login",
            "dependencies": ["read"],
            "inputs": {"password": "$.result.value"},
        },
    ],
}


class Client:
    """Plain HTTP/1.1 requests to the server; every answer is kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[str, int, bytes]] = []

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={**AUTH, **(headers or {})})
            response = connection.getresponse()
            raw = response.read()
            if response.status >= 400:
                content_type = response.getheader("Content-Type", "")
                assert content_type.startswith("application/problem+json"), (path, raw)
            self.answers.append((f"{method} {path}", response.status, raw))
            return response.status, raw
        finally:
            connection.close()

    def json(self, method: str, path: str, document: Any, **headers: str) -> tuple[int, Any]:
        status, raw = self.send(method, path, json.dumps(document).encode(), {**JSON, **headers})
        return status, json.loads(raw)

    def raw(self, request: bytes) -> bytes:
        """Send bytes aiohttp's parser refuses; return the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(request)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        answer = b"".join(chunks)
        self.answers.append(("raw", int(answer.split(b" ", 2)[1]), answer))
        return answer


@pytest.fixture
def serve(tmp_path: Path) -> Any:
    (tmp_path / "login_handlers.py").write_text(HANDLERS)
    process = ServeProcess(
        f"sqlite:///{tmp_path / 'fw.db'}",
        tmp_path,
        args=("--log-level", "DEBUG", "--handlers", str(tmp_path / "login_handlers.py")),
    )
    try:
        process.wait_started()
        yield process
    finally:
        process.close()


def test_a_password_stays_in_its_run_out_of_every_log_line_and_error_answer(
    serve: ServeProcess,
) -> None:
    """Parameters, outputs, failure messages, tokens and tickets never reach a log line or an
    error answer; the run itself keeps the failure message that quotes the password."""
    client = Client(serve.port)
    assert client.json("POST", "/workflows", WORKFLOW)[0] == 201
    status, run = client.json(
        "POST",
        "/runs?ticket=sekrit-ticket",
        {"workflowId": "login-flow", "parameters": {"password": "hunter2"}},
        Prefer="wait=20",
        **{"Idempotency-Key": "k1"},
    )
    assert status == 201, run
    assert run["status"] == "failed", run
    run_id = run["id"]
    # By design the run keeps its data: the output and the failure message quote the password.
    status, raw = client.send("GET", f"/runs/{run_id}?ticket=sekrit-ticket")
    assert status == 200
    assert b"login refused for {'password': 'hunter2'}" in raw
    assert b'"value":"hunter2"' in raw
    status, raw = client.send("GET", f"/events/{run_id}?ticket=sekrit-ticket")
    assert status == 200
    assert b"event: RunFailed" in raw

    # Bad requests that carry the secrets where an error message could echo them.
    bad: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("GET", "/runs?limit=hunter2", None, {}),
        ("GET", "/runs?cursor=hunter2", None, {}),
        ("GET", f"/runs/{run_id}?at=hunter2", None, {}),
        ("GET", f"/runs/{run_id}?asOf=hunter2", None, {}),
        ("GET", f"/runs/{run_id}/diff?from=hunter2&to=1", None, {}),
        ("GET", f"/runs/{run_id}/history?after=hunter2", None, {}),
        ("GET", f"/events/{run_id}?after=hunter2&ticket=sekrit-ticket", None, {}),
        ("GET", "/events?runId=hunter2&types=hunter2", None, {}),
        ("GET", "/events?types=hunter2", None, {}),
        ("GET", "/events", None, {"Last-Event-ID": "hunter2"}),
        (
            "POST",
            "/runs",
            b'{"workflowId": "login-flow", "parameters": {"password": "hunter2"',
            JSON,
        ),
        ("POST", "/runs", b'{"workflowId": "login-flow", "parameters": "hunter2"}', JSON),
        ("POST", "/runs", b'{"workflowId": "nope", "parameters": {"password": "hunter2"}}', JSON),
        (
            "POST",
            "/runs",
            b'{"workflowId": "login-flow", "parameters": {"password": "hunter2"}}',
            {**JSON, "Prefer": "wait=hunter2"},
        ),
        (
            "POST",
            "/runs",
            b'{"workflowId": "login-flow", "parameters": {"password": "hunter2!"}}',
            {**JSON, "Idempotency-Key": "k1"},
        ),
        ("POST", "/runs", b'{"workflowId": "login-flow", "password": "hunter2"}', JSON),
        ("POST", "/runs", b'{"workflowId": 1, "parameters": {"password": "hunter2"}}', JSON),
        ("POST", "/workflows", b'{"id": "x", "tasks": [{"id": "hunter2"}]}', JSON),
        ("POST", f"/runs/{run_id}/cancel", b'{"reason": "hunter2"}', JSON),
        ("POST", f"/runs/{run_id}/tasks/login/complete", b'{"output": "hunter2"}', JSON),
        (
            "POST",
            f"/runs/{run_id}/fork",
            b'{"parameters": {"password": "hunter2"}, "at": 99}',
            JSON,
        ),
        ("DELETE", "/runs?ticket=sekrit-ticket", None, {}),
    ]
    for method, path, body, headers in bad:
        status, raw = client.send(method, path, body, headers)
        assert status >= 400, (method, path, status, raw)
    # Expect other than 100-continue (answered before the body is read)
    status, _ = client.send("POST", "/runs", b"{}", {**JSON, "Expect": "hunter2"})
    assert status == 417
    # Bytes aiohttp's parser refuses; its own answer and log line would quote the line.
    for request in (
        b"GET /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit-token\x01\r\n\r\n",
        b"GET /runs\x01?ticket=sekrit-ticket HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekrit-token"
        + b"a" * 9000
        + b"\r\n\r\n",
        b"POST /runs HTTP/1.1\r\nHost: x\r\nX-Password: hunter2\x7f\r\nContent-Length: 2\r\n\r\n{}",
    ):
        answer = client.raw(request)
        assert answer.split(b" ", 2)[1] == b"400", answer
        assert b"application/problem+json" in answer, answer

    assert serve.stop() == 0
    lines = serve.drain()
    events = {line.get("event") for line in lines}
    assert {"server_started", "run_started", "http_request", "request_unparsable"} <= events
    assert any(line.get("event") == "logging_in" for line in lines)  # the handler's own line
    for line in lines:
        text = json.dumps(line)
        for secret in SECRETS:
            assert secret not in text, line
    errors = [answer for answer in client.answers if answer[1] >= 400]
    assert len(errors) == len(bad) + 5
    for what, status, raw in errors:
        for secret in SECRETS:
            assert secret.encode() not in raw, (what, status, raw)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://fw:hunter2@db/fw", "postgresql://fw:***@db/fw"),
        ("postgresql://db/fw?user=fw&password=hunter2", "postgresql://db/fw?user=fw&password=***"),
        ("postgresql://db/fw?sslpassword=hunter2&x=1", "postgresql://db/fw?sslpassword=***&x=1"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("sqlite:///fw.db", "sqlite:///fw.db"),
    ],
)
def test_store_urls_are_logged_without_their_password(url: str, shown: str) -> None:
    """The store URL in server_started and in CLI messages masks a password wherever it is."""
    assert _redact(url) == shown
