"""The worker pool on its own, with a recording router instead of run actors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowweaver.engine.messages import Completed, Failed, Offer
from flowweaver.engine.pool import Job, WorkerPool
from flowweaver.engine.timers import Timers
from flowweaver.handlers import HandlerRegistry, builtin_registry


class Router:
    """Takes or declines offered workers, as a run actor would, and records what the
    workers tell the runs."""

    def __init__(self) -> None:
        self.grant = True
        self.live: set[str] | None = None  # runs with an actor; None: every run
        self.starts: list[tuple[str, str]] = []
        self.outcomes: list[Completed | Failed] = []
        self.given_back: list[str] = []
        self.changed = threading.Condition()

    def offer(self, offer: Offer) -> bool:
        if self.live is not None and offer.job.run_id not in self.live:
            return False
        with self.changed:
            self.starts.append((offer.task_id, offer.worker))
        if self.grant:  # a run actor would store TaskStarted first
            offer.accept()
        else:
            offer.decline()
            with self.changed:
                self.given_back.append(offer.task_id)
                self.changed.notify_all()
        return True

    def report(self, job: Job, outcome: Completed | Failed) -> None:
        with self.changed:
            self.outcomes.append(outcome)
            self.changed.notify_all()

    def wait(self, what: str, count: int) -> list[Any]:
        """Block until ``what`` has ``count`` entries; return them."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(getattr(self, what)) >= count, 5)
            return list(getattr(self, what))


@pytest.fixture
def router() -> Router:
    """A router that grants every start."""
    return Router()


@pytest.fixture
def registry() -> HandlerRegistry:
    """Built-in handlers and a gate the test opens."""
    return builtin_registry()


@pytest.fixture
def make_pool(router: Router, registry: HandlerRegistry) -> Iterator[Any]:
    """Build pools of N workers; closed (with their timers and loop) after the test."""
    made: list[tuple[WorkerPool, Timers]] = []
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    def make(size: int = 2) -> WorkerPool:
        timers = Timers(name="pool-timers")
        pool = WorkerPool(size, registry, router, timers, lambda: loop, node="n")
        made.append((pool, timers))
        return pool

    yield make
    for pool, timers in made:
        pool.close(grace=1)
        timers.close()
    loop.call_soon_threadsafe(loop.stop)
    loop_thread.join(5)
    loop.close()


def job(task_id: str, handler: str = "echo", timeout: float | None = None, **inputs: Any) -> Job:
    """A first attempt of ``task_id`` in run ``r``."""
    return Job("r", task_id, 1, handler, dict(inputs), timeout)


def test_a_queued_job_is_offered_to_its_run_runs_and_reports_its_result(
    make_pool: Any, router: Router
) -> None:
    """A submitted job is offered with a worker, runs the handler once taken, reports, and
    leaves in-flight."""
    pool = make_pool()
    pool.submit(job("t", x=1))
    (outcome,) = router.wait("outcomes", 1)
    assert isinstance(outcome, Completed) and outcome.result == {"x": 1}
    assert router.starts[0][0] == "t" and router.starts[0][1].startswith("n/w")
    for _ in range(100):
        if not pool.inflight("r"):
            break
        threading.Event().wait(0.01)
    assert pool.inflight("r") == []


def test_a_declined_offer_gives_the_job_back_without_running_it(
    make_pool: Any, router: Router
) -> None:
    """When the run declines the offer, the handler never runs and the job is dropped."""
    router.grant = False
    pool = make_pool()
    pool.submit(job("t"))
    assert router.wait("given_back", 1) == ["t"]
    assert router.outcomes == []


def test_the_same_attempt_is_queued_once(make_pool: Any, router: Router) -> None:
    """Submitting an attempt already in flight does nothing."""
    pool = make_pool(size=1)
    gate = threading.Event()
    pool.registry.register("gate", lambda inputs: gate.wait(5))
    pool.submit(job("g", "gate"))
    pool.submit(job("g", "gate"))
    assert pool.inflight("r") == [("g", 1)]
    gate.set()
    router.wait("outcomes", 1)
    assert len(router.starts) == 1


def test_jobs_wait_in_the_queue_while_every_worker_is_busy(make_pool: Any, router: Router) -> None:
    """With one worker busy, the next job waits queued, then runs."""
    pool = make_pool(size=1)
    gate = threading.Event()
    pool.registry.register("gate", lambda inputs: gate.wait(5))
    pool.submit(job("g", "gate"))
    pool.submit(job("next"))
    assert pool.queue_depth() == 1 and pool.busy() == 2
    assert pool.reserve() is None
    gate.set()
    outcomes = router.wait("outcomes", 2)
    assert [o.task_id for o in outcomes] == ["g", "next"]


def test_a_stuck_handler_times_out_and_a_fresh_worker_takes_the_next_job(
    make_pool: Any, router: Router
) -> None:
    """The watchdog fails a stuck attempt with Timeout and replaces its worker."""
    pool = make_pool(size=1)
    gate = threading.Event()
    pool.registry.register("stuck", lambda inputs: gate.wait(10))
    pool.submit(job("s", "stuck", timeout=0.1))
    pool.submit(job("after"))
    outcomes = router.wait("outcomes", 2)
    gate.set()
    by_task = {o.task_id: o for o in outcomes}
    assert isinstance(by_task["s"], Failed) and by_task["s"].error.type == "Timeout"
    assert isinstance(by_task["after"], Completed)


