"""An engine on PostgreSQL through a loopback proxy that cuts the store off mid-task.

The proxy stands for the database going away (every connection closed, the port refusing
new ones) and coming back; the real server is never stopped.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from flowweaver.engine import Engine
from flowweaver.handlers import TaskContext, builtin_registry
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WAIT_S = 20.0


@pytest.mark.timeout(60)
def test_a_store_outage_during_each_task_reruns_no_handler(
    open_pg_store: OpenStore, proxy: TcpProxy
) -> None:
    """The store is cut off while each of three tasks runs, and comes back only after the
    handler has ended and the node has lost its lease session: every handler runs once, no
    attempt is recorded Interrupted, and the run completes."""
    calls: Counter[str] = Counter()
    tasks = [f"s{i}" for i in range(3)]
    entered = {task: threading.Event() for task in tasks}
    cut = {task: threading.Event() for task in tasks}
    parked = {task: threading.Event() for task in tasks}
    sessions_lost = threading.Semaphore(0)

    def slow(inputs: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        calls[context.task_id] += 1
        entered[context.task_id].set()
        assert cut[context.task_id].wait(WAIT_S)  # the handler ends while the store is gone
        return {"done": context.task_id}

    def watch(_: Any, __: str, event: EventDict) -> EventDict:
        if event["event"] == "outcome_parked":
            parked[event["task_id"]].set()
        elif event["event"] == "lease_session_lost":
            sessions_lost.release()
        return event

    registry = builtin_registry()
    registry.register("slow", slow)
    store = open_pg_store(port=proxy.port, pool_size=2, connect_timeout=1)
    engine = Engine(store, handlers=registry, workers=2, node="outage")
    try:
        engine.register_workflow(
            {
                "id": "outage",
                "tasks": [
                    {
                        "id": f"s{i}",
                        "handler": "slow",
                        **({"dependencies": [f"s{i - 1}"]} if i else {}),
                    }
                    for i in range(3)
                ],
            }
        )
        run = engine.start_run("outage")
        with capture_logs(processors=[watch]) as logs:
            for task_id in tasks:
                assert entered[task_id].wait(WAIT_S), f"{task_id} never started"
                proxy.stop()  # the database is gone while the handler runs...
                cut[task_id].set()
                # ...past the handler's end and the loss of the node's lease session.
                assert parked[task_id].wait(WAIT_S), f"{task_id}'s outcome was not held"
                assert sessions_lost.acquire(timeout=WAIT_S), "the lease session was not lost"
                proxy.start()
            state = engine.wait_run_finished(run.run_id, timeout=WAIT_S)
    finally:
        engine.close(grace=2)
    # Each outage cost the lease session, and each finished handler's result was held.
    assert [e["event"] for e in logs].count("lease_session_lost") == 3
    held = {e["task_id"] for e in logs if e["event"] == "outcome_parked"}
    assert held == {"s0", "s1", "s2"}
    assert state.status == "completed", state
    assert calls == {"s0": 1, "s1": 1, "s2": 1}
    failed = [e.event for e in store.read_run(run.run_id) if e.name == "TaskFailed"]
    assert failed == []
