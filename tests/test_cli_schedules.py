"""`flowweaver schedules list|show|create|pause|resume|trigger|delete` on a store URL: one-line
errors that store nothing, --json, and a trigger beside a live server whose scheduler starts it."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowweaver.cli import main
from flowweaver.domain.spec import decode_workflow
from flowweaver.store.sqlite import SQLiteEventStore
from tests.serve_process import ServeProcess
from tests.test_cli import fw

WORKFLOW = {"id": "report", "tasks": [{"id": "t", "handler": "noop"}]}


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "s.db"
    made = SQLiteEventStore(str(path))
    made.register_workflow(decode_workflow(json.dumps(WORKFLOW)), datetime.now(UTC))
    made.close()
    return f"sqlite:///{path}"


def test_create_list_show_pause_resume_delete(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command prints one line (or the API's JSON with --json) and records its event."""
    create = ["schedules", "create", "nightly", "--workflow", "report", "--cron", "30 2 * * *"]
    assert main([*create, "--timezone", "Europe/Berlin", "--store", store]) == 0
    assert capsys.readouterr().out == "schedule 'nightly' created\n"
    assert main(["schedules", "list", "--json", "--store", store]) == 0
    [line] = capsys.readouterr().out.splitlines()
    listed = json.loads(line)
    assert (listed["id"], listed["timezone"], listed["paused"]) == (
        "nightly",
        "Europe/Berlin",
        False,
    )
    assert main(["schedules", "show", "nightly", "--json", "--store", store]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["nextFireTimes"]) == 5
    assert main(["schedules", "show", "nightly", "--store", store]) == 0
    assert "next fires:" in capsys.readouterr().out
    assert main(["schedules", "pause", "nightly", "--reason", "upgrade", "--store", store]) == 0
    assert main(["schedules", "resume", "nightly", "--store", store]) == 0
    assert main(["schedules", "delete", "nightly", "--store", store]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "schedule 'nightly' paused",
        "schedule 'nightly' resumed",
        "schedule 'nightly' deleted",
    ]
    reader = SQLiteEventStore(store.removeprefix("sqlite:///"))
    try:
        names = [type(e).__name__ for e in reader.schedule_events()]
        paused = reader.schedule_events()[1]
    finally:
        reader.close()
    assert names == ["ScheduleCreated", "SchedulePaused", "ScheduleResumed", "ScheduleDeleted"]
    assert getattr(paused, "reason", None) == "upgrade"
    assert getattr(paused, "by", "").startswith("cli")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cron", "61 * * * *"], "$.cron: not a cron expression"),
        (["--timezone", "Mars/Olympus"], "$.timezone: unknown time zone"),
        (["--overlap", "queue"], "$.overlap: must be one of skip, buffer_one, allow"),
        (["--catchup-window", "-1"], "$.catchupWindow: must be seconds from 0"),
        (["--params", "[1]"], "--params: must be a JSON object"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(
    store: str, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad definition prints one error line, exits 1 and stores nothing."""
    args = ["schedules", "create", "s", "--workflow", "report", "--cron", "* * * * *", *extra]
    assert main([*args, "--store", store]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    reader = SQLiteEventStore(store.removeprefix("sqlite:///"))
    try:
        assert reader.schedule_events() == []
    finally:
        reader.close()


def test_unknown_workflow_and_schedule(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown workflow or schedule is one line and exit 1."""
    create = ["schedules", "create", "s", "--workflow", "nope", "--cron", "* * * * *"]
    assert main([*create, "--store", store]) == 1
    assert "$.workflowId: no workflow 'nope'" in capsys.readouterr().err
    for command in ("show", "pause", "resume", "trigger", "delete"):
        assert main(["schedules", command, "ghost", "--store", store]) == 1
        assert capsys.readouterr().err == "flowweaver: error: schedule 'ghost' not found\n"


def test_a_trigger_beside_a_live_server_gets_its_run(store: str, tmp_path: Path) -> None:
    """`schedules trigger` records the fire; the server's scheduler starts its run."""
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        create = ["schedules", "create", "s", "--workflow", "report", "--cron", "0 0 1 1 *"]
        assert fw(*create, "--store", store, cwd=tmp_path).returncode == 0
        done = fw("schedules", "trigger", "s", "--store", store, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.split("run ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:  # the server's scheduler starts it within a round or two
            status, state = server.request("GET", f"/runs/{run_id}")
            if status == 200 and state["status"] == "completed":
                break
            assert time.monotonic() < deadline, (status, state)
            time.sleep(0.1)
        assert state["submittedBy"] == "schedule:s"
    finally:
        server.close()
