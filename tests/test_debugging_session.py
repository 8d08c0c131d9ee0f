"""The end-to-end debugging session of docs/api.md and docs/concepts.md runs as written.

The API page's curl commands run in order against a real `flowweaver serve`, then the concepts
page's command-line reads run on the same store beside it; the test checks what the session
stored and what the command line printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowweaver.store.sqlite import SQLiteEventStore
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECTION = "## Debugging a run, end to end"


def _blocks(page: str) -> list[str]:
    """Return the ```sh blocks of the session's section of a docs page."""
    text = (ROOT / "docs" / page).read_text()
    begin = text.index(SECTION + "\n")
    end = text.find("\n## ", begin + len(SECTION))
    section = text[begin : end if end != -1 else len(text)]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None,
    reason="the session uses curl and jq",
)
def test_the_debugging_session_runs_as_written(tmp_path: Path) -> None:
    """Both pages' commands, in order: a paused run retried and resumed, a failed run forked."""
    api, cli = _blocks("api.md"), _blocks("concepts.md")
    assert len(api) == 6 and len(cli) == 3
    store = f"sqlite:///{tmp_path / 'flowweaver.db'}"
    server = ServeProcess(store, tmp_path)
    try:
        server.wait_started()
        script = "set -euo pipefail\n" + "\n".join(api).replace(
            "http://localhost:3000", f"http://127.0.0.1:{server.port}"
        )
        # The concepts page's commands read the same store, beside the live server.
        script += "\n" + "\n".join(cli)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
        env["FLOWWEAVER_STORE"] = store
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.close()
    out = done.stdout
    assert "failed on purpose (attempt 1)" in out  # the traceback's last line, API and status
    assert "Traceback (most recent call last):" in out
    assert '["TaskStarted","TaskFailed","RunPaused"]' in out  # the diff's events
    assert re.search(r'task charge\s+status\s+"scheduled" -> "failed"', out)  # flowweaver diff
    assert '{"type":"TaskRetried","by":"anonymous","reason":"card processor is back"}' in out
    assert '"ok":true' in out
    assert "3 runs checked" in out and "all match" in out  # check-replay
    assert out.count(" ok version ") == 3  # verify --all
    reader = SQLiteEventStore(str(tmp_path / "flowweaver.db"))
    try:
        runs = {row.id: row for row in reader.list_runs().runs}
        assert sorted(row.status for row in runs.values()) == ["completed", "completed", "failed"]
        [fork] = [row for row in runs.values() if row.parent_run_id is not None]
        assert runs[fork.parent_run_id].status == "failed"
        first = reader.read_run(fork.id, upto=1)[0].event
        assert first.carried == {"reserve": {"result": {"order": 43}}}  # type: ignore[union-attr]
    finally:
        reader.close()
