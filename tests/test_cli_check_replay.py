"""``flowweaver check-replay``: one line per run, a summary line, exit 0 when every run
matches and 1 when one differs; one-line errors; bounded reads; beside a live server."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from flowweaver import cli_check_replay
from flowweaver.cli import main
from flowweaver.domain import run as run_module
from flowweaver.domain.run import RunState
from flowweaver.store import SQLiteEventStore
from tests.serve_process import ServeProcess
from tests.test_cli import fw

GOLDEN = Path(__file__).parent / "golden"
RETRY_RUN = "00000000-0000-4000-8000-00000000a001"
FAIL_RUN = "00000000-0000-4000-8000-00000000a002"
FORKED_RUN = "00000000-0000-4000-8000-00000000a005"


def golden_lines() -> list[dict[str, Any]]:
    """Return every golden record (runs and workflows)."""
    return [
        json.loads(row)
        for pattern in ("runs*.jsonl", "workflows*.jsonl")
        for path in sorted(GOLDEN.glob(pattern))
        for row in path.read_text().splitlines()
    ]


def write_store(path: Path, lines: list[dict[str, Any]]) -> str:
    """Write ``lines`` into a SQLite store as stored rows, the way an old database holds
    them; return the store's URL."""
    store = SQLiteEventStore(str(path))
    try:
        store._events.insert_events(
            [
                StoredEvent(
                    uuid.UUID(line["id"]), line["version"], line["topic"], line["stored"].encode()
                )
                for line in lines
            ]
        )
    finally:
        store.close()
    return f"sqlite:///{path}"


@pytest.fixture
def golden_store(tmp_path: Path) -> str:
    """The URL of a SQLite store holding every golden run."""
    return write_store(tmp_path / "golden.db", golden_lines())


def listed(url: str) -> dict[str, int]:
    """Return the runs of the store's run list (what --all walks) with their event counts."""
    store = SQLiteEventStore(url.removeprefix("sqlite:///"))
    try:
        rows = store.list_runs(limit=100).runs
        return {row.id: len(store.read_run(row.id)) for row in rows}
    finally:
        store.close()


