"""The ``flowweaver`` command, run as a subprocess the way a user runs it.

Each test runs its first command, and any whose process matters (signals, timeouts, a port),
as a subprocess; the commands that read or refuse after it run in this process
(tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.cli_in_process import fw_in_process
from tests.serve_process import ServeProcess

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env.update(extra)
    return env


def fw(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS`` to the end and return what it printed."""
    return subprocess.run(
        [FLOWWEAVER, *args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    if method != "GET":  # every POST says JSON, even with no body
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _stream_until(url: str, event: str) -> list[str]:
    """Read an SSE stream line by line until an ``event:`` line names ``event``."""
    lines = []
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback
        for raw in response:
            line = raw.decode().rstrip("\n")
            lines.append(line)
            if line == f"event: {event}":
                return lines
    return lines


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "example.json"
    path.write_text(json.dumps(EXAMPLE_WORKFLOW))
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``flowweaver serve`` on a free port and a SQLite file, configured by environment."""
    port = _free_port()
    log = tmp_path / "serve.log"
    env = _env(
        FLOWWEAVER_PORT=str(port),
        FLOWWEAVER_STORE=f"sqlite:///{tmp_path / 'fw.db'}",
        FLOWWEAVER_WORKERS="2",
        FLOWWEAVER_GRACE="20",
    )
    with log.open("wb") as out:
        process = subprocess.Popen([FLOWWEAVER, "serve"], cwd=tmp_path, env=env, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if _request("GET", f"{url}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        yield process, url, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _readme_bodies() -> list[Any]:
    """Return the JSON bodies of the curl lines in README.md's Quick start, in order."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [json.loads(body) for body in re.findall(r"-d '([^']*)'", quick)]


def test_serve_answers_the_readme_session_and_drains_on_sigterm(
    served: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    """serve answers the README's session; SIGTERM lets a running handler finish, exits 0."""
    process, url, log = served
    workflow, run_request = _readme_bodies()
    assert _request("POST", f"{url}/workflows", workflow) == (
        201,
        {"id": "example-workflow", "version": 1},
    )
    status, run = _request("POST", f"{url}/runs", run_request)
    assert status == 201
    lines = _stream_until(f"{url}/events/{run['id']}", "RunCompleted")
    assert lines[0] == "retry: 3000"
    assert "event: RunCompleted" in lines
    status, state = _request("GET", f"{url}/runs/{run['id']}")
    assert (status, state["status"]) == (200, "completed")
    assert state["tasks"][2]["output"] == {
        "result": {"saved": True, "processed": {"count": 8, "total": 31}}
    }

    slow = {"id": "slow", "tasks": [{"id": "nap", "handler": "sleep", "inputs": {"seconds": 1}}]}
    assert _request("POST", f"{url}/workflows", slow)[0] == 201
    status, napping = _request("POST", f"{url}/runs", {"workflowId": "slow"})
    _stream_until(f"{url}/events/{napping['id']}", "TaskStarted")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [r["event"] for r in records]
    assert events.index("server_started") < events.index("server_draining")
    assert events[-1] == "server_stopped"
    assert any(r["event"] == "http_request" and r["path"] == "/runs" for r in records)
    # The handler that was running when SIGTERM came finished, and its run with it.
    shown = fw(
        "status",
        napping["id"],
        "--json",
        cwd=tmp_path,
        env=_env(FLOWWEAVER_STORE=f"sqlite:///{tmp_path / 'fw.db'}"),
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "completed"


def test_run_wait_then_status_events_and_replay(tmp_path: Path, workflow_file: Path) -> None:
    """run --wait prints progress and exits 0; status, events and replay read the same store.
    (The reading commands run in this process: tests/cli_in_process.py.)"""
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    done = fw("run", str(workflow_file), "--wait", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    run_id = out[0].split()[1]
    assert out[0] == f"run {run_id} (example-workflow v1)"
    assert any("task2" in line and "completed" in line for line in out)
    assert "RunCompleted" in done.stdout
    assert out[-1].startswith(f"run {run_id} completed in ")

    status = fw_in_process("status", run_id, "--store", store, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"run {run_id}  completed" in status.stdout
    assert "task3" in status.stdout
    as_json = json.loads(
        fw_in_process("status", run_id, "--json", "--store", store, cwd=tmp_path).stdout
    )
    assert [t["status"] for t in as_json["tasks"]] == ["completed"] * 3

    events = fw_in_process("events", run_id, "--after", "2", "--store", store, cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert [e["version"] for e in lines] == list(range(3, as_json["version"] + 1))
    assert lines[-1]["type"] == "RunCompleted"
    followed = fw_in_process("events", run_id, "--follow", "--store", store, cwd=tmp_path)
    assert followed.returncode == 0
    assert len(followed.stdout.splitlines()) == as_json["version"]

    replay = fw_in_process("replay", run_id, "--at", "2", "--json", "--store", store, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    at_two = json.loads(replay.stdout)
    assert at_two["version"] == 2
    assert at_two["tasks"][0]["status"] == "scheduled"
    text = fw_in_process("replay", run_id, "--at", "2", "--store", store, cwd=tmp_path).stdout
    assert f"as of event 2 of {as_json['version']}" in text


def test_run_that_fails_exits_1(tmp_path: Path) -> None:
    """A run that fails is reported with its failed tasks and exit code 1."""
    path = tmp_path / "fails.json"
    path.write_text(json.dumps({"id": "f", "tasks": [{"id": "boom", "handler": "fail"}]}))
    result = fw("run", str(path), "--store", f"sqlite:///{tmp_path / 'f.db'}", cwd=tmp_path)
    assert result.returncode == 1
    assert "failed tasks: boom" in result.stdout


def test_bad_input_is_one_line_and_stores_nothing(tmp_path: Path, workflow_file: Path) -> None:
    """Usage errors exit 2, failures exit 1, each one line on stderr; no store file appears.
    The cases run in this process (tests/cli_in_process.py), the last one in a new one."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "x", "tasks": [{"id": "a", "handler": "noop", "dependencies": ["z"]}]}')
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"id": "x", "tasks": [{"id": "a", "handler": "nobody_has_this"}]}')
    cases = [
        (["run", str(bad)], 1, "$.tasks[0].dependencies[0]: unknown task 'z'"),
        (["run", str(unknown)], 1, "nobody_has_this"),
        (["run", str(tmp_path / "missing.json")], 1, "cannot read"),
        (["run", str(workflow_file), "--params", "{nope"], 2, "--params is not JSON"),
        (["run", str(workflow_file), "--params", "[1]"], 2, "JSON object"),
        (["status", "abc"], 1, "no store at flowweaver.db"),
        (["events", "abc", "--after", "-3"], 2, "--after"),
        (["replay", "abc"], 2, "--at"),
        (["launch"], 2, "invalid choice"),
        ([], 2, "required"),
        (["serve", "--port", "99999"], 2, "not a port"),
        (["run", str(workflow_file), "--store", "nosuch://x"], 1, "unknown store URL scheme"),
    ]
    for args, code, message in cases:
        result = fw_in_process(*args, cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("flowweaver:")]
        assert len(errors) == 1, (args, result.stderr)
        assert message in errors[0], (args, errors[0])
    assert not (tmp_path / "flowweaver.db").exists()
    env_error = fw("serve", cwd=tmp_path, env=_env(FLOWWEAVER_PORT="abc"))
    assert env_error.returncode == 2
    assert "FLOWWEAVER_PORT" in env_error.stderr
    assert not (tmp_path / "flowweaver.db").exists()


def test_unknown_run_and_busy_port(tmp_path: Path, workflow_file: Path) -> None:
    """status of an unknown run and serve on a taken port fail with exit 1 and one line."""
    store = f"sqlite:///{tmp_path / 'x.db'}"
    assert fw("run", str(workflow_file), "--store", store, cwd=tmp_path).returncode == 0
    for command in ("status", "events"):
        result = fw_in_process(
            command, "00000000-0000-0000-0000-000000000000", "--store", store, cwd=tmp_path
        )
        assert result.returncode == 1
        assert "no run 00000000-0000-0000-0000-000000000000" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = fw(
            "serve", "--port", str(port), "--store", store, "--log-format", "json", cwd=tmp_path
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


NAP = {"id": "nap", "tasks": [{"id": "t", "handler": "sleep", "inputs": {"seconds": 30}}]}


def test_run_timeout_returns_at_once_and_cancel_ends_the_run(tmp_path: Path) -> None:
    """run --timeout 2 exits 1 after about 2 s saying how to cancel; cancel RUN_ID ends it."""
    (tmp_path / "nap.json").write_text(json.dumps(NAP))
    store = f"sqlite:///{tmp_path / 'n.db'}"
    process = subprocess.Popen(
        [FLOWWEAVER, "run", "nap.json", "--wait", "--timeout", "2", "--store", store],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    run_id = process.stdout.readline().split()[1]  # printed as the run starts
    began = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    took = time.monotonic() - began
    assert process.returncode == 1, stderr
    assert took < 3.0, took  # the 2 s asked for, not the 30 s handler nor a grace period
    errors = stderr.splitlines()
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"flowweaver: error: run {run_id} did not finish within 2 s;")
    assert f"flowweaver cancel {run_id} --store {store}" in errors[0]
    shown = fw_in_process("status", run_id, "--json", "--store", store, cwd=tmp_path)
    assert json.loads(shown.stdout)["status"] == "running"

    began = time.monotonic()
    cancelled = fw("cancel", run_id, "--reason", "too slow", "--store", store, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"run {run_id} cancelled\n"
    assert time.monotonic() - began < 5
    events = fw_in_process("events", run_id, "--store", store, cwd=tmp_path).stdout.splitlines()
    kinds = [json.loads(line)["type"] for line in events]
    assert kinds[-2:] == ["TaskFailed", "RunCancelled"]  # the attempt of the gone process
    assert json.loads(events[kinds.index("RunCancelRequested")])["reason"] == "too slow"

    for args, message in [
        ([run_id], f"run {run_id} already ended (cancelled)"),
        (["00000000-0000-0000-0000-000000000000"], "no run 00000000-"),
    ]:
        refused = fw_in_process("cancel", *args, "--store", store, cwd=tmp_path)
        assert refused.returncode == 1
        lines = refused.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith("flowweaver: error: ")
        assert message in lines[0]


def test_ctrl_c_stops_run_at_once_and_cancel_beside_a_server_says_where(tmp_path: Path) -> None:
    """SIGINT ends `run --wait` without waiting for the handler; cancel defers to a server."""
    (tmp_path / "nap.json").write_text(json.dumps(NAP))
    store = f"sqlite:///{tmp_path / 'n.db'}"
    process = subprocess.Popen(
        [FLOWWEAVER, "run", "nap.json", "--wait", "--store", store],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        run_id = first.split()[1]
        for line in process.stdout:
            if "started" in line:
                break
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
        assert time.monotonic() - began < 2
        assert process.returncode == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"flowweaver: interrupted; run {run_id} stays in the store")
    assert f"flowweaver cancel {run_id}" in lines[0]

    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()  # it resumes the run: the attempt is interrupted and rerun
        refused = fw("cancel", run_id, "--store", store, cwd=tmp_path)
        assert refused.returncode == 1
        assert refused.stderr.splitlines() == [
            f"flowweaver: error: run {run_id} is driven by another engine on this store "
            f"(pid {server.pid}); cancel it through that server: POST /runs/{run_id}/cancel"
        ]
        assert server.request("POST", f"/runs/{run_id}/cancel")[0] == 202
        assert _stream_until(f"http://127.0.0.1:{server.port}/events/{run_id}", "RunCancelled")
    finally:
        server.close()


def test_events_after_past_the_end_is_an_error_like_the_api(
    tmp_path: Path, workflow_file: Path
) -> None:
    """events --after beyond the run's last event exits 1 with one line; at the end it is empty."""
    store = f"sqlite:///{tmp_path / 'e.db'}"
    run_id = fw("run", str(workflow_file), "--store", store, cwd=tmp_path).stdout.split()[1]
    count = json.loads(
        fw_in_process("status", run_id, "--json", "--store", store, cwd=tmp_path).stdout
    )["version"]
    past = fw_in_process(
        "events", run_id, "--after", str(count + 1), "--store", store, cwd=tmp_path
    )
    assert past.returncode == 1
    assert past.stderr == (
        f"flowweaver: error: run {run_id} has {count} events; --after is {count + 1}\n"
    )
    for extra in ([], ["--follow"]):  # the last event is terminal: nothing to follow
        at_end = fw_in_process(
            "events", run_id, "--after", str(count), *extra, "--store", store, cwd=tmp_path
        )
        assert (at_end.returncode, at_end.stdout, at_end.stderr) == (0, "", "")
