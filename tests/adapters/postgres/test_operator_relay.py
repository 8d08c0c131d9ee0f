"""Operator actions in a cluster: sent to a node that does not own the run, they reach the
owner through the PostgreSQL relay, and the caller gets the owner's answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowweaver_postgres.relay import MAX_BODY_BYTES, REQUESTS_TABLE

from flowweaver.domain.events import (
    RunCancelRequested,
    RunPaused,
    RunResumed,
    TaskSkipped,
    TaskStarted,
)
from flowweaver.engine import Engine
from flowweaver.engine.operator import OperatorAction, decode_answer, encode_action
from flowweaver.errors import InvalidCommandError, NotFoundError, RunUnavailableError
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.ports import RelayProvider
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import drop_schema, new_schema_name
from tests.adapters.postgres.test_cluster import Cluster, chain, node_of, wait_until

pytestmark = pytest.mark.postgres

NEVER = 3600.0  # no takeover scan while the test runs: each run stays with its owner

WORKFLOW = {
    "id": "held",
    "tasks": [
        {"id": "h", "handler": "hold"},
        {"id": "after", "handler": "noop", "dependencies": ["h"]},
        {"id": "side", "handler": "noop", "dependencies": ["h"]},
    ],
}


class Hold:
    """A handler that blocks until released; says when it was entered."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(20)
        return {}


@pytest.fixture
def hold() -> Iterator[Hold]:
    made = Hold()
    yield made
    made.release.set()


@pytest.fixture
def registry(hold: Hold) -> HandlerRegistry:
    registry = builtin_registry()
    registry.register("hold", hold)
    return registry


@pytest.fixture
def nodes(open_pg_store: OpenStore, registry: HandlerRegistry) -> Iterator[tuple[Engine, Engine]]:
    """Two engines, ``a`` and ``b``, on one schema of one PostgreSQL database."""
    engines = [
        Engine(open_pg_store(), handlers=registry, node=name, workers=2, takeover_interval=NEVER)
        for name in ("a", "b")
    ]
    yield engines[0], engines[1]
    for engine in engines:
        engine.close(grace=1)


def test_pause_resume_cancel_sent_to_the_other_node_take_effect_on_the_owner(
    nodes: tuple[Engine, Engine], hold: Hold
) -> None:
    """B owns nothing; pause, resume, skip and cancel sent to B are stored by A, the owner."""
    a, b = nodes
    a.register_workflow(WORKFLOW)
    run = a.start_run("held")
    assert hold.entered.wait(10)
    assert a.leases.holds(run.run_id) and not b.leases.holds(run.run_id)

    state = b.pause_run(run.run_id, by="ops", reason="from b")
    assert state.status == "paused"
    assert a.get_run(run.run_id).status == "paused"
    with pytest.raises(InvalidCommandError, match="only a running run pauses"):
        b.pause_run(run.run_id)
    state = b.skip_task(run.run_id, "side", by="ops", reason="not needed")
    assert state.tasks["side"].status == "skipped"
    hold.release.set()
    state = b.resume_run(run.run_id, by="ops", reason="go")
    assert state.status in ("running", "completed")
    final = a.wait_run_finished(run.run_id, timeout=15)
    assert final.status == "completed"
    assert not b.leases.holds(run.run_id)  # B never took the run over

    hold.release.clear()
    hold.entered.clear()
    second = a.start_run("held")
    assert hold.entered.wait(10)
    state = b.cancel_run(second.run_id, "stop it", by="ops")
    assert state.cancel_requested
    hold.release.set()
    assert a.wait_run_finished(second.run_id, timeout=15).status == "cancelled"
    stored = [rec.event for rec in a.store.read_run(run.run_id)]
    stored += [rec.event for rec in a.store.read_run(second.run_id)]
    recorded = [
        (type(e).__name__, e.by, e.reason)
        for e in stored
        if isinstance(e, RunPaused | RunResumed | RunCancelRequested)
        or (isinstance(e, TaskSkipped) and e.by is not None)
    ]
    assert recorded == [
        ("RunPaused", "ops", "from b"),
        ("TaskSkipped", "ops", "not needed"),
        ("RunResumed", "ops", "go"),
        ("RunCancelRequested", "ops", "stop it"),
    ]
    with pytest.raises(InvalidCommandError, match="has ended"):
        b.cancel_run(second.run_id)


