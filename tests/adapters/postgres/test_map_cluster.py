"""A map task in cluster mode: two `flowweaver serve` nodes on one PostgreSQL schema, and
kill -9 of the node that runs the map while its elements run. The other node takes the run
over; every element's result is in the output exactly once, in order, and no element that
completed before the kill runs again."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowweaver_postgres import PostgresEventStore, open_store

from flowweaver.domain.events import MapElementCompleted, MapElementFailed, MapElementStarted
from tests.adapters.postgres.support import drop_schema, new_schema_name, store_url
from tests.serve_process import DEADLINE, ServeProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HANDLERS = Path(__file__).with_name("map_handlers.py")
ELEMENTS = 60
WORKFLOW: dict[str, Any] = {
    "id": "cluster-map",
    "tasks": [
        {
            "id": "fan",
            "handler": "square_step",
            "inputs": {"items": "$.params.xs", "seconds": 0.15},
            "map": "$.items",
        },
        {"id": "after", "handler": "noop", "dependencies": ["fan"]},
    ],
}


def wait_until(condition: Any, timeout: float = DEADLINE) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture
def schema() -> Iterator[str]:
    """A schema of the test's own, dropped afterwards."""
    name = new_schema_name()
    try:
        yield name
    finally:
        drop_schema(name)


def test_a_map_finishes_on_the_other_node_after_kill_9_with_each_result_once_in_order(
    schema: str, tmp_path: Path
) -> None:
    """kill -9 the node running a 60-element map mid-way: the other node resumes it, reruns
    only the elements that had not completed, and the output lists every square in order."""
    url = store_url(schema, pool_size=2)
    invocations = tmp_path / "invocations.log"
    invocations.touch()
    nodes = [
        ServeProcess(
            url,
            tmp_path,
            args=["--grace", "2", "--workers", "4", "--handlers", str(HANDLERS)],
            env={"FWTEST_INVOCATIONS": str(invocations)},
        )
        for _ in range(2)
    ]
    store: PostgresEventStore | None = None
    try:
        for node in nodes:
            node.wait_started()
        a, b = nodes
        status, _ = a.request("POST", "/workflows", WORKFLOW)
        assert status == 201
        body = {"workflowId": "cluster-map", "parameters": {"xs": list(range(ELEMENTS))}}
        status, answer = a.request("POST", "/runs", body)
        assert status == 201, answer
        run_id = str(answer["id"])
        store = open_store(store_url(schema, pool_size=1))

        def completed_elements() -> int:
            return sum(isinstance(e.event, MapElementCompleted) for e in store.read_run(run_id))

        assert wait_until(lambda: completed_elements() >= 12)
        a.kill()
        before = store.read_run(run_id)
        done_before = {e.event.index for e in before if isinstance(e.event, MapElementCompleted)}
        assert len(done_before) < ELEMENTS  # killed mid-map

        def finished() -> bool:
            state = store.run_state(run_id)
            return state is not None and state.is_terminal

        assert wait_until(finished, timeout=60)
        state = store.run_state(run_id)
        assert state is not None
        assert state.status == "completed"
        assert state.tasks["fan"].output == {"result": [{"square": i * i} for i in range(ELEMENTS)]}
        events = store.read_run(run_id)
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        completed = Counter(
            e.event.index for e in events if isinstance(e.event, MapElementCompleted)
        )
        assert completed == Counter(dict.fromkeys(range(ELEMENTS), 1))
        assert [e.name for e in events].count("TaskCompleted") == 2  # fan and after, once each
        calls = Counter(line.split()[1] for line in invocations.read_text().splitlines())
        for index in done_before:
            assert calls[f"fan[{index}]"] == 1, index
        # What ran after the kill ran on B; what A was running was recorded as interrupted.
        b_name = f"{socket.gethostname()}:{b.pid}"
        after_kill = [
            e.event for e in events[len(before) :] if isinstance(e.event, MapElementStarted)
        ]
        assert after_kill
        assert {s.worker.rpartition("/")[0] for s in after_kill} == {b_name}
        interrupted = [
            e.event
            for e in events
            if isinstance(e.event, MapElementFailed) and e.event.error.type == "Interrupted"
        ]
        assert interrupted
    finally:
        for node in nodes:
            node.close()
        if store is not None:
            store.close()
