"""Concurrency limits and priorities on the embedded SQLite store: the live engine."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.engine import Engine
from flowweaver.engine.pool import Job, JobQueue
from flowweaver.errors import ValidationError
from flowweaver.handlers import HandlerRegistry, builtin_registry
from flowweaver.store import SQLiteEventStore

WAIT_S = 20.0


class Turnstile:
    """A handler ``turn`` that blocks each run (by its input ``n``) until the test lets it go,
    and records which runs entered, in order, and how many were inside at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.entered: queue.Queue[int] = queue.Queue()
        self._gates: dict[int, threading.Event] = {}

    def gate(self, n: int) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(n, threading.Event())

    def let_go(self, n: int) -> None:
        self.gate(n).set()

    def next_entered(self) -> int:
        return self.entered.get(timeout=WAIT_S)

    def open_all(self) -> None:
        with self._lock:
            gates = list(self._gates.values())
        for g in gates:
            g.set()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        n = int(inputs["n"])
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.put(n)
        self.gate(n).wait(WAIT_S)
        with self._lock:
            self.inside -= 1
        return {"n": n}


@pytest.fixture
def turnstile() -> Iterator[Turnstile]:
    t = Turnstile()
    yield t
    t.open_all()


@pytest.fixture
def registry(turnstile: Turnstile) -> HandlerRegistry:
    registry = builtin_registry()
    registry.register("turn", turnstile)
    return registry


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "limits.db")


@pytest.fixture
def engine(db: str, registry: HandlerRegistry) -> Iterator[Engine]:
    engine = Engine(SQLiteEventStore(db), handlers=registry, workers=4, owns_store=True)
    yield engine
    engine.close(grace=2)


def limited(limit: int = 1, key: str | None = None, workflow_id: str = "limited") -> dict[str, Any]:
    concurrency: dict[str, Any] = {"limit": limit}
    if key is not None:
        concurrency["key"] = key
    return {
        "id": workflow_id,
        "concurrency": concurrency,
        "tasks": [{"id": "t", "handler": "turn", "inputs": {"n": "$.params.n"}}],
    }


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        threading.Event().wait(0.01)
    return condition()


def names(engine: Engine, run_id: str) -> list[str]:
    return [e.name for e in engine.store.read_run(run_id)]


def test_runs_over_the_limit_queue_and_begin_by_priority_then_submission(
    engine: Engine, turnstile: Turnstile
) -> None:
    """With a limit of 1 one run is under way at a time; queued runs begin highest priority
    first, then in the order they were submitted."""
    engine.register_workflow(limited(1))
    handles = [
        engine.start_run("limited", parameters={"n": n}, priority=p)
        for n, p in [(0, 0), (1, 0), (2, 5), (3, 0), (4, 5)]
    ]
    assert [h.state.status for h in handles] == ["running"] + ["queued"] * 4
    assert names(engine, handles[1].run_id) == ["RunStarted", "RunQueued"]
    queued = engine.store.list_runs(workflow_id="limited", status="queued").runs
    assert {r.id for r in queued} == {h.run_id for h in handles[1:]}
    order = []
    for _ in handles:
        n = turnstile.next_entered()
        order.append(n)
        turnstile.let_go(n)
    assert order == [0, 2, 4, 1, 3]
    for h in handles:
        assert engine.wait_run_finished(h.run_id, WAIT_S).status == "completed"
    assert turnstile.most_inside == 1
    assert names(engine, handles[2].run_id)[:4] == [
        "RunStarted",
        "RunQueued",
        "RunDequeued",
        "TaskScheduled",
    ]
    assert engine.get_run(handles[2].run_id).priority == 5