def test_the_owner_refusal_comes_back_through_the_relay(
    nodes: tuple[Engine, Engine], hold: Hold
) -> None:
    """The owner decides again: a relayed action its state refuses answers with the error."""
    a, b = nodes
    a.register_workflow(WORKFLOW)
    run = a.start_run("held")
    assert hold.entered.wait(10)
    relay = b.actions.relay
    assert relay is not None
    version = a.get_run(run.run_id).version

    def relayed(**fields: Any) -> Any:
        action = OperatorAction(run_id=run.run_id, by="ops", **fields)
        answer = relay.request(run.run_id, encode_action(action), claim_timeout=5, timeout=10)
        assert answer is not None
        return decode_answer(run.run_id, answer)

    refused = relayed(kind="resume")
    assert isinstance(refused, InvalidCommandError) and "not paused" in str(refused)
    missing = relayed(kind="skip", task_id="nope")
    assert isinstance(missing, NotFoundError)
    assert relayed(kind="retry", task_id="h").__class__ is InvalidCommandError
    assert a.get_run(run.run_id).version == version
    hold.release.set()
    assert a.wait_run_finished(run.run_id, timeout=15).status == "completed"


def test_no_owner_answering_is_run_unavailable_and_nothing_is_stored(
    open_pg_store: OpenStore, nodes: tuple[Engine, Engine], hold: Hold
) -> None:
    """A run whose owner has no relay (or is being replaced) gives a 503-class error in time."""
    a, b = nodes
    a.register_workflow(WORKFLOW)
    run = a.start_run("held")
    assert hold.entered.wait(10)
    a.actions.close()  # A still owns the run but no longer answers relayed actions
    version = a.get_run(run.run_id).version
    began = time.monotonic()
    with pytest.raises(RunUnavailableError, match="no node that owns the run answered"):
        b.pause_run(run.run_id, timeout=2.5)
    assert time.monotonic() - began < 6
    assert a.get_run(run.run_id).version == version
    assert count_requests(b.store) == 0  # the withdrawn request left nothing behind
    hold.release.set()
    assert a.wait_run_finished(run.run_id, timeout=15).status == "completed"


def test_an_orphaned_run_is_taken_by_the_node_that_gets_the_action(
    open_pg_store: OpenStore, registry: HandlerRegistry, hold: Hold
) -> None:
    """When the owner is gone, the node that gets the action owns the run and stores it."""
    a = Engine(open_pg_store(), handlers=registry, node="a", workers=1, takeover_interval=NEVER)
    try:
        a.register_workflow(WORKFLOW)
        run = a.start_run("held")
        assert hold.entered.wait(10)
    finally:
        a.close(grace=0)  # its leases end with its session: an orphan
    b = Engine(
        open_pg_store(),
        handlers=registry,
        node="b",
        workers=1,
        takeover_interval=NEVER,
        recover=False,
    )
    try:
        state = b.pause_run(run.run_id, by="ops")
        assert state.status == "paused"
        assert b.leases.holds(run.run_id)
        hold.release.set()
        b.resume_run(run.run_id)
        assert b.wait_run_finished(run.run_id, timeout=15).status == "completed"
    finally:
        hold.release.set()
        b.close(grace=1)


# --- two `flowweaver serve` processes ------------------------------------------------------------


