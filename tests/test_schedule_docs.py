"""The schedule examples of the docs run as written: the Python one of concepts.md on an
embedded engine, the curl session of api.md against a real `flowweaver serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowweaver.domain.schedule import ScheduleFired
from flowweaver.store import SQLiteEventStore
from tests.docs_support import code_blocks, curl_session_on_a_new_server, doc_section, run_python


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    """The Python example of "Schedules" prints the DST-shifted fire times, then completed."""
    section = doc_section("concepts.md", "## Schedules")
    [code] = code_blocks(section, "python")
    done = run_python(code, tmp_path)
    # The engine's log lines share stdout with the prints, and may run into them.
    lines = done.stdout.splitlines()
    assert "['2026-03-29T03:00:00+02:00', '2026-03-30T02:30:00+02:00']" in lines
    assert "completed" in [line[: len("completed")] for line in lines]
    assert "It prints `['2026-03-29T03:00:00+02:00', '2026-03-30T02:30:00+02:00']`" in section


@pytest.mark.skipif(shutil.which("curl") is None, reason="the session uses curl")
def test_the_api_session_runs_as_written(tmp_path: Path) -> None:
    """Every curl command of api.md's "Schedules", in order, does what the page says."""
    section = doc_section("api.md", "## Schedules")
    blocks = code_blocks(section, "sh")
    assert len(blocks) == 8
    database = tmp_path / "sched.db"
    curl_session_on_a_new_server(blocks, database)
    reader = SQLiteEventStore(str(database))
    try:
        names = [type(e).__name__ for e in reader.schedule_events()]
        fired = [e for e in reader.schedule_events() if isinstance(e, ScheduleFired)]
        assert reader.run_state(fired[0].run_id).status == "completed"  # type: ignore[union-attr]
    finally:
        reader.close()
    assert names == [
        "ScheduleCreated",
        "SchedulePaused",
        "ScheduleResumed",
        "ScheduleFired",
        "ScheduleDeleted",
    ]
