"""Trigger rules on the engine with real stores (memory and a SQLite file): a cleanup task
that runs after a failure, and an alert that runs only when something failed."""

from __future__ import annotations

from typing import Any

from flowweaver.domain.events import TaskSkipped
from flowweaver.domain.replay_check import check_run
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry

ETL: dict[str, Any] = {
    "id": "etl-with-cleanup",
    "tasks": [
        {"id": "extract", "handler": "extract"},
        {"id": "load", "handler": "noop", "dependencies": ["extract"]},
        {"id": "cleanup", "handler": "cleanup", "dependencies": ["load"], "trigger": "all_done"},
        {"id": "alert", "handler": "alert", "dependencies": ["extract"], "trigger": "one_failed"},
        {"id": "report", "handler": "noop", "dependencies": ["load"], "trigger": "none_failed"},
    ],
}


def _handlers(registry: HandlerRegistry, *, extract_fails: bool) -> list[str]:
    calls: list[str] = []

    def extract(inputs: dict[str, Any]) -> Any:
        if extract_fails:
            raise ValueError("source unreachable")
        return {"rows": 3}

    registry.register("extract", extract)
    registry.register("cleanup", lambda inputs: calls.append("cleanup") or "clean")
    registry.register("alert", lambda inputs: calls.append("alert") or "paged")
    return calls


def test_a_failure_runs_the_cleanup_and_the_alert(
    engine: Engine, registry: HandlerRegistry
) -> None:
    calls = _handlers(registry, extract_fails=True)
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
    assert sorted(calls) == ["alert", "cleanup"]
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
    calls = _handlers(registry, extract_fails=False)
    engine.register_workflow(ETL)
    run = engine.start_run("etl-with-cleanup")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert state.tasks["alert"].status == "skipped"
    assert state.tasks["report"].status == "completed"
    assert calls == ["cleanup"]
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    reasons = [e.reason for e in stored if isinstance(e, TaskSkipped)]
    assert reasons == ["trigger rule one_failed: no upstream task failed"]
    assert check_run(run.run_id, stored).difference is None
