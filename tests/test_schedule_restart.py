"""A `flowweaver serve` on SQLite killed with -9 while a schedule fires every second, and
started again: every fire time is one run, the ones missed while down are caught up, and no
fire is decided twice."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from flowweaver.domain.events import RunStarted
from flowweaver.domain.schedule import ScheduleFired, ScheduleFireSkipped
from flowweaver.store import SQLiteEventStore
from tests.serve_process import ServeProcess

pytestmark = [pytest.mark.slow]

TICK = {"id": "tick", "tasks": [{"id": "t", "handler": "noop"}]}
EVERY_SECOND = {
    "id": "every-second",
    "workflowId": "tick",
    "cron": "* * * * * *",
    "overlap": "allow",
    "catchupWindow": 60,
}


def fired(path: Path) -> list[ScheduleFired]:
    """Return the fires stored (read once no server runs on the file)."""
    reader = SQLiteEventStore(str(path))
    try:
        return [e for e in reader.schedule_events() if isinstance(e, ScheduleFired)]
    finally:
        reader.close()


def last_fire(server: ServeProcess) -> float:
    """Return the schedule's last fire time as the server shows it (0 before the first)."""
    status, shown = server.request("GET", "/schedules/every-second")
    assert status == 200, shown
    last = shown["lastFireTime"]
    return datetime.fromisoformat(last).timestamp() if last else 0.0


def runs_ended(server: ServeProcess) -> bool:
    status, page = server.request("GET", "/runs?workflowId=tick&limit=1000")
    assert status == 200, page
    return all(r["status"] in ("completed", "failed", "cancelled") for r in page["runs"])


def wait_for(condition: object, timeout: float = 30) -> None:
    """Poll ``condition()`` (a store read) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_killed_server_catches_up_its_fires_on_restart(tmp_path: Path) -> None:
    """kill -9, restart: consecutive fire times, one run each, nothing skipped or doubled."""
    path = tmp_path / "fw.db"
    url = f"sqlite:///{path}"
    server = ServeProcess(url, tmp_path)
    try:
        server.wait_started()
        assert server.request("POST", "/workflows", TICK)[0] == 201
        assert server.request("POST", "/schedules", EVERY_SECOND)[0] == 201
        wait_for(lambda: server.request("GET", "/schedules/every-second")[1]["fired"] >= 3)
        server.kill()
        killed_at = time.time()
    finally:
        server.close()
    again = ServeProcess(url, tmp_path)
    try:
        again.wait_started()
        wait_for(lambda: last_fire(again) > killed_at + 3)
        assert again.request("POST", "/schedules/every-second/pause")[0] == 200
        wait_for(lambda: runs_ended(again))
    finally:
        again.close()
    fires = fired(path)
    seconds = [int(f.fire_time.timestamp()) for f in fires]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), seconds
    reader = SQLiteEventStore(str(path))
    try:
        assert not [e for e in reader.schedule_events() if isinstance(e, ScheduleFireSkipped)]
        for fire in fires:
            first = reader.read_run(fire.run_id, upto=1)[0].event
            assert isinstance(first, RunStarted)
            assert first.idempotency_key == fire.idempotency_key
            state = reader.run_state(fire.run_id)
            assert state is not None and state.status == "completed"
        listed = reader.list_runs(workflow_id="tick", limit=1000).runs
        assert sorted(r.id for r in listed) == sorted(f.run_id for f in fires)
    finally:
        reader.close()
