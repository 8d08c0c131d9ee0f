"""The command line reads a RUN_ID in any spelling uuid.UUID accepts, and prints the canonical.

The first command of each test runs as a subprocess, as a user runs it; the others run in
this process (tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import json
from pathlib import Path

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.cli_in_process import fw_in_process
from tests.test_cli import fw


def test_status_events_and_replay_take_any_spelling_of_a_run_id(tmp_path: Path) -> None:
    """Upper case, no hyphens or urn:uuid: name the run; output carries its canonical id."""
    workflow = tmp_path / "example.json"
    workflow.write_text(json.dumps(EXAMPLE_WORKFLOW))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    done = fw("run", str(workflow), "--store", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    for odd in (run_id.upper(), run_id.replace("-", ""), f"urn:uuid:{run_id}"):
        status = fw_in_process("status", odd, "--json", "--store", store, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["id"] == run_id
    odd = run_id.upper()
    events = fw_in_process("events", odd, "--store", store, cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    assert {json.loads(line)["runId"] for line in events.stdout.splitlines()} == {run_id}
    replay = fw_in_process("replay", odd, "--at", "1", "--json", "--store", store, cwd=tmp_path)
    assert json.loads(replay.stdout)["id"] == run_id
