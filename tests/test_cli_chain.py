"""`flowweaver verify`, `export` and `import`, run as subprocesses the way a user runs them.

The first command of each test runs as a subprocess, as a user runs it; the others run in
this process (tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flowweaver_postgres import open_store as open_postgres

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.store.sqlite import SQLiteEventStore
from tests.adapters.postgres.support import drop_schema, new_schema_name, store_url
from tests.cli_in_process import fw_in_process
from tests.serve_process import ServeProcess
from tests.test_cli import fw


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "example.json"
    path.write_text(json.dumps(EXAMPLE_WORKFLOW))
    return path


@pytest.fixture
def sqlite_runs(tmp_path: Path, workflow_file: Path) -> tuple[str, list[str]]:
    """A SQLite store with two finished runs: its URL and the run ids."""
    store = f"sqlite:///{tmp_path / 'source.db'}"
    run_ids = []
    for _ in range(2):
        done = fw_in_process("run", str(workflow_file), "--store", store, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        run_ids.append(done.stdout.split()[1])
    return store, run_ids


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL store in a schema of its own, dropped afterwards."""
    schema = new_schema_name()
    yield store_url(schema)
    drop_schema(schema)


def _tamper(path: Path, run_id: str, version: int) -> None:
    with sqlite3.connect(path) as db:
        key = (uuid.UUID(run_id).hex, version)
        (state,) = db.execute(
            "SELECT state FROM fw_events WHERE originator_id=? AND originator_version=?", key
        ).fetchone()
        db.execute(
            "UPDATE fw_events SET state=? WHERE originator_id=? AND originator_version=?",
            (state.replace(b'"timestamp":"2', b'"timestamp":"3', 1), *key),
        )


