"""The examples of docs/operations.md, "Tracing", run as written.

The Python script runs in a fresh interpreter and prints what its comments say; the curl line
runs against a real `flowweaver serve`, whose stored RunStarted then carries the traceparent.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.domain.ids import run_id_for_key
from tests.docs_support import code_blocks, run_python
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "docs" / "operations.md").read_text()
SECTION = TEXT.split("\n## Tracing\n", 1)[1].split("\n## ", 1)[0]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")  # the engine's own log lines


def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    """The script prints the span names, the parent link and the handler's attribute."""
    [script] = code_blocks(SECTION, "python")
    done = run_python(script, tmp_path)
    printed = [line for line in done.stdout.splitlines() if not LOG_LINE.match(line)]
    expected = [c.strip() for c in re.findall(r"^print\(.*\)[ \t]+#(.*)$", script, re.M)]
    assert printed == expected


@pytest.mark.timeout(120)
def test_the_curl_example_records_the_traceparent(tmp_path: Path) -> None:
    """POST /runs with the header stores it in RunStarted."""
    [block] = code_blocks(SECTION, "sh")
    server = ServeProcess(f"sqlite:///{tmp_path / 'fw.db'}", tmp_path)
    try:
        server.wait_started()
        assert server.request("POST", "/workflows", EXAMPLE_WORKFLOW)[0] == 201
        line = block.strip().replace("localhost:3000", f"127.0.0.1:{server.port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
        done = subprocess.run(
            ["sh", "-c", line.replace("curl -s ", "curl -sS --fail-with-body --max-time 10 ")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        run_id = run_id_for_key("example-workflow", "traced-17")
        status, page = server.request("GET", f"/runs/{run_id}/events?limit=1")
        assert status == 200
        [started] = page["events"]
        assert started["traceparent"] == re.findall(r"traceparent: ([0-9a-f-]+)", line)[0]
    finally:
        server.stop()
        server.close()
