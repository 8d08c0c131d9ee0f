"""The debugging and audit commands against SQLite, PostgreSQL and Redis.

An engine in this process writes the history a user would debug (a run paused on a failure,
retried by hand and resumed; a run that failed; a fork of it with new parameters that
completed) into a fresh store of each kind, once for the module's tests, which only read it;
then ``flowweaver status``, ``diff``, ``replay --as-of``, ``lineage``, ``verify``,
``check-replay --all``, ``export`` and ``import`` into a store of another kind are run against
its URL: the first command of each test as a subprocess, as a user runs it, the others in this
process (tests/cli_in_process.py), which spares a second of start-up each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowweaver.api.travel_routes import diff_json
from flowweaver.engine import Engine
from flowweaver.ports import EventStore
from flowweaver.store import open_store
from flowweaver.travel import diff_run, event_time, version_at
from tests.cli_in_process import fw_in_process
from tests.debug_handlers import DEBUGGED, debug_registry
from tests.store_urls import KINDS, StoreUrls, store_urls
from tests.test_cli import fw

__all__ = ["store_urls"]  # a fixture used by name

WAIT = 20.0
"""Seconds the engine may take for any step before the test fails."""
IMPORT_INTO = {"sqlite": "redis", "postgres": "sqlite", "redis": "postgres"}
"""The kind of store each kind's export is imported into."""


@dataclass
class History:
    """The runs written into a store: paused then resumed, failed, and the fork."""

    kind: str
    url: str
    resumed: str
    failed: str
    fork: str
    versions: dict[str, int]


def _wait_status(engine: Engine, run_id: str, status: str) -> None:
    """Block until the run has ``status``, woken by each append to the store's log."""
    deadline = time.monotonic() + WAIT
    position = 0
    while engine.get_run(run_id).status != status:
        assert time.monotonic() < deadline, engine.get_run(run_id)
        log = engine.store.read_log(after=position, limit=1000)
        if log:
            position = log[-1].position or position
            continue
        engine.store.wait_for_log(position, 0.5)


def _write_history(kind: str, url: str) -> History:
    engine = Engine(open_store(url), handlers=debug_registry(), workers=2, owns_store=True)
    try:
        engine.register_workflow(DEBUGGED)
        resumed = engine.start_run("debugged", parameters={"mode": "flaky"}).run_id
        _wait_status(engine, resumed, "paused")
        engine.retry_task(resumed, "load", by="ops", reason="flaky upstream")
        engine.resume_run(resumed, by="ops", reason="fixed")
        assert engine.wait_run_finished(resumed, WAIT).status == "completed"
        failed = engine.start_run(
            "debugged", parameters={"mode": "bad"}, on_task_failure="fail"
        ).run_id
        assert engine.wait_run_finished(failed, WAIT).status == "failed"
        fork = engine.fork_run(failed, parameters={"mode": "good"}, reason="fixed config").run_id
        assert engine.wait_run_finished(fork, WAIT).status == "completed"
        versions = {r: engine.get_run(r).version for r in (resumed, failed, fork)}
    finally:
        engine.close(grace=5)
    return History(kind, url, resumed, failed, fork, versions)


@pytest.fixture(scope="module", params=KINDS)
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[History]:
    """A fresh store of each kind holding the three runs of :class:`History`; the tests read
    it and change nothing, so they share it."""
    kind: str = request.param
    made = StoreUrls(tmp_path_factory.mktemp("history"))
    try:
        yield _write_history(kind, made(kind))
    finally:
        made.close()


def _ok(*args: str, cwd: Path, new_process: bool = False) -> str:
    done = (fw if new_process else fw_in_process)(*args, cwd=cwd)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def _read(url: str) -> EventStore:
    return open_store(url)