def test_verify_prints_a_line_per_run_and_fails_on_a_changed_byte(
    tmp_path: Path, sqlite_runs: tuple[str, list[str]]
) -> None:
    """verify --all: one `ok` line per run, exit 0; after one byte of one event changes, that
    run's line names the version and the exit is 1; an unknown run is `not found`."""
    store, (first, second) = sqlite_runs
    done = fw("verify", "--all", "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == 2
    assert all(" ok version " in line for line in lines)
    assert {line.split()[0] for line in lines} == {first, second}

    _tamper(tmp_path / "source.db", second, 2)
    done = fw_in_process("verify", first, second, "--store", store, cwd=tmp_path)
    assert done.returncode == 1
    ok, broken = done.stdout.splitlines()
    assert ok.startswith(f"{first} ok version ")
    assert broken == (
        f"{second} broken at version 2: the stored hash does not match the event and the chain"
    )
    missing = str(uuid.uuid4())
    done = fw_in_process("verify", missing, "--store", store, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, f"{missing} not found\n")
    done = fw_in_process("verify", "--store", store, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "flowweaver: error: name runs (RUN_ID ...) or pass --all, not both\n"


@pytest.mark.postgres
def test_export_from_sqlite_imports_into_postgres_once(
    tmp_path: Path, sqlite_runs: tuple[str, list[str]], postgres_url: str
) -> None:
    """export --all -o FILE, import FILE into PostgreSQL: the runs are there byte for byte,
    verify there, list in the run list; a second import stores nothing."""
    store, run_ids = sqlite_runs
    export = tmp_path / "runs.ndjson"
    done = fw("export", "--all", "-o", str(export), "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"exported 2 runs to {export}\n"
    source = SQLiteEventStore(str(tmp_path / "source.db"))
    total = sum(len(source.read_stored(run_id)) for run_id in run_ids)
    assert len(export.read_bytes().splitlines()) == total

    done = fw_in_process("import", str(export), "--store", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"imported 2 runs ({total} events); 0 already in the store\n"
    target = open_postgres(postgres_url)
    try:
        for run_id in run_ids:
            assert [tuple(r) for r in target.read_stored(run_id)] == [
                (v, t, bytes(d)) for v, t, d in source.read_stored(run_id)
            ]
            assert target.run_state(run_id) == source.run_state(run_id)
        assert {row.id for row in target.list_runs().runs} == set(run_ids)
    finally:
        target.close()
        source.close()
    done = fw_in_process("verify", *run_ids, "--store", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stdout

    again = fw_in_process("import", str(export), "--store", postgres_url, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "imported 0 runs (0 events); 2 already in the store\n"


@pytest.mark.postgres
def test_import_refuses_a_tampered_file_and_stores_nothing(
    tmp_path: Path, sqlite_runs: tuple[str, list[str]], postgres_url: str
) -> None:
    """A file with one byte changed in one event is refused with one line naming the run and
    version; nothing of any run of it is stored."""
    store, run_ids = sqlite_runs
    export = tmp_path / "runs.ndjson"
    assert fw("export", *run_ids, "-o", str(export), "--store", store, cwd=tmp_path).returncode == 0
    lines = export.read_bytes().splitlines(keepends=True)
    last = len(lines) - 1  # the second run's last event
    record = json.loads(lines[last])
    lines[last] = lines[last].replace(b'"timestamp":"2', b'"timestamp":"3', 1)
    tampered = tmp_path / "tampered.ndjson"
    tampered.write_bytes(b"".join(lines))

    done = fw_in_process("import", str(tampered), "--store", postgres_url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"flowweaver: error: run {run_ids[1]} fails its hash chain at version "
        f"{record['version']}: the stored hash does not match the event and the chain; "
        "nothing imported\n"
    )
    target = open_postgres(postgres_url)
    try:
        assert [target.last_version(run_id) for run_id in run_ids] == [0, 0]
        assert target.list_runs().runs == []
    finally:
        target.close()


def test_export_refuses_a_broken_run_and_writes_no_file(
    tmp_path: Path, sqlite_runs: tuple[str, list[str]]
) -> None:
    """export of a run whose chain is broken exits 1 with one line; -o FILE is not created."""
    store, run_ids = sqlite_runs
    _tamper(tmp_path / "source.db", run_ids[1], 4)
    out = tmp_path / "out.ndjson"
    done = fw("export", *run_ids, "-o", str(out), "--store", store, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"flowweaver: error: run {run_ids[1]} fails its hash chain at version 4: "
    )
    assert done.stderr.endswith("; nothing of it exported\n")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_import_of_a_file_that_is_no_export_is_one_line(tmp_path: Path) -> None:
    """A line that is not an export line: exit 1, one line naming the line; nothing stored."""
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"runId": "x"}\n')
    store = f"sqlite:///{tmp_path / 'target.db'}"
    done = fw("import", str(bad), "--store", store, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("flowweaver: error: line 1: not an export line: ")
    assert len(done.stderr.splitlines()) == 1
    missing = fw_in_process("import", str(tmp_path / "none.ndjson"), "--store", store, cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (
        1,
        f"flowweaver: error: no file {tmp_path / 'none.ndjson'}\n",
    )


def test_reading_commands_work_beside_a_live_server(
    tmp_path: Path, sqlite_runs: tuple[str, list[str]]
) -> None:
    """With `serve` holding the SQLite store, verify, export, status and events still read
    it, and a run the server records meanwhile verifies."""
    store, run_ids = sqlite_runs
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        status, created = server.request("POST", "/runs", {"workflowId": "example-workflow"})
        assert status in (201, 202), created
        new_run = created["id"]
        server.wait_logged("run_finished", where=lambda line: line.get("run_id") == new_run)
        done = fw("verify", "--all", "--store", store, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert {line.split()[0] for line in done.stdout.splitlines()} == {*run_ids, new_run}
        export = fw_in_process("export", new_run, "--store", store, cwd=tmp_path)
        assert export.returncode == 0, export.stderr
        assert all(json.loads(line)["runId"] == new_run for line in export.stdout.splitlines())
        assert fw_in_process("status", new_run, "--store", store, cwd=tmp_path).returncode == 0
        assert fw_in_process("events", new_run, "--store", store, cwd=tmp_path).returncode == 0
        status, check = server.request("GET", f"/runs/{new_run}/verify")
        assert status == 200
        assert check["ok"] is True
    finally:
        server.close()
