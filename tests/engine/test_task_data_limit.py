"""The engine caps each task's resolved inputs and published output (max_task_io_bytes)."""

from __future__ import annotations

from typing import Any

from flowweaver.domain.events import TaskFailed, TaskScheduled
from flowweaver.handlers import HandlerRegistry
from tests.engine.conftest import EngineFactory

CAP = 4000


def test_inputs_over_the_cap_fail_the_task_and_store_nothing_large(
    make_engine: EngineFactory,
) -> None:
    """A parameter referenced many times fails its task with InputTooLarge; events stay small."""
    engine = make_engine(max_task_io_bytes=CAP)
    engine.register_workflow(
        {
            "id": "amplify",
            "tasks": [
                {
                    "id": "t",
                    "handler": "echo",
                    "inputs": {f"x{i}": "$.params.big" for i in range(100)},
                },
                {"id": "after", "handler": "noop", "dependencies": ["t"]},
            ],
        }
    )
    run = engine.start_run("amplify", parameters={"big": "x" * 3000})
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "failed"
    error = state.task("t").last_error
    assert error is not None
    assert (error.type, error.retryable) == ("InputTooLarge", False)
    assert "task 't'" in error.message and f"{CAP} bytes" in error.message
    assert state.task("after").status == "skipped"
    recorded = engine.store.read_run(run.run_id)
    scheduled = [r.event for r in recorded if isinstance(r.event, TaskScheduled)]
    assert [e.inputs for e in scheduled] == [{}]
    # Before the cap, this run stored the 3 KB parameter 100 times over (300 KB).
    assert sum(len(r.raw) for r in recorded) < 20_000


def test_an_output_over_the_cap_fails_the_attempt_for_good(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """A result published over the cap fails with OutputTooLarge and is not retried."""
    calls: list[int] = []

    def big(inputs: dict[str, Any]) -> str:
        calls.append(1)
        return "y" * (CAP + 1)

    registry.register("big", big)
    engine = make_engine(max_task_io_bytes=CAP)
    engine.register_workflow(
        {"id": "out", "tasks": [{"id": "t", "handler": "big", "retry": {"maxAttempts": 3}}]}
    )
    run = engine.start_run("out")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "failed"
    failed = [r.event for r in engine.store.read_run(run.run_id) if isinstance(r.event, TaskFailed)]
    assert [(e.error.type, e.error.retryable, e.retry_at) for e in failed] == [
        ("OutputTooLarge", False, None)
    ]
    assert len(calls) == 1


def test_the_default_cap_lets_ordinary_data_through(make_engine: EngineFactory) -> None:
    """With the default cap (1 MiB) a run passing a few hundred KB completes."""
    engine = make_engine()
    engine.register_workflow(
        {"id": "ok", "tasks": [{"id": "t", "handler": "echo", "inputs": {"x": "$.params.big"}}]}
    )
    run = engine.start_run("ok", parameters={"big": "x" * 300_000})
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert state.task("t").output == {"result": {"x": "x" * 300_000}}
