"""The command line against a real server (``--server``), on SQLite and PostgreSQL, and the
same commands on the store URL; bad servers and tokens are one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flowweaver.client import Client
from tests.cli_in_process import fw_in_process
from tests.client.support import CHAIN, chain, free_port, serving
from tests.client.test_bad_answers import _Html
from tests.store_urls import StoreUrls, store_urls
from tests.test_cli import FLOWWEAVER, _env, fw

__all__ = ["store_urls"]

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
MISSING = "00000000-0000-4000-8000-000000000000"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _one_line_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("flowweaver: error: "), lines
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_commands_drive_a_server(kind: str, store_urls: StoreUrls, tmp_path: Path) -> None:
    """register, run --wait --json, status, events, runs list, pause, resume, cancel, fork,
    diff, verify through --server (and FLOWWEAVER_SERVER); runs list and workflows on the
    store URL give the same answers. The commands run in this process, but for `run --wait`,
    a real one."""
    store = store_urls(kind)
    document = tmp_path / "chain.json"
    document.write_text(json.dumps(chain(2, 0.01)))
    with serving(store, tmp_path) as server:
        url = f"http://127.0.0.1:{server.port}"
        env = _env(FLOWWEAVER_SERVER=url)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return fw_in_process(*args, cwd=tmp_path, env=env)

        registered = cli("workflows", "register", str(document))
        assert registered.stdout == f"workflow {CHAIN} v1 registered\n", registered.stderr
        assert cli("workflows", "register", str(document)).stdout.endswith("unchanged\n")
        run = ["run", str(document), "--wait", "--json", "--params", '{"n": 1}']
        done = fw(*run, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        events = _lines(done.stdout)
        run_id = events[0]["runId"]
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "RunCompleted"
        assert f"run {run_id} completed" in done.stderr

        status = json.loads(cli("status", run_id, "--json").stdout)
        assert status["status"] == "completed"
        assert status["parameters"] == {"n": 1}
        assert f"run {run_id}  completed" in cli("status", run_id).stdout
        assert _lines(cli("events", run_id).stdout) == events
        assert _lines(cli("events", run_id, "--follow", "--after", "2").stdout) == events[2:]
        listed = _lines(cli("runs", "list", "--json").stdout)
        assert [r["id"] for r in listed] == [run_id]
        assert cli("diff", run_id, "--from", "0", "--to", "1").returncode == 0
        assert json.loads(cli("diff", run_id, "--from", "0", "--to", "1", "--json").stdout)["run"][
            "status"
        ] == ["pending", "running"]
        assert cli("verify", run_id).stdout.startswith(f"{run_id} ok version {len(events)}")
        assert cli("verify", "--all").returncode == 0
        shown = json.loads(cli("workflows", "show", CHAIN).stdout)
        assert shown["definition"] == chain(2, 0.01)

        forked = cli("fork", run_id, "--reset", "t1", "--wait", "--json")
        assert forked.returncode == 0, forked.stderr
        fork_id = _lines(forked.stdout)[0]["runId"]
        assert _lines(forked.stdout)[0]["type"] == "RunForked"

        with Client(url) as client:
            client.register_workflow({**chain(1, 30), "id": "slow"})
            slow = client.start_run("slow").id
        paused = cli("pause", slow, "--reason", "look")
        assert paused.stdout == f"run {slow} paused\n", paused.stderr
        assert cli("resume", slow).stdout == f"run {slow} running\n"
        cancelled = cli("cancel", slow, "--reason", "enough")
        assert cancelled.stdout == f"run {slow} cancelled\n", cancelled.stderr
        refused = cli("pause", run_id)
        assert "has ended (completed)" in _one_line_error(refused)

    # The same questions of the store, the server gone.
    on_store = _env(FLOWWEAVER_STORE=store)
    listed = fw_in_process("runs", "list", "--json", cwd=tmp_path, env=on_store)
    assert {r["id"] for r in _lines(listed.stdout)} == {run_id, fork_id, slow}
    workflows = fw_in_process("workflows", "list", "--json", cwd=tmp_path, env=on_store)
    assert {w["id"] for w in _lines(workflows.stdout)} == {CHAIN, "slow"}
    again = fw_in_process("workflows", "register", str(document), cwd=tmp_path, env=on_store)
    assert again.stdout.endswith("unchanged\n"), again.stderr


def test_bad_servers_and_tokens_are_one_line(tmp_path: Path) -> None:
    """A server that is down, one that answers HTML, a wrong token, an unknown run, a URL
    that is not http: one line on stderr, exit 1 (2 for the URL), never a traceback. The
    first command is a real process; the others run in this one."""
    down = fw("status", MISSING, "--server", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert "connection refused" in _one_line_error(down)
    html = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=html.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{html.server_address[1]}"
        answered = fw_in_process("runs", "list", "--server", url, cwd=tmp_path)
        assert "HTML page" in _one_line_error(answered)
    finally:
        html.shutdown()
        html.server_close()
    scheme = fw_in_process("status", MISSING, "--server", "ftp://example", cwd=tmp_path)
    assert "--server" in _one_line_error(scheme, code=2)

    store = f"sqlite:///{tmp_path / 'auth.db'}"
    create = ["tokens", "create", "--name", "ops", "--role", "operator", "--store", store]
    made = fw_in_process(*create, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with serving(store, tmp_path, "--auth", "token") as server:
        url = f"http://127.0.0.1:{server.port}"
        wrong = fw_in_process("runs", "list", "--server", url, "--token", "fw_wrong", cwd=tmp_path)
        assert "HTTP 401" in _one_line_error(wrong)
        env = _env(FLOWWEAVER_SERVER=url, FLOWWEAVER_TOKEN=made.stdout.strip())
        missing = fw_in_process("status", MISSING, cwd=tmp_path, env=env)
        assert f"run '{MISSING}' not found" in _one_line_error(missing)


def _on_a_terminal(command: list[str], cwd: Path) -> bytes:
    """Run ``command`` with a pseudo-terminal as its output; return what it drew (exit 0)."""
    leader, follower = pty.openpty()
    env = _env(COLUMNS="120", TERM="xterm")
    process = subprocess.Popen(
        command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed: the command ended
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert process.wait(timeout=30) == 0, drawn
    return drawn


def test_embedded_run_wait_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    """On a terminal, `run --wait` with no server draws the table too, each task completed."""
    document = tmp_path / "chain.json"
    document.write_text(json.dumps(chain(3, 0.05)))
    store = f"sqlite:///{tmp_path / 'embedded.db'}"
    command = [FLOWWEAVER, "run", str(document), "--wait", "--store", store]
    text = _on_a_terminal(command, tmp_path).decode(errors="replace")
    assert "ELAPSED" in text
    assert all(f"t{i}" in text for i in range(3))
    assert text.count("completed") >= 3


def test_events_follow_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    """On a terminal, `events --follow --server` draws a table of task states and elapsed
    times until the run ends."""
    with serving(f"sqlite:///{tmp_path / 's.db'}", tmp_path) as server:
        url = f"http://127.0.0.1:{server.port}"
        with Client(url) as client:
            client.register_workflow(chain(3, 0.05))
            run_id = client.start_run(CHAIN).id
        drawn = _on_a_terminal(
            [FLOWWEAVER, "events", run_id, "--follow", "--server", url], tmp_path
        )
    text = drawn.decode(errors="replace")
    assert "TASK" in text
    assert "ELAPSED" in text
    assert f"run {run_id}" in text
    assert text.count("completed") >= 3
    assert "{" not in text  # no JSON lines


def test_embedded_run_wait_json_prints_json_lines(tmp_path: Path) -> None:
    """`run --wait --json` with no server prints the events as JSON lines on stdout, the run's
    id and outcome on stderr."""
    document = tmp_path / "chain.json"
    document.write_text(json.dumps(chain(2, 0.01)))
    store = f"sqlite:///{tmp_path / 'embedded.db'}"
    done = fw("run", str(document), "--wait", "--json", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = _lines(done.stdout)
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "RunCompleted"
    assert f"run {events[0]['runId']} completed" in done.stderr
