"""The signal examples of the docs run as written: the Python one of concepts.md on an embedded
engine, the curl session of api.md against a real `flowweaver serve`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowweaver.store import SQLiteEventStore
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]


def _section(page: str, start: str) -> str:
    """Return a ``## `` section of a docs page, up to the next one."""
    text = (ROOT / "docs" / page).read_text()
    begin = text.index(start + "\n")
    end = text.find("\n## ", begin + len(start))
    return text[begin : end if end != -1 else len(text)]


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    """The Python example of "Signals and waits" ships with alice's approval."""
    section = _section("concepts.md", "## Signals and waits")
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "{'result': {'approved': True}}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the session uses curl")
def test_the_api_session_runs_as_written(tmp_path: Path) -> None:
    """Every curl command of api.md's "Signals", in order, does what the page says."""
    section = _section("api.md", "## Signals")
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 3
    store = f"sqlite:///{tmp_path / 'signals.db'}"
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        script = "set -e\n" + "\n".join(blocks).replace(
            "http://localhost:3000", f"http://127.0.0.1:{server.port}"
        )
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.close()
    reader = SQLiteEventStore(store.removeprefix("sqlite:///"))
    try:
        [run_id] = dict.fromkeys(rec.run_id for rec in reader.read_log(after=0, limit=1000))
        events = [(rec.name, rec.event) for rec in reader.read_run(run_id)]
    finally:
        reader.close()
    names = [name for name, _ in events]
    assert names.count("SignalReceived") == 1 and names[-1] == "RunCompleted"
    [ship] = [e for name, e in events if name == "TaskCompleted" and e.task_id == "ship"]  # type: ignore[attr-defined]
    assert ship.output == {"result": {"approved": True}}