def test_a_keyed_limit_counts_each_key_value_apart(engine: Engine, turnstile: Turnstile) -> None:
    """One run per customer at a time: another customer's run is not held back."""
    engine.register_workflow(limited(1, key="$.params.customer"))
    a1 = engine.start_run("limited", parameters={"n": 1, "customer": "acme"})
    a2 = engine.start_run("limited", parameters={"n": 2, "customer": "acme"})
    b1 = engine.start_run("limited", parameters={"n": 3, "customer": "bolt"})
    assert (a1.state.status, a2.state.status, b1.state.status) == ("running", "queued", "running")
    assert a2.state.concurrency_key == '"acme"'
    assert {turnstile.next_entered(), turnstile.next_entered()} == {1, 3}
    turnstile.let_go(3)
    assert engine.wait_run_finished(b1.run_id, WAIT_S).status == "completed"
    assert engine.get_run(a2.run_id).status == "queued"  # bolt's slot is not acme's
    turnstile.let_go(1)
    assert turnstile.next_entered() == 2
    turnstile.let_go(2)
    assert engine.wait_run_finished(a2.run_id, WAIT_S).status == "completed"


def test_a_queued_run_is_cancelled_without_beginning_or_freeing_a_slot(
    engine: Engine, turnstile: Turnstile
) -> None:
    """Cancelling a queued run records RunCancelled at once; it never starts, and the run
    under way keeps the only slot."""
    engine.register_workflow(limited(1))
    first = engine.start_run("limited", parameters={"n": 0})
    second = engine.start_run("limited", parameters={"n": 1})
    third = engine.start_run("limited", parameters={"n": 2})
    assert turnstile.next_entered() == 0
    state = engine.cancel_run(second.run_id, reason="not needed", by="alice")
    assert state.status == "cancelled"
    assert names(engine, second.run_id) == [
        "RunStarted",
        "RunQueued",
        "RunCancelRequested",
        "RunCancelled",
    ]
    assert engine.get_run(third.run_id).status == "queued"
    # The actor that stored the cancel answered first, then leaves the live table.
    assert wait_until(lambda: engine.live_runs() == 1)
    turnstile.let_go(0)
    assert turnstile.next_entered() == 2
    turnstile.let_go(2)
    assert engine.wait_run_finished(third.run_id, WAIT_S).status == "completed"
    assert engine.get_run(first.run_id).status == "completed"
    assert "RunDequeued" not in names(engine, second.run_id)


def test_a_queued_run_is_still_queued_after_a_restart_and_begins_when_a_slot_frees(
    db: str, registry: HandlerRegistry, turnstile: Turnstile
) -> None:
    """Queued is state, replayed from the store: a new engine keeps the run queued and
    begins it when the run under way (resumed after the restart) ends."""
    engine = Engine(SQLiteEventStore(db), handlers=registry, workers=2, owns_store=True)
    engine.register_workflow(limited(1))
    running = engine.start_run("limited", parameters={"n": 0})
    waiting = engine.start_run("limited", parameters={"n": 1})
    assert turnstile.next_entered() == 0
    engine.close(grace=0.1)  # the attempt of run 0 is left running, as a crash would
    again = Engine(SQLiteEventStore(db), handlers=registry, workers=2, owns_store=True)
    try:
        assert again.get_run(waiting.run_id).status == "queued"
        assert turnstile.next_entered() == 0  # resumed: the lost attempt runs again
        assert again.get_run(waiting.run_id).status == "queued"
        turnstile.let_go(0)
        assert again.wait_run_finished(running.run_id, WAIT_S).status == "completed"
        assert turnstile.next_entered() == 1
        turnstile.let_go(1)
        assert again.wait_run_finished(waiting.run_id, WAIT_S).status == "completed"
    finally:
        again.close(grace=2)


def test_ready_tasks_of_higher_priority_runs_get_a_free_worker_first(
    tmp_path: Path, turnstile: Turnstile, registry: HandlerRegistry
) -> None:
    """With every worker busy, the job of the higher-priority run starts before an older
    job of a lower-priority run."""
    engine = Engine(
        SQLiteEventStore(str(tmp_path / "pool.db")), handlers=registry, workers=1, owns_store=True
    )
    try:
        engine.register_workflow(
            {"id": "blocker", "tasks": [{"id": "t", "handler": "turn", "inputs": {"n": 0}}]}
        )
        engine.register_workflow({"id": "quick", "tasks": [{"id": "t", "handler": "noop"}]})
        blocker = engine.start_run("blocker")
        assert turnstile.next_entered() == 0
        low = engine.start_run("quick", priority=-1)
        high = engine.start_run("quick", priority=10)
        # Their actors start on dispatcher threads: both jobs must wait for the worker first.
        assert wait_until(lambda: engine.pool.queue_depth() == 2)
        turnstile.let_go(0)
        for h in (blocker, low, high):
            assert engine.wait_run_finished(h.run_id, WAIT_S).status == "completed"
        started = [r.run_id for r in engine.store.read_log(after=0) if r.name == "TaskStarted"]
        assert started == [blocker.run_id, high.run_id, low.run_id]
    finally:
        engine.close(grace=2)


