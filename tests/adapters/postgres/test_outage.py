"""An engine on PostgreSQL through a loopback proxy that cuts the store off mid-task.

The proxy stands for the database going away (every connection closed, the port refusing
new ones) and coming back; the real server is never stopped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from structlog.testing import capture_logs

from flowweaver.engine import Engine
from flowweaver.handlers import TaskContext, builtin_registry
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TASK_S = 3.0
OUTAGE_S = 4.0


@pytest.mark.timeout(60)
def test_a_store_outage_during_each_task_reruns_no_handler(
    open_pg_store: OpenStore, proxy: TcpProxy
) -> None:
    """The store is cut off for 4 s while each of three 3 s tasks runs: every handler runs
    once, no attempt is recorded Interrupted, and the run completes."""
    calls: Counter[str] = Counter()
    entered = {f"s{i}": threading.Event() for i in range(3)}

    def slow(inputs: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        calls[context.task_id] += 1
        entered[context.task_id].set()
        time.sleep(TASK_S)
        return {"done": context.task_id}

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
        with capture_logs() as logs:
            for task_id in ("s0", "s1", "s2"):
                assert entered[task_id].wait(20), f"{task_id} never started"
                proxy.stop()  # the database is gone while the handler runs...
                threading.Event().wait(OUTAGE_S)  # ...past the handler's end
                proxy.start()
            state = engine.wait_run_finished(run.run_id, timeout=20)
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
