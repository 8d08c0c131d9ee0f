"""Trigger rules on the engine with real stores (memory and a SQLite file): a cleanup task
that runs after a failure, and an alert that runs only when something failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowweaver.domain.events import TaskSkipped
from flowweaver.domain.replay_check import check_run
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry

ROOT = Path(__file__).resolve().parents[2]


def _documented_workflow() -> dict[str, Any]:
    """The example of docs/concepts.md, "Trigger rules": the tests run it as written."""
    text = (ROOT / "docs" / "concepts.md").read_text()
    section = text[text.index("## Trigger rules") :]
    block = section[section.index("```json") + len("```json") : section.index("```\n", 10)]
    document: dict[str, Any] = json.loads(block)
    return document


ETL = _documented_workflow()


def _register_extract(registry: HandlerRegistry, *, fails: bool) -> None:
    def extract(inputs: dict[str, Any]) -> Any:
        if fails:
            raise ValueError("source unreachable")
        return {"rows": 3}

    registry.register("extract", extract)


def test_a_failure_runs_the_cleanup_and_the_alert(
    engine: Engine, registry: HandlerRegistry
) -> None:
    _register_extract(registry, fails=True)
    engine.register_workflow({**ETL, "defaults": {"retry": {"maxAttempts": 1}}})
    run = engine.start_run("etl-with-cleanup")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "failed"
    statuses = {t.id: t.status for t in state.tasks.values()}
    assert statuses == {
        "extract": "failed",
        "load": "skipped",
        "cleanup": "completed",
        "alert": "completed",
        "report": "skipped",
    }
    assert state.tasks["cleanup"].attempts == state.tasks["alert"].attempts == 1
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    reasons = {e.task_id: e.reason for e in stored if isinstance(e, TaskSkipped)}
    assert reasons == {
        "load": "upstream task extract failed",
        "report": "trigger rule none_failed: an upstream task failed",
    }
    assert check_run(run.run_id, stored).difference is None


def test_a_success_runs_the_cleanup_and_skips_the_alert(
    engine: Engine, registry: HandlerRegistry
) -> None:
    _register_extract(registry, fails=False)
    engine.register_workflow(ETL)
    run = engine.start_run("etl-with-cleanup")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert state.tasks["alert"].status == "skipped"
    assert state.tasks["report"].status == "completed"
    assert state.tasks["cleanup"].status == "completed"
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    reasons = [e.reason for e in stored if isinstance(e, TaskSkipped)]
    assert reasons == ["trigger rule one_failed: no upstream task failed"]
    assert check_run(run.run_id, stored).difference is None
