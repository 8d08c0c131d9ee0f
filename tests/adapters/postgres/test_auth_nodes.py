"""Two `serve --auth token` nodes on one PostgreSQL schema: a revocation on one reaches both."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from tests.adapters.postgres.support import store_url
from tests.serve_process import ServeProcess
from tests.test_cli import fw

REVOCATION_DEADLINE = 1.0


def call(port: int, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """Send one request with ``token`` as its bearer; return the status and JSON answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        connection.request(method, path, body=json.dumps(body or {}), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def wait_status(port: int, token: str, status: int) -> None:
    """Block until GET /runs with ``token`` answers ``status``, 1 s at most."""
    deadline = time.monotonic() + REVOCATION_DEADLINE
    while (seen := call(port, "GET", "/runs", token)[0]) != status:
        assert time.monotonic() < deadline, f"still {seen}, not {status}, after 1 s"
        time.sleep(0.02)


def test_a_token_revoked_on_one_node_is_refused_by_the_other_within_a_second(
    schema: str, tmp_path: Path
) -> None:
    """The CLI makes an admin token; node A makes a reader token and revokes it; B follows."""
    url = store_url(schema, pool_size=2)
    made = fw("tokens", "create", "--name", "root", "--role", "admin", "--store", url,
              cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    nodes = [ServeProcess(url, tmp_path, args=("--auth", "token")) for _ in range(2)]
    try:
        for node in nodes:
            node.wait_started()
        a, b = nodes
        status, body = call(a.port, "POST", "/auth/tokens", admin, {"name": "r", "role": "reader"})
        assert status == 201, body
        reader = body["token"]
        wait_status(b.port, reader, 200)
        status, body = call(a.port, "POST", "/auth/tokens/r/revoke", admin)
        assert (status, body["revokedBy"]) == (200, "root")
        wait_status(b.port, reader, 401)
        wait_status(a.port, reader, 401)
        status, body = call(b.port, "POST", "/runs", reader, {"workflowId": "x"})
        assert status == 401 and body["detail"] == "the token was revoked"
    finally:
        for node in nodes:
            node.close()
