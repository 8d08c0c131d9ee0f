"""Signals in a cluster: a signal sent to a node that does not own the run reaches the owner
over the operator relay; a wait's deadline survives the kill -9 of its owner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowweaver.domain.events import SignalReceived, TaskFailed, TaskScheduled, TaskStarted
from flowweaver.engine import Engine
from flowweaver.errors import InvalidCommandError, NotFoundError
from flowweaver.handlers import HandlerRegistry, builtin_registry
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import drop_schema, new_schema_name
from tests.adapters.postgres.test_cluster import TAKEOVER_BOUND_S, Cluster, node_of, wait_until

pytestmark = pytest.mark.postgres

NEVER = 3600.0  # no takeover scan while the test runs: each run stays with its owner


def release(prepare: dict[str, Any], timeout: float) -> dict[str, Any]:
    """prepare -> approve (waits for "approval") -> ship."""
    return {
        "id": "release",
        "tasks": [
            {"id": "prepare", **prepare},
            {
                "id": "approve",
                "dependencies": ["prepare"],
                "wait": {"signal": "approval", "timeout": timeout},
                "outputs": {"approved": "$.result.approved"},
            },
            {
                "id": "ship",
                "handler": "noop",
                "dependencies": ["approve"],
                "inputs": {"approved": "$.approved"},
            },
        ],
    }


@pytest.fixture
def nodes(open_pg_store: OpenStore) -> Iterator[tuple[Engine, Engine]]:
    """Two engines, ``a`` and ``b``, on one schema of one PostgreSQL database."""
    registry: HandlerRegistry = builtin_registry()
    engines = [
        Engine(open_pg_store(), handlers=registry, node=name, workers=2, takeover_interval=NEVER)
        for name in ("a", "b")
    ]
    yield engines[0], engines[1]
    for engine in engines:
        engine.close(grace=1)


def test_a_signal_sent_to_the_other_node_completes_the_wait_on_the_owner(
    nodes: tuple[Engine, Engine],
) -> None:
    """B owns nothing; the signal sent to B is stored by A with its by; refusals come back."""
    a, b = nodes
    a.register_workflow(release({"handler": "noop"}, 3600))
    run = a.start_run("release")
    assert wait_until(lambda: a.get_run(run.run_id).tasks["approve"].status == "waiting", 10)
    assert a.leases.holds(run.run_id) and not b.leases.holds(run.run_id)
    with pytest.raises(NotFoundError):
        b.send_signal(run.run_id, "nobody")
    state = b.send_signal(run.run_id, "approval", {"approved": "yes"}, by="carol")
    assert state.tasks["approve"].status == "completed"
    with pytest.raises(InvalidCommandError, match=r"already received|has ended"):
        b.send_signal(run.run_id, "approval", {"approved": "no"})
    final = a.wait_run_finished(run.run_id, timeout=15)
    assert final.status == "completed"
    assert final.tasks["approve"].output == {"approved": "yes"}
    assert not b.leases.holds(run.run_id)  # B never took the run over
    [received] = [
        rec.event for rec in a.store.read_run(run.run_id) if isinstance(rec.event, SignalReceived)
    ]
    assert (received.payload, received.by) == ({"approved": "yes"}, "carol")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Serve processes on a schema of their own, dropped with everything in it afterwards."""
    schema = new_schema_name()
    started = Cluster(schema, tmp_path)
    try:
        yield started
    finally:
        started.close()
        drop_schema(schema)


@pytest.mark.slow
def test_signal_over_http_to_one_node_and_timeout_after_the_owner_is_killed(
    cluster: Cluster,
) -> None:
    """POST the signal of one run to B while A runs it (kept, then used); kill -9 A while a
    second run waits: B takes it over and fails it at the deadline its events set."""
    a, b = cluster.start(2)
    status, _ = a.request(
        "POST", "/workflows", release({"handler": "step", "inputs": {"seconds": 1.0}}, 4)
    )
    assert status == 201
    _, first = a.start_run("release")
    assert wait_until(lambda: any(row[0] == first for row in cluster.invoked()), 10)
    status, answer = b.request(
        "POST", f"/runs/{first}/signals/approval", {"payload": {"approved": True}}
    )
    assert status == 202, answer
    status, answer = b.request("POST", f"/runs/{first}/signals/approval", {"payload": {}})
    assert status == 409, answer
    cluster.wait_finished([first])
    assert cluster.status(first) == "completed"
    events = [rec.event for rec in cluster.events(first)]
    started = [e for e in events if isinstance(e, TaskStarted)]
    assert started and all(node_of(e.worker) == a.name for e in started)
    [received] = [e for e in events if isinstance(e, SignalReceived)]
    assert received.payload == {"approved": True}

    _, second = a.start_run("release")
    assert wait_until(
        lambda: any(
            isinstance(rec.event, TaskScheduled) and rec.event.task_id == "approve"
            for rec in cluster.events(second)
        ),
        10,
    )
    killed_at = time.monotonic()
    a.kill()
    cluster.wait_finished([second], timeout=4 + TAKEOVER_BOUND_S + 10)
    assert time.monotonic() - killed_at < 4 + TAKEOVER_BOUND_S + 10
    assert cluster.status(second) == "failed"
    events = [rec.event for rec in cluster.events(second)]
    [scheduled] = [e for e in events if isinstance(e, TaskScheduled) and e.task_id == "approve"]
    [failed] = [e for e in events if isinstance(e, TaskFailed)]
    assert failed.error.type == "SignalTimeout"
    assert failed.timestamp - scheduled.timestamp >= timedelta(seconds=4)
