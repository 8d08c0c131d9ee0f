"""`flowweaver fork` and `flowweaver lineage` as a user runs them: real processes, a SQLite file.

Commands that only read or refuse run in this process (tests/cli_in_process.py), which spares
a second of start-up each; every fork and run is a real process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from flowweaver.engine import Engine
from flowweaver.store import SQLiteEventStore
from tests.cli_in_process import fw_in_process

ROOT = Path(__file__).resolve().parents[1]
FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
FLAKY = str(ROOT / "examples" / "flaky.json")


def fw(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS --store sqlite:///STORE`` to the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    return subprocess.run(
        [FLOWWEAVER, *args, "--store", f"sqlite:///{store}"],
        cwd=store.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def fw_here(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS --store sqlite:///STORE`` to the end in this process."""
    return fw_in_process(*args, "--store", f"sqlite:///{store}", cwd=store.parent)


def _log_length(store: Path) -> int:
    reader = SQLiteEventStore(str(store))
    try:
        return reader.max_position()
    finally:
        reader.close()


def failed_run(store: Path) -> str:
    """Run examples/flaky.json with its API down for one attempt; return the failed run's id."""
    done = fw("run", FLAKY, "--params", '{"outage": 1}', store=store)
    assert done.returncode == 1, done.stderr
    return done.stdout.split()[1]


def test_fork_wait_reruns_from_the_failure_and_lineage_shows_both_ways(tmp_path: Path) -> None:
    """fork --wait prints the fork's events (call_api and report, never load) and exits 0;
    lineage lists the fork under its parent and names the parent from the fork."""
    store = tmp_path / "fw.db"
    parent = failed_run(store)
    done = fw(
        "fork", parent, "--params", '{"outage": 0}', "--reason", "back", "--wait", store=store
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    fork = out[0].split()[1]
    assert out[0] == f"run {fork} (fork of {parent} at version 9)"
    assert out[1] == "  RunForked"
    ran = {line.split()[0] for line in out[2:-2]}
    assert ran == {"call_api", "report"}
    assert out[-1].startswith(f"run {fork} completed in ")

    shown = fw_here("lineage", parent, store=store)
    assert shown.returncode == 0, shown.stderr
    assert "parent -" in shown.stdout
    assert re.search(rf"^  {fork}  at version 9  completed ", shown.stdout, re.MULTILINE)
    as_json = json.loads(fw_here("lineage", fork, "--json", store=store).stdout)
    assert as_json["parent"] == {"runId": parent, "atVersion": 9}
    assert as_json["children"] == []
    status = json.loads(fw_here("status", fork, "--json", store=store).stdout)
    assert (status["parentRunId"], status["parentVersion"]) == (parent, 9)
    report = next(t for t in status["tasks"] if t["id"] == "report")
    assert report["output"] == {"result": {"rows": [1, 2, 3], "attempt": 1}}


def test_fork_options_reach_the_fork_and_a_failing_fork_exits_1(tmp_path: Path) -> None:
    """--at, --reset and --output shape the fork; a fork that fails again exits 1."""
    store = tmp_path / "fw.db"
    parent = failed_run(store)
    override = '--output=load={"result": {"rows": [9]}}'
    done = fw(
        "fork", parent, "--reset", "call_api", "--params", '{"outage": 0}', override, store=store
    )
    assert done.returncode == 0, done.stderr
    fork = done.stdout.split()[1]
    status = json.loads(fw_here("status", fork, "--json", store=store).stdout)
    report = next(t for t in status["tasks"] if t["id"] == "report")
    assert report["output"]["result"]["rows"] == [9]
    again = fw("fork", parent, "--at", "3", store=store)  # the outage is still on: fails again
    assert again.returncode == 1
    assert "failed tasks: call_api" in again.stdout


def test_bad_fork_arguments_are_one_line_and_store_nothing(tmp_path: Path) -> None:
    """Malformed arguments exit 2, refused requests exit 1, each with one error line; nothing
    is stored."""
    store = tmp_path / "fw.db"
    parent = failed_run(store)
    before = _log_length(store)
    cases = [
        (("--params", "[1]"), 2, "--params must be a JSON object"),
        (("--output", "load"), 2, "--output must be TASK=JSON"),
        (("--output", "load={"), 2, "--output load: not JSON"),
        (("--at", "0"), 2, "--at"),
        (("--at", "99"), 1, "$.atVersion"),
        (("--reset", "nope"), 1, "$.reset[0]: workflow flaky has no task 'nope'"),
        (("--output", "report=1"), 1, "$.outputs.report"),
    ]
    for args, code, message in cases:
        done = fw_here("fork", parent, *args, store=store)
        assert done.returncode == code, (args, done.stderr)
        lines = done.stderr.splitlines()
        line = lines[-1]  # argparse's own refusals (--at 0) print the usage line first
        assert len(lines) == 1 or lines[0].startswith("usage: "), lines
        assert line.startswith("flowweaver: error: ")
        assert message in line, (args, line)
    unknown = fw_here("fork", "8d1f8a52-4a39-4c52-9d6e-2f8e0b1c5a77", store=store)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("flowweaver: error: no run 8d1f8a52-")
    missing = fw_here("lineage", "8d1f8a52-4a39-4c52-9d6e-2f8e0b1c5a77", store=store)
    assert (missing.returncode, len(missing.stderr.splitlines())) == (1, 1)
    assert _log_length(store) == before


def test_fork_refuses_a_store_another_engine_drives_and_lineage_reads_beside_it(
    tmp_path: Path,
) -> None:
    """With the SQLite store held by an engine (a server), fork refuses with the usual line
    and stores nothing; lineage still reads."""
    store = tmp_path / "fw.db"
    parent = failed_run(store)
    holder = Engine(SQLiteEventStore(str(store)), owns_store=True)
    try:
        before = holder.store.max_position()
        done = fw("fork", parent, store=store)
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith(f"flowweaver: error: the store {store} is driven by another engine")
        assert holder.store.max_position() == before
        assert fw("lineage", parent, store=store).returncode == 0
    finally:
        holder.close()


def test_the_concepts_fork_session_runs_as_written(tmp_path: Path) -> None:
    """The shell block of docs/concepts.md's "Fork and rerun" runs and its fork completes."""
    text = (ROOT / "docs" / "concepts.md").read_text()
    section = text[text.index("## Fork and rerun") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["FLOWWEAVER_STORE"] = f"sqlite:///{tmp_path / 'flowweaver.db'}"
    script = (
        "set -eu\ncd "
        + str(ROOT)
        + "\n"
        + block.group(1).replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    )
    done = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout
    assert re.search(r"run \S+ \(fork of \S+ at version 9\)", done.stdout)
    assert re.search(r"at version 9  completed", done.stdout)
