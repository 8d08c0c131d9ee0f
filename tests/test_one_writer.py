"""One engine per SQLite store: a second engine beside a live server refuses to drive runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowweaver.engine import Engine
from flowweaver.errors import StoreLockedError
from flowweaver.store import SQLiteEventStore
from tests.cli_in_process import fw_in_process
from tests.serve_process import ServeProcess

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")

GATED_HANDLERS = '''
from pathlib import Path

import flowweaver.handlers as fw


@fw.handler("gated")
def gated(inputs, context):
    """Record the call, then wait until the test creates the file `open`."""
    here = Path(inputs["dir"])
    with (here / "calls.txt").open("a") as calls:
        calls.write(f"{context.run_id} {context.task_id} {context.attempt}\\n")
    while not (here / "open").exists():
        if context.cancelled.wait(0.01):
            break
    return {"ok": True}
'''


def _fw(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    return subprocess.run(
        [FLOWWEAVER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _stream_until(port: int, run_id: str, event: str) -> list[str]:
    """Read the run's SSE stream until an ``event:`` line names ``event``; return the names."""
    names = []
    url = f"http://127.0.0.1:{port}/events/{run_id}"
    with urllib.request.urlopen(url, timeout=20) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                names.append(line[len("event: ") :])
                if names[-1] == event:
                    return names
    return names


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    """`flowweaver serve` on fw.db in tmp_path, with the gated handler loaded."""
    (tmp_path / "gated_handlers.py").write_text(GATED_HANDLERS)
    serve = ServeProcess(
        "sqlite:///fw.db", tmp_path, args=["--handlers", "gated_handlers.py", "--workers", "4"]
    )
    try:
        serve.wait_started()
        yield serve
    finally:
        serve.close()


def test_second_engine_beside_a_live_server_refuses_and_the_servers_runs_finish(
    server: ServeProcess, tmp_path: Path
) -> None:
    """`run --key K` beside `serve` exits 1 naming the server's pid; its runs finish untouched."""
    workflow = {
        "id": "gated",
        "tasks": [
            {"id": "g", "handler": "gated", "inputs": {"dir": str(tmp_path)}},
            {"id": "after", "handler": "noop", "dependencies": ["g"]},
        ],
    }
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    assert server.request("POST", "/workflows", workflow)[0] == 201
    runs = []
    for key in ("K", "unrelated"):
        status, run = server.request(
            "POST", "/runs", {"workflowId": "gated", "idempotencyKey": key}
        )
        assert status == 201
        runs.append(run["id"])
    for run_id in runs:
        assert _stream_until(server.port, run_id, "TaskStarted")[-1] == "TaskStarted"

    second = _fw(
        "run", "wf.json", "--key", "K", "--wait", "--timeout", "10",
        "--store", "sqlite:///fw.db", "--handlers", "gated_handlers.py", cwd=tmp_path,
    )  # fmt: skip
    assert second.returncode == 1, second.stderr
    errors = second.stderr.splitlines()
    assert len(errors) == 1, second.stderr
    assert errors[0].startswith("flowweaver: error: the store fw.db is driven by another engine")
    assert f"(pid {server.pid})" in errors[0]
    assert second.stdout == ""

    # So does a second server on the file, before it listens.
    serve = _fw("serve", "--port", "0", "--store", "sqlite:///fw.db", cwd=tmp_path)
    assert serve.returncode == 1
    assert [line for line in serve.stderr.splitlines() if "error" in line] == errors

    # The embedded API refuses the same way.
    with pytest.raises(StoreLockedError) as refused:
        Engine.open(f"sqlite:///{tmp_path / 'fw.db'}")
    assert refused.value.pid == server.pid

    # Reading commands work beside the server (in this process: tests/cli_in_process.py).
    status = fw_in_process("status", runs[0], "--json", "--store", "sqlite:///fw.db", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "running"
    events = fw_in_process("events", runs[1], "--store", "sqlite:///fw.db", cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    assert [json.loads(line)["type"] for line in events.stdout.splitlines()] == [
        "RunStarted",
        "TaskScheduled",
        "TaskStarted",
    ]

    (tmp_path / "open").touch()
    for run_id in runs:
        names = _stream_until(server.port, run_id, "RunCompleted")
        assert "TaskFailed" not in names
        assert names.count("TaskStarted") == 2  # g once, after once
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert sorted(calls) == sorted(f"{run_id} g 1" for run_id in runs)


def test_lock_is_released_when_the_engine_closes_or_its_process_dies(tmp_path: Path) -> None:
    """The next engine gets the store once the holder closes, or once its process is killed."""
    db = tmp_path / "fw.db"
    first = Engine(SQLiteEventStore(str(db)), owns_store=True)
    with pytest.raises(StoreLockedError) as refused:
        Engine(SQLiteEventStore(str(db)), owns_store=True)
    assert refused.value.pid == os.getpid()
    first.close()
    Engine(SQLiteEventStore(str(db)), owns_store=True).close()

    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys; from flowweaver.engine import Engine; "
            f"e = Engine.open('sqlite:///{db}'); print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StoreLockedError) as refused:
            Engine.open(f"sqlite:///{db}")
        assert refused.value.pid == holder.pid
        holder.kill()
        holder.wait(10)
        Engine.open(f"sqlite:///{db}").close()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdin is not None:
            holder.stdin.close()
        if holder.stdout is not None:
            holder.stdout.close()


def test_memory_databases_and_shared_stores_take_no_lock(tmp_path: Path) -> None:
    """An in-memory SQLite database belongs to its process: two engines need no lock file."""
    first = Engine(SQLiteEventStore(":memory:"), owns_store=True)
    second = Engine(SQLiteEventStore(":memory:"), owns_store=True)
    first.close()
    second.close()
    assert not list(Path.cwd().glob(":memory:*"))
