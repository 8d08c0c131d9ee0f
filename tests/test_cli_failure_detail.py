"""``flowweaver status`` prints a failed or retried task's error, traceback and last logs; the
commands of docs/concepts.md ("Failure detail") run as written."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from flowweaver.cli_detail import SHOWN_LOG_LINES, print_failure_detail
from flowweaver.domain import run as commands
from flowweaver.domain.events import ErrorInfo, LogLine
from flowweaver.domain.run import RunState
from flowweaver.domain.spec import decode_workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _doc_commands() -> list[list[str]]:
    """The `flowweaver` commands of the "Failure detail" section of docs/concepts.md."""
    text = (ROOT / "docs" / "concepts.md").read_text()
    section = text.split("\n## Failure detail\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def _fw(words: list[str], cwd: Path, run_id: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    command = [str(BIN / "flowweaver"), *(w.replace("RUN_ID", run_id) for w in words[1:])]
    # The example's paths are the repository's; the store goes to the test's directory.
    command = [w.replace("sqlite:///detail.db", f"sqlite:///{cwd / 'detail.db'}") for w in command]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_docs_example_runs_and_status_prints_the_detail(tmp_path: Path) -> None:
    """The docs' two commands: the run fails; status shows error, both tracebacks and the logs."""
    run_cmd, status_cmd = _doc_commands()
    assert run_cmd[0] == ".venv/bin/flowweaver"
    assert status_cmd[:3] == [".venv/bin/flowweaver", "status", "RUN_ID"]
    done = _fw(run_cmd, tmp_path)
    assert done.returncode == 1, done.stderr
    run_id = done.stdout.split()[1]
    assert done.stdout.startswith(f"run {run_id} (prices v1)\n")

    status = _fw(status_cmd, tmp_path, run_id)
    assert status.returncode == 0, status.stderr
    out = status.stdout
    detail = out[out.index("\ntask total  failed  attempt 2\n") :]
    assert "  RuntimeError: row 2 has no price\n" in detail
    assert "    Traceback (most recent call last):\n" in detail
    handler_file = ROOT / "examples" / "failure_detail.py"
    assert f'      File "{handler_file}", line 29, in total_price\n' in detail
    assert "    ValueError: could not convert string to float: 'n/a'\n" in detail
    assert "The above exception was the direct cause of the following exception:" in detail
    assert "flowweaver/engine" not in detail
    head, first, second = detail.rstrip("\n").splitlines()[-3:]
    assert head == "  logs of its last finished attempt (2 lines):"
    stamp = r"    \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
    assert re.fullmatch(stamp + "  debug     adding  row=1", first), first
    assert re.fullmatch(stamp + "  debug     adding  row=2", second), second
    assert "\ntask load" not in out  # completed at once: nothing to explain

    as_json = json.loads(_fw([*status_cmd, "--json"], tmp_path, run_id).stdout)
    total = next(t for t in as_json["tasks"] if t["id"] == "total")
    assert total["lastError"]["traceback"].endswith("RuntimeError: row 2 has no price\n")
    assert [line["fields"] for line in total["logs"]] == [{"row": 1}, {"row": 2}]
    load = next(t for t in as_json["tasks"] if t["id"] == "load")
    assert [line["message"] for line in load["logs"]] == ["loading", "loaded"]


def _state_with(error: ErrorInfo, logs: list[LogLine]) -> RunState:
    """A one-task run whose attempt failed with ``error`` after logging ``logs``."""
    spec = decode_workflow(json.dumps({"id": "w", "tasks": [{"id": "t", "handler": "h"}]}).encode())
    state, _ = commands.start_run("r", spec, 1, {}, NOW)  # each command applies its events
    assert commands.record_started(state, "t", 1, "w1", NOW)
    assert commands.record_failed(state, "t", 1, error, NOW, logs=logs)
    return state


def test_status_shows_the_last_lines_and_escapes_control_characters() -> None:
    """Only the last 20 lines are printed; a handler's escape sequences never reach the terminal."""
    logs = [
        LogLine(timestamp=NOW, level="info", message=f"line {i}\x1b[2J", fields={"i": i})
        for i in range(30)
    ]
    error = ErrorInfo(type="Bad", message="oops\x1b]0;title\x07", traceback="Traceback\x1b[31m\n")
    out = io.StringIO()
    print_failure_detail(_state_with(error, logs), out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "  Bad: oops\\x1b]0;title\\x07\n" in text
    assert "    Traceback\\x1b[31m\n" in text
    assert f"(30 lines, the last {SHOWN_LOG_LINES} shown; --json has all)" in text
    shown = [line for line in text.splitlines() if "  info  " in line]
    assert len(shown) == SHOWN_LOG_LINES
    assert shown[0].endswith("line 10\\x1b[2J  i=10")
    assert shown[-1].endswith("line 29\\x1b[2J  i=29")
