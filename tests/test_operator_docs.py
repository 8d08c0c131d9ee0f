"""The operator action examples of the docs run as written: the Python one of concepts.md on an
embedded engine, the curl session of api.md against a real `flowweaver serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flowweaver.store import SQLiteEventStore
from tests.docs_support import code_blocks, curl_session_on_a_new_server, doc_section, run_python


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    """The Python example of "Operator actions and pauses" completes a task by hand."""
    section = doc_section("concepts.md", "## Operator actions and pauses")
    [code] = code_blocks(section, "python")
    done = run_python(code, tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "{'result': {'rows': [1, 2, 3]}}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the session uses curl")
def test_the_api_session_runs_as_written(tmp_path: Path) -> None:
    """Every curl command of api.md's "Operator actions", in order, does what the page says."""
    section = doc_section("api.md", "## Operator actions")
    blocks = code_blocks(section, "sh")
    assert len(blocks) == 7
    database = tmp_path / "ops.db"
    curl_session_on_a_new_server(blocks, database)
    reader = SQLiteEventStore(str(database))
    try:
        run_ids = dict.fromkeys(rec.run_id for rec in reader.read_log(after=0, limit=1000))
        runs = [reader.read_run(run_id) for run_id in run_ids]
    finally:
        reader.close()
    runs = [run for run in runs if run]
    first, second = ([(e.name, getattr(e.event, "by", None)) for e in run] for run in runs)
    assert first[-1] == ("RunCompleted", None)
    assert ("RunPaused", "engine") in first and ("TaskRetried", "anonymous") in first
    assert ("TaskCompleted", "anonymous") in first  # load, by hand
    assert second[-1][0] == "RunCancelled" and ("TaskSkipped", "anonymous") in second
