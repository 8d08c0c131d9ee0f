"""`flowweaver tokens create|list|revoke`, run as a user runs them, beside a live server.

The first command of each test runs as a subprocess, as a user runs it; the others run in
this process (tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import pytest

from flowweaver.store.sqlite import SQLiteEventStore
from tests.cli_in_process import fw_in_process
from tests.serve_process import ServeProcess
from tests.test_cli import fw

REVOCATION_DEADLINE = 1.0


def call(port: int, method: str, path: str, token: str | None = None) -> tuple[int, dict[str, str]]:
    """Send one request with ``token`` as its bearer; return the status and headers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        connection.close()


def make(store: str, name: str, role: str, cwd: Path) -> str:
    done = fw_in_process(
        "tokens", "create", "--name", name, "--role", role, "--store", store, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    assert "shown only now" in done.stderr
    token = done.stdout.strip()
    assert token.startswith("fw_") and len(token) == 46
    return token


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fw.db'}"


def test_create_list_revoke_and_only_the_hash_is_stored(sqlite_store: str, tmp_path: Path) -> None:
    """create prints the token once; list shows name, role, dates, never the token or hash."""
    token = make(sqlite_store, "ci", "submitter", tmp_path)
    db = (tmp_path / "fw.db").read_bytes()
    assert token.encode() not in db
    listed = fw("tokens", "list", "--store", sqlite_store, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:2] == ["ci", "submitter"]
    assert listed.stdout.splitlines()[1].split()[-1] == "-"
    revoked = fw_in_process("tokens", "revoke", "ci", "--store", sqlite_store, cwd=tmp_path)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "token 'ci' revoked")
    as_json = fw_in_process("tokens", "list", "--json", "--store", sqlite_store, cwd=tmp_path)
    row = json.loads(as_json.stdout)
    assert row["name"] == "ci" and row["revokedAt"] is not None
    assert row["revokedBy"].startswith("cli") and "hash" not in row
    assert token not in listed.stdout + as_json.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--name", "has space", "--role", "reader"), "--name: must match"),
        (("create", "--name", "ci", "--role", "reader"), "exists already"),
        (("revoke", "nobody"), "token 'nobody' not found"),
    ],
)
def test_bad_requests_are_one_line_and_store_nothing(
    sqlite_store: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """A bad name, a duplicate, an unknown token: one line on stderr, exit 1, nothing stored."""
    make(sqlite_store, "ci", "reader", tmp_path)
    done = fw("tokens", *args, "--store", sqlite_store, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    store = SQLiteEventStore(str(tmp_path / "fw.db"))
    try:
        assert len(store.token_events()) == 1
    finally:
        store.close()


def test_an_unknown_role_is_a_usage_error(sqlite_store: str, tmp_path: Path) -> None:
    """--role takes only reader, submitter, operator and admin."""
    done = fw("tokens", "create", "--name", "x", "--role", "root", "--store", sqlite_store,
              cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "invalid choice" in done.stderr
    assert not (tmp_path / "fw.db").exists()


def test_list_of_a_missing_store_says_so(tmp_path: Path) -> None:
    """list and revoke never create a store."""
    done = fw("tokens", "list", "--store", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert done.returncode == 1 and "no store at" in done.stderr


def check_tokens_beside_a_server(store: str, cwd: Path) -> None:
    """`serve --auth token` on ``store``; tokens the CLI makes and revokes on that store take
    effect on the server within a second."""
    server = ServeProcess(store, cwd, args=("--auth", "token"))
    try:
        server.wait_started()
        assert call(server.port, "GET", "/runs")[0] == 401
        token = make(store, "reader-1", "reader", cwd)
        deadline = time.monotonic() + REVOCATION_DEADLINE
        while call(server.port, "GET", "/runs", token)[0] != 200:
            assert time.monotonic() < deadline, "the new token was not accepted within 1 s"
            time.sleep(0.02)
        done = fw_in_process("tokens", "revoke", "reader-1", "--store", store, cwd=cwd)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + REVOCATION_DEADLINE
        while (answer := call(server.port, "GET", "/runs", token))[0] != 401:
            assert time.monotonic() < deadline, "the revoked token was still accepted after 1 s"
            time.sleep(0.02)
        assert answer[1]["WWW-Authenticate"].startswith("Bearer")
        assert call(server.port, "GET", "/healthz")[0] == 200
    finally:
        server.close()


def test_tokens_made_and_revoked_beside_a_live_server_take_effect_within_a_second(
    sqlite_store: str, tmp_path: Path
) -> None:
    """The CLI writes to the SQLite store a server drives; the server sees each change in 1 s."""
    check_tokens_beside_a_server(sqlite_store, tmp_path)
