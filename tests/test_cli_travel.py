"""``flowweaver diff`` and ``flowweaver replay --as-of`` on a SQLite file, as a user runs them.

The first command of each test runs as a subprocess, as a user runs it; the others run in
this process (tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from flowweaver.domain.run import record_completed, record_started, start_run
from flowweaver.ports import Append
from flowweaver.store import SQLiteEventStore
from flowweaver.testing.runs import T0, task, workflow
from tests.cli_in_process import fw_in_process
from tests.test_cli import fw
from tests.test_travel import known_run


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, str]:
    """A store holding the known run of tests/test_travel.py: (store URL, run id)."""
    run_id = str(uuid.uuid4())
    store = SQLiteEventStore(str(tmp_path / "fw.db"), snapshot_interval=4)
    try:
        store.append([Append(run_id, 0, known_run(run_id)[1])])
    finally:
        store.close()
    return f"sqlite:///{tmp_path / 'fw.db'}", run_id


def test_diff_prints_one_line_per_changed_field_then_the_events(
    tmp_path: Path, stored: tuple[str, str]
) -> None:
    """The text diff: a heading, run and task fields as old -> new, the events between."""
    url, run_id = stored
    done = fw("diff", run_id, "--from", "4", "--to", "8", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"run {run_id}  from version 4 to 8 (4 events)"
    assert any(line.split() == ["run", "version", "4", "->", "8"] for line in lines)
    assert any(
        line.split() == ["task", "b", "status", '"pending"', "->", '"scheduled"'] for line in lines
    )
    assert any(line.split() == ["task", "b", "attempts", "0", "->", "2"] for line in lines)
    assert "events 5..8:" in lines
    assert lines[-1].split() == ["8", "2026-01-05T09:00:05.000+00:00", "TaskRetried", "b"]


def test_diff_json_is_the_api_answer(tmp_path: Path, stored: tuple[str, str]) -> None:
    """--json prints what GET /runs/{id}/diff answers."""
    url, run_id = stored
    done = fw("diff", run_id, "--from", "0", "--to", "11", "--json", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["runId"], body["from"], body["to"], body["eventCount"]) == (run_id, 0, 11, 11)
    assert body["run"]["status"] == ["pending", "completed"]
    assert [e["version"] for e in body["events"]] == list(range(1, 12))
    assert (body["eventsTruncated"], body["nextAfter"]) == (False, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "5", "--to", "4"], "--to: must be at least from (5), not 4"),
        (["--from", "0", "--to", "12"], "--to: the run has 11 events; to is 12"),
    ],
)
def test_diff_bad_range_is_one_line(
    tmp_path: Path, stored: tuple[str, str], args: list[str], message: str
) -> None:
    """A range outside 0 <= from <= to <= head: exit 1 and one line that says which flag."""
    url, run_id = stored
    done = fw("diff", run_id, *args, "--store", url, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"flowweaver: error: {message}\n"


def test_diff_of_unknown_run_and_bad_flags(tmp_path: Path, stored: tuple[str, str]) -> None:
    """No such run exits 1; a negative --from is a usage error (2); neither prints a traceback."""
    url, _ = stored
    done = fw("diff", str(uuid.uuid4()), "--from", "0", "--to", "1", "--store", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("flowweaver: error:") and "not found" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    done = fw_in_process(
        "diff", str(uuid.uuid4()), "--from", "-1", "--to", "1", "--store", url, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("instant", "version"),
    [
        ("2026-01-05T09:00:02Z", 5),  # equal to an event's stamp: that event is in
        ("2026-01-05T10:00:01.999999+01:00", 3),
        ("2026-01-06T00:00:00Z", 11),
    ],
)
def test_replay_as_of(tmp_path: Path, stored: tuple[str, str], instant: str, version: int) -> None:
    """replay --as-of shows the state after the last event stamped at or before the instant."""
    url, run_id = stored
    done = fw("replay", run_id, "--as-of", instant, "--json", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == version
    done = fw_in_process("replay", run_id, "--as-of", instant, "--store", url, cwd=tmp_path)
    assert f"(as of event {version} of 11)" in done.stdout.splitlines()[0]


def test_replay_as_of_refusals(tmp_path: Path, stored: tuple[str, str]) -> None:
    """Before the run began: exit 1; no offset, or --at with --as-of: usage errors (2)."""
    url, run_id = stored
    done = fw("replay", run_id, "--as-of", "2026-01-05T08:59:59Z", "--store", url, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (
        f"flowweaver: error: run {run_id} began at 2026-01-05T09:00:00+00:00, after --as-of\n"
    )
    done = fw_in_process(
        "replay", run_id, "--as-of", "2026-01-05T09:00:00", "--store", url, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "no UTC offset" in done.stderr
    done = fw_in_process(
        "replay",
        run_id,
        "--at",
        "3",
        "--as-of",
        "2026-01-05T09:00:00Z",
        "--store",
        url,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr


def test_diff_of_a_long_run_lists_a_thousand_events_and_says_where_the_rest_are(
    tmp_path: Path,
) -> None:
    """Over 1,000 events the text diff lists the first 1,000 and names the command for more."""
    run_id = str(uuid.uuid4())
    spec = workflow(*(task(f"t{i}") for i in range(400)))
    state, events = start_run(run_id, spec, 1, {}, T0)
    for i in range(400):
        events += record_started(state, f"t{i}", 1, "w", T0)
        events += record_completed(state, f"t{i}", 1, i, 1.0, T0)
    store = SQLiteEventStore(str(tmp_path / "long.db"))
    try:
        store.append([Append(run_id, 0, events)])
    finally:
        store.close()
    head = len(events)
    url = f"sqlite:///{tmp_path / 'long.db'}"
    done = fw("diff", run_id, "--from", "0", "--to", str(head), "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "events 1..1000:" in lines
    assert lines[-1] == (
        f"(1000 of {head} events shown; for the rest: flowweaver events {run_id} --after 1000)"
    )
    assert sum(1 for line in lines if line.startswith("task t399 ")) >= 3
