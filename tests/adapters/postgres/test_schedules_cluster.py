"""Schedules in cluster mode: two `flowweaver serve` nodes on one PostgreSQL schema, a schedule
firing every second, kill -9 of the node that fires it. Each fire time has exactly one run, and
no fire inside the catch-up window is lost: the other node takes the scheduler lease over and
catches up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flowweaver.domain.events import RunStarted
from flowweaver.domain.schedule import ScheduleFired, ScheduleFireSkipped
from tests.adapters.postgres.test_cluster import Cluster, Node, cluster, wait_until

__all__ = ["cluster"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TICK = {"id": "tick", "tasks": [{"id": "t", "handler": "noop"}]}
EVERY_SECOND = {
    "id": "every-second",
    "workflowId": "tick",
    "cron": "* * * * * *",
    "overlap": "allow",
    "catchupWindow": 60,
}


def leading(nodes: list[Node]) -> list[Node]:
    """Return the nodes that logged taking the scheduler lease."""
    return [n for n in nodes if any(x.get("event") == "scheduler_leading" for x in n.drain())]


def fires(cluster: Cluster) -> list[ScheduleFired]:
    return [e for e in cluster.store.schedule_events() if isinstance(e, ScheduleFired)]


def test_one_run_per_fire_across_a_kill_of_the_firing_node(
    cluster: Cluster, tmp_path: Path
) -> None:
    """kill -9 of the leader: the other node fires on; every second has exactly one run."""
    a, b = cluster.start(2)
    assert a.request("POST", "/workflows", TICK)[0] == 201
    status, answer = b.request("POST", "/schedules", EVERY_SECOND)
    assert status == 201, answer
    assert wait_until(lambda: len(fires(cluster)) >= 3, timeout=20)
    [leader] = leading([a, b])
    other = b if leader is a else a
    killed_at = time.time()
    leader.kill()
    # The survivor takes the lease over and fires on past the kill.
    assert wait_until(lambda: bool(leading([other])), timeout=20)
    assert wait_until(
        lambda: any(f.fire_time.timestamp() > killed_at + 3 for f in fires(cluster)), timeout=20
    )
    assert other.request("POST", "/schedules/every-second/pause")[0] == 200
    fired = [f for f in fires(cluster) if not f.manual]
    times = [int(f.fire_time.timestamp()) for f in fired]
    assert times == list(range(times[0], times[0] + len(times))), times  # none lost, none twice
    skipped = [e for e in cluster.store.schedule_events() if isinstance(e, ScheduleFireSkipped)]
    assert skipped == []
    # One run per fire: its id is the fire's, its key the fire's key; no other run exists.
    run_ids = [f.run_id for f in fired]
    assert len(set(run_ids)) == len(run_ids)
    cluster.wait_finished(run_ids, timeout=30)
    for fire in fired:
        [first] = [e.event for e in cluster.events(fire.run_id)[:1]]
        assert isinstance(first, RunStarted)
        assert first.idempotency_key == fire.idempotency_key
        assert first.idempotency_key.startswith("schedule:every-second:")
    listed = cluster.store.list_runs(workflow_id="tick", limit=1000).runs
    assert sorted(r.id for r in listed) == sorted(run_ids)
    assert cluster.status(run_ids[-1]) == "completed"