def test_a_bad_limit_is_refused_and_nothing_is_stored(engine: Engine) -> None:
    """A limit of 0 is a located validation error; no workflow is registered."""
    with pytest.raises(ValidationError) as caught:
        engine.register_workflow(limited(0))
    assert [e.path for e in caught.value.errors] == ["$.concurrency.limit"]
    with pytest.raises(ValidationError):
        engine.register_workflow(limited(1, key="$.customer"))
    assert engine.store.list_workflows() == []


def test_a_priority_out_of_range_is_refused(engine: Engine) -> None:
    """A priority beyond a million either way, or not a whole number, stores nothing."""
    engine.register_workflow(limited(1))
    for bad in (10**7, -(10**7), True, 1.5):
        with pytest.raises(ValidationError):
            engine.start_run("limited", parameters={"n": 0}, priority=bad)  # type: ignore[arg-type]
    assert engine.store.list_runs().runs == []


def test_the_job_queue_serves_higher_priorities_first_then_in_order() -> None:
    """Jobs leave by priority, highest first, and in arrival order within a priority."""
    jobs = JobQueue()

    def job(name: str, priority: int) -> Job:
        return Job("r", name, 1, "noop", {}, None, priority=priority)

    for name, priority in [("a", 0), ("b", 3), ("c", 0), ("d", -2), ("e", 3)]:
        jobs.append(job(name, priority))
    assert len(jobs) == 5
    assert [j.task_id for j in jobs] == ["b", "e", "a", "c", "d"]
    assert [jobs.popleft().task_id for _ in range(5)] == ["b", "e", "a", "c", "d"]
    with pytest.raises(IndexError):
        jobs.popleft()


def _documented_workflow() -> dict[str, Any]:
    """The example of docs/concepts.md, "Concurrency and priority", as written."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "concepts.md").read_text()
    section = text[text.index("## Concurrency and priority") :]
    start = section.index("```json") + len("```json")
    document: dict[str, Any] = json.loads(section[start : section.index("```\n", start)])
    return document


def test_the_documented_example_queues_per_customer_and_by_priority(
    tmp_path: Path, turnstile: Turnstile, registry: HandlerRegistry
) -> None:
    """The docs' workflow: a second acme import waits while another customer's starts; a
    later acme import with priority 10 begins before the one queued earlier."""
    engine = Engine(
        SQLiteEventStore(str(tmp_path / "docs.db")), handlers=registry, workers=1, owns_store=True
    )
    try:
        engine.register_workflow(
            {"id": "blocker", "tasks": [{"id": "t", "handler": "turn", "inputs": {"n": 0}}]}
        )
        engine.register_workflow(_documented_workflow())
        blocker = engine.start_run("blocker")  # holds the only worker: imports stay under way
        assert turnstile.next_entered() == 0
        acme = [
            engine.start_run("customer-import", parameters={"customer": "acme"}, priority=p)
            for p in (0, 0, 10)
        ]
        bolt = engine.start_run("customer-import", parameters={"customer": "bolt"})
        assert [h.state.status for h in acme] == ["running", "queued", "queued"]
        assert bolt.state.status == "running"
        turnstile.let_go(0)
        for h in [blocker, bolt, *acme]:
            assert engine.wait_run_finished(h.run_id, WAIT_S).status == "completed"
        dequeued = [r.run_id for r in engine.store.read_log(after=0) if r.name == "RunDequeued"]
        assert dequeued == [acme[2].run_id, acme[1].run_id]
    finally:
        engine.close(grace=2)