def check_replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    """Run ``flowweaver check-replay ARGS``: (exit code, stdout lines, stderr)."""
    code = main(["check-replay", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_every_listed_golden_run_matches(
    golden_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all: one ok line per run in the store's run list, a summary line, exit 0."""
    runs = listed(golden_store)
    assert {RETRY_RUN, FAIL_RUN} < set(runs)  # every run that begins with RunStarted
    assert len(runs) >= 5
    code, lines, err = check_replay(capsys, "--all", "--store", golden_store)
    assert (code, err) == (0, "")
    assert sorted(lines[:-1]) == sorted(
        f"run {run_id}  ok ({count} events)" for run_id, count in runs.items()
    )
    assert lines[-1] == f"{len(runs)} runs checked, {sum(runs.values())} events: all match"


def test_named_runs_are_checked_in_the_order_given(
    golden_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs named on the command line (any UUID spelling; a fork too) are checked in order."""
    code, lines, _ = check_replay(
        capsys, FORKED_RUN.upper(), RETRY_RUN.replace("-", ""), "--store", golden_store
    )
    assert code == 0
    assert lines == [
        f"run {FORKED_RUN}  ok (7 events)",
        f"run {RETRY_RUN}  ok (11 events)",
        "2 runs checked, 18 events: all match",
    ]


def test_a_changed_decision_exits_1_at_its_version(
    golden_store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code whose run summary counts differently: each run differs at its terminal event,
    the field named; exit 1."""
    summarize = run_module.summarize

    def changed(state: RunState) -> Any:
        summary = summarize(state)
        return msgspec.structs.replace(summary, counts={**summary.counts, "all": len(state.tasks)})

    monkeypatch.setattr(run_module, "summarize", changed)
    code, lines, err = check_replay(capsys, RETRY_RUN, FAIL_RUN, "--store", golden_store)
    assert (code, err) == (1, "")
    assert lines == [
        f"run {RETRY_RUN}  differs at version 11 (RunCompleted): summary.counts: "
        'stored {"completed":2}; the code derives {"completed":2,"all":2}',
        f"run {FAIL_RUN}  differs at version 9 (RunFailed): summary.counts: "
        'stored {"failed":1,"skipped":1,"completed":1}; '
        'the code derives {"failed":1,"skipped":1,"completed":1,"all":3}',
        "2 runs checked, 20 events: 2 differ",
    ]


def test_an_edited_history_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A stored skip whose reason the code would not give is caught; the other runs match."""
    lines = golden_lines()
    for line in lines:
        if line["id"] == FAIL_RUN and line["version"] == 7:
            line["stored"] = line["stored"].replace("broken failed", "broken was slow")
    store = write_store(tmp_path / "edited.db", lines)
    runs = listed(store)
    code, out, _ = check_replay(capsys, "--all", "--store", store)
    assert code == 1
    assert [line for line in out if line.startswith("run ") and "differs" in line] == [
        f"run {FAIL_RUN}  differs at version 7 (TaskSkipped): reason: stored "
        '"upstream task broken was slow"; the code derives "upstream task broken failed"'
    ]
    # The check of the edited run stops at its difference: two of its events are not read.
    assert out[-1] == f"{len(runs)} runs checked, {sum(runs.values()) - 2} events: 1 differs"


def test_an_event_this_code_cannot_read_is_a_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stored event at a schema version this code does not know: the run's line says so."""
    lines = [line for line in golden_lines() if line["id"] in (RETRY_RUN, FAIL_RUN)]
    for line in lines:
        if line["id"] == FAIL_RUN and line["version"] == 4:
            line["topic"] = "TaskStarted@99"
    store = write_store(tmp_path / "future.db", lines)
    code, out, err = check_replay(capsys, FAIL_RUN, RETRY_RUN, "--store", store)
    assert (code, err) == (1, "")
    assert out[0].startswith(f"run {FAIL_RUN}  unreadable: ")
    assert out[1:] == [f"run {RETRY_RUN}  ok (11 events)", "2 runs checked, 11 events: 1 differs"]


def test_bad_requests_are_one_line_errors(
    tmp_path: Path, golden_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown run, a missing store, a file that is no SQLite database, a database server
    that refuses the connection, and a request for neither or both of RUN_ID and --all are
    one line on stderr with a non-zero exit, and print nothing else."""
    unknown = str(uuid.uuid4())
    code, out, err = check_replay(capsys, RETRY_RUN, unknown, "--store", golden_store)
    assert (code, out) == (1, [])
    assert err.splitlines() == [f"flowweaver: error: no run {unknown} in {golden_store}"]

    missing = tmp_path / "nowhere.db"
    code, out, err = check_replay(capsys, "--all", "--store", f"sqlite:///{missing}")
    assert (code, out) == (1, [])
    assert err.splitlines() == [
        f"flowweaver: error: no store at {missing} (set --store or FLOWWEAVER_STORE)"
    ]
    assert not missing.exists()

    refused = "postgresql://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1
    code, out, err = check_replay(capsys, "--all", "--store", refused)
    assert (code, out) == (1, [])
    assert len(err.splitlines()) == 1
    assert err.startswith("flowweaver: error: cannot open the PostgreSQL store at 127.0.0.1:1")

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database, but a file a typo pointed at\n" * 100)
    code, out, err = check_replay(capsys, "--all", "--store", f"sqlite:///{garbage}")
    assert (code, out) == (1, [])
    assert err.splitlines() == [
        f"flowweaver: error: cannot open the SQLite store at {garbage}: file is not a database"
    ]
    assert garbage.read_bytes() == b"not a database, but a file a typo pointed at\n" * 100

    code, out, err = check_replay(capsys, "--store", golden_store)
    assert (code, out, err) == (2, [], "flowweaver: error: give RUN_ID ... or --all\n")
    code, out, err = check_replay(capsys, RETRY_RUN, "--all", "--store", golden_store)
    assert (code, out, err) == (2, [], "flowweaver: error: give RUN_ID ... or --all, not both\n")


def test_all_reads_runs_and_events_a_page_at_a_time(
    golden_store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of two runs and three events the output is the same: nothing is read whole."""
    runs = len(listed(golden_store))
    code, whole, _ = check_replay(capsys, "--all", "--store", golden_store)
    limits: list[int | None] = []
    read_run = SQLiteEventStore.read_run
    list_runs = SQLiteEventStore.list_runs

    def paged_read(self: SQLiteEventStore, run_id: str, **options: Any) -> Any:
        limits.append(options.get("limit"))
        return read_run(self, run_id, **options)

    def paged_list(self: SQLiteEventStore, **options: Any) -> Any:
        limits.append(options.get("limit"))
        return list_runs(self, **options)

    monkeypatch.setattr(SQLiteEventStore, "read_run", paged_read)
    monkeypatch.setattr(SQLiteEventStore, "list_runs", paged_list)
    monkeypatch.setattr(cli_check_replay, "RUNS_PAGE", 2)
    monkeypatch.setattr(cli_check_replay, "EVENTS_PAGE", 3)
    monkeypatch.setattr(cli_check_replay.every_run_id, "__defaults__", (2,))
    monkeypatch.setattr(cli_check_replay.stored_events, "__defaults__", (3,))
    paged_code, paged, _ = check_replay(capsys, "--all", "--store", golden_store)
    assert (paged_code, paged) == (code, whole)
    assert limits and set(limits) == {2, 3}
    assert limits.count(2) == (runs + 1) // 2  # two runs a page, the last says it is the last


def wait_until_running(server: ServeProcess, run_id: str) -> None:
    """Wait (at most ten seconds) until the run's task has started."""
    pause = threading.Event()
    for _ in range(500):
        _, run = server.request("GET", f"/runs/{run_id}")
        if run["tasks"][0]["status"] == "running":
            return
        pause.wait(0.02)
    raise AssertionError(f"run {run_id} did not start")


@pytest.mark.slow
def test_beside_a_live_server_on_sqlite(tmp_path: Path) -> None:
    """A server drives the SQLite file; check-replay reads it at the same time: the ended
    run and the one still running both match."""
    store = f"sqlite:///{tmp_path / 'live.db'}"
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        nap = {"id": "nap", "tasks": [{"id": "z", "handler": "sleep", "inputs": {"seconds": 30}}]}
        quick = {"id": "quick", "tasks": [{"id": "a", "handler": "noop"}]}
        for workflow in (nap, quick):
            assert server.request("POST", "/workflows", workflow)[0] == 201
        status, done = server.request("POST", "/runs", {"workflowId": "quick"})
        assert status == 201
        server.wait_logged("run_finished", where=lambda line: line.get("run_id") == done["id"])
        status, running = server.request("POST", "/runs", {"workflowId": "nap"})
        assert status == 201
        wait_until_running(server, running["id"])
        checked = fw("check-replay", "--all", "--store", store, cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        lines = checked.stdout.splitlines()
        assert lines[-1].startswith("2 runs checked, ")
        assert lines[-1].endswith(": all match")
        assert {line.split()[1] for line in lines[:-1]} == {done["id"], running["id"]}
        assert server.request("POST", f"/runs/{running['id']}/cancel")[0] == 202
    finally:
        server.close()


def documented_section() -> list[str]:
    """Return the lines of operations.md's section on check-replay."""
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    section = text.split("## Checking an upgrade against history\n", 1)[1].split("\n## ", 1)[0]
    return section.splitlines()


def _placeholders(line: str) -> str:
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "RUN", line)
    return re.sub(r"completed in \d+ ms", "completed in N ms", line)


def test_the_documented_session_runs_as_written(tmp_path: Path) -> None:
    """The `$ flowweaver ...` session of operations.md runs as written, printing what it
    shows (run ids and times aside), on a new store, from the repository's root."""
    lines = documented_section()
    session: list[tuple[list[str], list[str]]] = []
    for line in lines:
        if line.startswith("    $ "):
            session.append((shlex.split(line[6:]), []))
        elif session and line.startswith("    ") and not line.startswith("    $"):
            session[-1][1].append(line[4:])
        elif session and session[-1][1]:
            break
    assert [command[:2] for command, _ in session] == [
        ["flowweaver", "run"],
        ["flowweaver", "check-replay"],
    ]
    assert "(`export FLOWWEAVER_STORE=sqlite:///demo.db`)" in "\n".join(lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["FLOWWEAVER_STORE"] = f"sqlite:///{tmp_path / 'demo.db'}"
    root = Path(__file__).parents[1]
    for command, shown in session:
        done = subprocess.run(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        printed = [_placeholders(line) for line in done.stdout.splitlines()]
        assert printed == [_placeholders(line) for line in shown]


def test_the_documented_difference_is_what_the_command_prints(
    golden_store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The difference operations.md shows is printed, word for word, for the golden run by
    code that also counts every task in the summary."""
    shown = [line[4:] for line in documented_section() if line.startswith("    run 00000000")]
    summary = [line[4:] for line in documented_section() if line.startswith("    1 run checked")]
    summarize = run_module.summarize

    def changed(state: RunState) -> Any:
        counted = summarize(state)
        return msgspec.structs.replace(counted, counts={**counted.counts, "all": len(state.tasks)})

    monkeypatch.setattr(run_module, "summarize", changed)
    code, lines, _ = check_replay(capsys, RETRY_RUN, "--store", golden_store)
    assert code == 1
    assert lines == [*shown, summary[-1]]