def test_a_reserved_worker_runs_its_job_without_asking(make_pool: Any, router: Router) -> None:
    """A job assigned to a reserved worker runs at once, with no offer."""
    pool = make_pool(size=1)
    reservation = pool.reserve()
    assert reservation is not None and pool.reserve() is None
    pool.assign(reservation, job("t", y=2))
    (outcome,) = router.wait("outcomes", 1)
    assert isinstance(outcome, Completed)
    assert router.starts == []


def test_a_job_whose_run_is_not_live_is_dropped_and_the_worker_offered_for_the_next(
    make_pool: Any, router: Router
) -> None:
    """A queued job whose run has no actor here is forgotten; the free worker goes on to the
    next queued job."""
    router.live = {"r"}
    pool = make_pool(size=1)
    gate = threading.Event()
    pool.registry.register("gate", lambda inputs: gate.wait(5))
    pool.submit(job("g", "gate"))
    pool.submit(Job("gone", "x", 1, "noop", {}, None))
    pool.submit(job("next"))
    assert pool.queue_depth() == 2
    gate.set()
    outcomes = router.wait("outcomes", 2)
    assert [o.task_id for o in outcomes] == ["g", "next"]
    assert [task for task, _ in router.starts] == ["g", "next"]
    assert pool.inflight("gone") == []


def test_close_drops_queued_jobs_and_waits_for_running_ones(make_pool: Any, router: Router) -> None:
    """close(grace) lets the running handler finish and forgets jobs still queued."""
    pool = make_pool(size=1)
    entered, gate = threading.Event(), threading.Event()
    pool.registry.register("gate", lambda inputs: (entered.set(), gate.wait(5)) and "done")
    pool.submit(job("g", "gate"))
    pool.submit(job("queued"))
    assert entered.wait(5)
    threading.Timer(0.05, gate.set).start()
    pool.close(grace=5)
    assert [o.task_id for o in router.wait("outcomes", 1)] == ["g"]
    assert pool.inflight("r") == []


def test_a_free_worker_goes_to_the_queued_job_of_the_highest_run_priority(
    make_pool: Any, router: Router
) -> None:
    """Queued jobs are offered by their run's priority, higher first, then in order."""
    pool = make_pool(size=1)
    gate = threading.Event()
    pool.registry.register("gate", lambda inputs: gate.wait(5))
    pool.submit(job("g", "gate"))
    for task_id, priority in [("low", -1), ("plain", 0), ("high", 7), ("plain2", 0)]:
        pool.submit(Job("r", task_id, 1, "noop", {}, None, priority=priority))
    assert pool.queue_depth() == 4
    gate.set()
    outcomes = router.wait("outcomes", 5)
    assert [o.task_id for o in outcomes] == ["g", "high", "plain", "plain2", "low"]


def test_a_replacement_started_while_the_pool_closes_does_not_outlive_it(make_pool: Any) -> None:
    """A timed-out worker's replacement starts on the timer thread; if close() ran meanwhile
    (it did not see the new worker), the new worker stops by itself instead of living on."""
    pool = make_pool(size=1)
    pool.close(grace=1)
    ref = pool._spawn()  # what replace() does after its check, had close() slipped in between
    ref.actor_stopped.wait(5)
    assert not ref.is_alive()


class LendingRouter(Router):
    """At each report (on the worker's thread, as the run's turn would), reserves a worker
    for the run's next task, and records what another thread's reserve gets meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.pool: WorkerPool | None = None
        self.reserved: list[Any] = []
        self.elsewhere: list[Any] = []

    def report(self, job: Job, outcome: Completed | Failed) -> None:
        assert self.pool is not None
        other = threading.Thread(target=lambda: self.elsewhere.append(self.pool.reserve()))  # type: ignore[union-attr]
        other.start()
        other.join(5)
        self.reserved.append(self.pool.reserve())
        super().report(job, outcome)


@pytest.mark.timeout(30)
def test_a_worker_that_reports_is_lent_to_the_turns_on_its_own_thread(
    registry: HandlerRegistry,
) -> None:
    """The run that hears an outcome may reserve the worker that reported it (no job waits):
    another thread cannot take it meanwhile, and a worker not taken goes on to the queue."""
    router = LendingRouter()
    timers = Timers(name="pool-timers")
    pool = WorkerPool(1, registry, router, timers, lambda: None, node="n")  # type: ignore[arg-type,return-value]
    router.pool = pool
    try:
        pool.submit(job("a", x=1))
        router.wait("outcomes", 1)
        (lent,) = router.reserved
        assert lent is not None and lent.name == "n/w1"  # the reporting worker, lent to its run
        assert router.elsewhere == [None]  # not to a run started on another thread
        pool.assign(lent, job("b", x=2))
        router.wait("outcomes", 2)
        assert router.reserved[1] is not None  # lent again, for the run's next task
        pool.unreserve(router.reserved[1])  # the run has no next task: it gives it back
        assert pool.idle() == 1
        # With a job queued, the queue comes first: the worker is offered to it instead.
        gate = threading.Event()
        registry.register("gate", lambda inputs: gate.wait(5))
        pool.submit(job("g", "gate"))
        pool.submit(job("c", x=3))
        gate.set()
        outcomes = router.wait("outcomes", 4)
        assert router.reserved[2] is None  # g's report found c waiting
        assert [o.task_id for o in outcomes[2:]] == ["g", "c"]
        pool.unreserve(router.reserved[3])
    finally:
        pool.close(grace=1)
        timers.close()
