"""Faults inside the engine, injected in-process: a run actor failing as it starts, a store
append failing under a run, a store that stays down while the engine closes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from flowweaver.engine import faults
from tests.engine.conftest import EngineFactory, chain


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    """Every in-process fault point is disarmed after the test."""
    yield
    faults.disarm()


def test_a_run_actor_that_fails_while_starting_is_replaced(make_engine: EngineFactory) -> None:
    """An error in a run actor's start-up ends in a new actor that finishes the run."""
    engine = make_engine()
    engine.register_workflow(chain())
    faults.arm_raise("actor_start", times=2)
    with capture_logs() as logs:
        run = engine.start_run("chain3", parameters={"value": 5})
        state = engine.wait_run_finished(run.run_id, timeout=10)
    assert faults.fired("actor_start") == 2
    assert state.status == "completed"
    assert state.tasks["t3"].output == {"result": {"value": 5}}
    assert [e["event"] for e in logs].count("run_actor_start_failed") == 2


def test_a_run_actor_that_always_fails_while_starting_leaves_the_live_table(
    make_engine: EngineFactory,
) -> None:
    """Past the death limit the run is given up here, with an error logged, not left stuck."""
    engine = make_engine()
    engine.register_workflow(chain())
    faults.arm_raise("actor_start", times=1000)
    with capture_logs() as logs:
        run = engine.start_run("chain3", parameters={"value": 5})
        for _ in range(500):
            if engine.live_runs() == 0:
                break
            threading.Event().wait(0.01)
    assert engine.live_runs() == 0
    assert faults.fired("actor_start") == 6
    given_up = [e for e in logs if e["event"] == "run_actor_keeps_failing"]
    assert [e["run_id"] for e in given_up] == [run.run_id]
    assert engine.get_run(run.run_id).status == "running"  # resumes when an engine opens it