@pytest.fixture
def serve_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Serve processes on a schema of their own, dropped with everything in it afterwards."""
    schema = new_schema_name()
    started = Cluster(schema, tmp_path)
    try:
        yield started
    finally:
        started.close()
        drop_schema(schema)


@pytest.mark.slow
def test_actions_sent_to_the_other_serve_process_answer_with_the_owner_state(
    serve_cluster: Cluster,
) -> None:
    """POST pause, resume and cancel to the node that does not own the run: 202 from the owner."""
    a, b = serve_cluster.start(2)
    status, _ = a.request("POST", "/workflows", chain("relayed", 3, 1.0))
    assert status == 201
    _, run_id = a.start_run("relayed")
    assert wait_until(lambda: any(e.name == "TaskStarted" for e in serve_cluster.events(run_id)))
    started = [e.event for e in serve_cluster.events(run_id) if isinstance(e.event, TaskStarted)]
    assert node_of(started[0].worker) == a.name  # A owns the run; B gets the actions
    status, state = b.request("POST", f"/runs/{run_id}/pause", {"reason": "via b"})
    assert status == 202 and state["status"] == "paused", state
    status, problem = b.request("POST", f"/runs/{run_id}/pause")
    assert status == 409 and "only a running run pauses" in problem["detail"]
    status, state = b.request("POST", f"/runs/{run_id}/resume")
    assert status == 202 and state["status"] == "running"
    status, state = b.request("POST", f"/runs/{run_id}/cancel", {"reason": "enough"})
    assert status == 202 and state["cancelRequested"] is True
    serve_cluster.wait_finished([run_id])
    assert serve_cluster.status(run_id) == "cancelled"
    stored = [e.event for e in serve_cluster.events(run_id)]
    assert [
        (type(e).__name__, e.reason)
        for e in stored
        if isinstance(e, RunPaused | RunResumed | RunCancelRequested)
    ] == [("RunPaused", "via b"), ("RunResumed", ""), ("RunCancelRequested", "enough")]
    workers = {node_of(e.worker) for e in stored if isinstance(e, TaskStarted)}
    assert workers == {a.name}  # B never ran anything of it
    status, _ = b.request("POST", "/runs/00000000-0000-4000-8000-000000000009/pause")
    assert status == 404


# --- the relay alone ---------------------------------------------------------------------------


def count_requests(store: Any) -> int:
    with store._transaction(False) as cursor:
        cursor.execute(f'SELECT count(*) AS n FROM "{store.schema}".{REQUESTS_TABLE}')
        return int(cursor.fetchone()["n"])


def test_a_claimed_request_that_gets_no_answer_times_out_and_leaves_no_row(
    open_pg_store: OpenStore,
) -> None:
    """The owner took it and hangs: the sender gets TimeoutError in time; the row is gone."""
    owner_store, sender_store = open_pg_store(), open_pg_store()
    taken, release = threading.Event(), threading.Event()

    def hang(run_id: str, body: bytes) -> bytes:
        taken.set()
        release.wait(10)
        return b'{"outcome":"done"}'

    owner = owner_store.open_operator_relay("owner", owns=lambda run_id: True, handle=hang)
    sender = sender_store.open_operator_relay("sender", owns=lambda run_id: False, handle=hang)
    try:
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="node owner took the action"):
            sender.request("r-1", b"{}", claim_timeout=5, timeout=1.0)
        assert taken.is_set()
        assert time.monotonic() - began < 3
        assert count_requests(sender_store) == 0
        with pytest.raises(ValueError, match="over"):
            sender.request("r-1", b"x" * (MAX_BODY_BYTES + 1), claim_timeout=1, timeout=1)
        assert count_requests(sender_store) == 0
    finally:
        release.set()
        owner.close()
        sender.close()


def test_a_relayed_body_and_answer_travel_whole(open_pg_store: OpenStore) -> None:
    """A large body (a hand-given output) reaches the owner as sent; its answer comes back."""
    owner_store, sender_store = open_pg_store(), open_pg_store()
    assert isinstance(owner_store, RelayProvider)  # the capability the engine asks for
    seen: list[tuple[str, bytes]] = []

    def echo(run_id: str, body: bytes) -> bytes:
        seen.append((run_id, body))
        return body[:16]

    owner = owner_store.open_operator_relay("owner", owns=lambda r: r == "mine", handle=echo)
    sender = sender_store.open_operator_relay("sender", owns=lambda r: False, handle=echo)
    try:
        body = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert sender.request("mine", body, claim_timeout=5, timeout=10) == body[:16]
        assert seen == [("mine", body)]
        assert sender.request("theirs", b"{}", claim_timeout=0.3, timeout=5) is None
        assert len(seen) == 1 and count_requests(sender_store) == 0
    finally:
        owner.close()
        sender.close()
