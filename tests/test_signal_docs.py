"""The signal examples of the docs run as written: the Python one of concepts.md on an embedded
engine, the curl session of api.md against a real `flowweaver serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowweaver.store import SQLiteEventStore
from tests.docs_support import code_blocks, curl_session_on_a_new_server, doc_section, run_python


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    """The Python example of "Signals and waits" ships with alice's approval."""
    section = doc_section("concepts.md", "## Signals and waits")
    [code] = code_blocks(section, "python")
    done = run_python(code, tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "{'result': {'approved': True}}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the session uses curl")
def test_the_api_session_runs_as_written(tmp_path: Path) -> None:
    """Every curl command of api.md's "Signals", in order, does what the page says."""
    section = doc_section("api.md", "## Signals")
    blocks = code_blocks(section, "sh")
    assert len(blocks) == 3
    database = tmp_path / "signals.db"
    curl_session_on_a_new_server(blocks, database)
    reader = SQLiteEventStore(str(database))
    try:
        [run_id] = dict.fromkeys(rec.run_id for rec in reader.read_log(after=0, limit=1000))
        events = [(rec.name, rec.event) for rec in reader.read_run(run_id)]
    finally:
        reader.close()
    names = [name for name, _ in events]
    assert names.count("SignalReceived") == 1 and names[-1] == "RunCompleted"
    [ship] = [e for name, e in events if name == "TaskCompleted" and e.task_id == "ship"]  # type: ignore[attr-defined]
    assert ship.output == {"result": {"approved": True}}