def test_status_diff_replay_and_lineage_read_every_store(history: History, tmp_path: Path) -> None:
    """status shows the failure's traceback and logs; diff and replay --as-of answer what
    the API answers; lineage names the fork both ways."""
    url = history.url
    shown = _ok("status", history.failed, "--store", url, cwd=tmp_path, new_process=True)
    assert f"run {history.failed}  failed" in shown
    assert "task load  failed  attempt 1" in shown
    assert "KeyError: 'db_url'" in shown
    assert "Traceback (most recent call last):" in shown
    assert ", in load" in shown
    assert "config missing" in shown and 'key="db_url"' in shown

    store = _read(url)
    try:
        end = history.versions[history.resumed]
        expected_diff = diff_json(diff_run(store, history.resumed, 2, end))
        records = store.read_run(history.resumed)
        failure = next(r for r in records if r.name == "TaskFailed")
        instant = event_time(failure)
        as_of_version = version_at(store, history.resumed, instant)
    finally:
        store.close()
    diff = _ok(
        "diff", history.resumed, "--from", "2", "--to", str(end), "--json", "--store", url,
        cwd=tmp_path,
    )  # fmt: skip
    assert msgspec.json.decode(diff) == msgspec.json.decode(expected_diff)
    text = _ok(
        "diff", history.resumed, "--from", "0", "--to", str(end), "--store", url, cwd=tmp_path
    )
    assert f"run {history.resumed}  from version 0 to {end}" in text
    assert "TaskRetried  load" in text

    stamp = instant.isoformat().replace("+00:00", "Z")
    replayed = json.loads(
        _ok("replay", history.resumed, "--as-of", stamp, "--json", "--store", url, cwd=tmp_path)
    )
    assert replayed["version"] == as_of_version >= failure.version
    assert replayed["status"] == "paused"
    load = {t["id"]: t for t in replayed["tasks"]}["load"]
    assert load["lastError"]["type"] == "KeyError"
    assert load["logs"][0]["fields"] == {"key": "db_url", "attempt": 1}
    before = _run_fails(
        "replay", history.resumed, "--as-of", "2000-01-01T00:00:00Z", "--store", url, cwd=tmp_path
    )
    assert before.startswith(f"flowweaver: error: run {history.resumed} began at ")
    assert before.rstrip().endswith("after --as-of")

    lineage = json.loads(_ok("lineage", history.failed, "--json", "--store", url, cwd=tmp_path))
    assert lineage["parent"] is None
    assert [(c["runId"], c["atVersion"]) for c in lineage["children"]] == [
        (history.fork, history.versions[history.failed])
    ]
    lineage = json.loads(_ok("lineage", history.fork, "--json", "--store", url, cwd=tmp_path))
    assert lineage["parent"] == {
        "runId": history.failed,
        "atVersion": history.versions[history.failed],
    }


def _run_fails(*args: str, cwd: Path) -> str:
    done = fw_in_process(*args, cwd=cwd)
    assert done.returncode != 0, (args, done.stdout)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def test_verify_check_replay_export_and_import_into_another_kind(
    history: History, store_urls: StoreUrls, tmp_path: Path
) -> None:
    """verify --all and check-replay --all pass; the export imports into a store of another
    kind, where the runs verify, replay, read the same and keep their lineage."""
    url = history.url
    runs = [history.resumed, history.failed, history.fork]
    verified = _ok("verify", "--all", "--store", url, cwd=tmp_path, new_process=True)
    for run_id in runs:
        assert f"{run_id} ok version {history.versions[run_id]} head " in verified
    checked = _ok("check-replay", "--all", "--store", url, cwd=tmp_path)
    for run_id in runs:
        assert f"run {run_id}  ok ({history.versions[run_id]} events)" in checked, checked

    exported = tmp_path / "runs.ndjson"
    _ok("export", *runs, "-o", str(exported), "--store", url, cwd=tmp_path)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == sum(history.versions.values())

    other = store_urls(IMPORT_INTO[history.kind])
    imported = _ok("import", str(exported), "--store", other, cwd=tmp_path)
    assert imported.strip() == f"imported 3 runs ({len(lines)} events); 0 already in the store"
    again = _ok("import", str(exported), "--store", other, cwd=tmp_path)
    assert again.strip() == "imported 0 runs (0 events); 3 already in the store"
    verified_there = _ok("verify", "--all", "--store", other, cwd=tmp_path)
    assert sorted(verified_there.splitlines()) == sorted(verified.splitlines())
    _ok("check-replay", "--all", "--store", other, cwd=tmp_path)
    source, target = _read(url), _read(other)
    try:
        for run_id in runs:
            assert target.run_state(run_id) == source.run_state(run_id)
            assert [r.raw for r in target.read_run(run_id)] == [
                r.raw for r in source.read_run(run_id)
            ]
        shown: Any = json.loads(
            _ok("lineage", history.failed, "--json", "--store", other, cwd=tmp_path)
        )
        assert [c["runId"] for c in shown["children"]] == [history.fork]
    finally:
        source.close()
        target.close()
