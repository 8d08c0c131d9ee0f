"""A run's mailbox on its own: queueing, one wake-up per batch, closing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from flowweaver.engine.mailbox import Mailbox, refuse
from flowweaver.engine.messages import DRAIN, CancelRequest, Offer, RetryDue
from flowweaver.engine.pool import Job, Reservation


class Pool:
    """Records what becomes of offered workers, as the worker pool would act on it."""

    def __init__(self) -> None:
        self.assigned: list[str] = []
        self.declined: list[str] = []

    def assign(self, reservation: Reservation, job: Job) -> None:
        self.assigned.append(job.task_id)

    def decline(self, reservation: Reservation, job: Job) -> None:
        self.declined.append(job.task_id)


def offer(pool: Pool, task_id: str = "t") -> Offer:
    """An offer of worker w1 for the first attempt of ``task_id``."""
    job = Job("r", task_id, 1, "noop", {}, None)
    return Offer(job, Reservation(worker=None, name="w1"), pool)  # type: ignore[arg-type]


class Counter(pykka.ThreadingActor):
    """Counts DRAIN messages and takes the mailbox on each, like a run actor."""

    def __init__(self, mailbox: Mailbox, gate: threading.Event) -> None:
        super().__init__()
        self.mailbox = mailbox
        self.gate = gate
        self.drains = 0
        self.taken: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message is DRAIN:
            self.gate.wait(5)
            self.drains += 1
            self.taken.extend(self.mailbox.take())
        return (self.drains, list(self.taken))


@pytest.fixture
def mailbox() -> Mailbox:
    """An empty mailbox."""
    return Mailbox()


@pytest.fixture
def actor(mailbox: Mailbox) -> Iterator[tuple[pykka.ActorRef[Any], threading.Event]]:
    """A counting actor attached to the mailbox, held at its gate until the test opens it."""
    gate = threading.Event()
    ref = Counter.start(mailbox, gate)
    yield ref, gate
    gate.set()
    ref.stop()


def test_inputs_wait_for_an_actor_then_wake_it_once(
    mailbox: Mailbox, actor: tuple[pykka.ActorRef[Any], threading.Event]
) -> None:
    """Inputs put before attach are kept; attach wakes the actor, which takes them all."""
    ref, gate = actor
    assert mailbox.put(RetryDue("t", 1))
    assert mailbox.put(RetryDue("t", 2))
    mailbox.attach(ref)
    mailbox.put(RetryDue("u", 1))  # a wake-up is already on its way: no second one
    gate.set()
    drains, taken = ref.ask("count")
    assert drains == 1
    assert taken == [RetryDue("t", 1), RetryDue("t", 2), RetryDue("u", 1)]


def test_an_input_after_a_take_wakes_the_actor_again(
    mailbox: Mailbox, actor: tuple[pykka.ActorRef[Any], threading.Event]
) -> None:
    """Once the actor has taken the batch, the next input sends a new wake-up."""
    ref, gate = actor
    gate.set()
    mailbox.attach(ref)
    mailbox.put(RetryDue("t", 1))
    assert ref.ask("count")[0] == 1
    mailbox.put(RetryDue("t", 2))
    drains, taken = ref.ask("count")
    assert drains == 2
    assert taken == [RetryDue("t", 1), RetryDue("t", 2)]


def test_close_refuses_inputs_returns_the_queued_ones_and_stops_the_bound_actor(
    mailbox: Mailbox, actor: tuple[pykka.ActorRef[Any], threading.Event]
) -> None:
    """A closed mailbox refuses inputs, hands back what waited, and stops its owner."""
    ref, gate = actor
    assert mailbox.bind(ref)
    pool = Pool()
    mailbox.put(offer(pool))
    gate.set()
    left = mailbox.close()
    assert mailbox.closed
    assert not mailbox.put(RetryDue("t", 1))
    assert not mailbox.bind(ref)
    refuse(left)
    assert pool.declined == ["t"]
    ref.actor_stopped.wait(5)
    assert not ref.is_alive()


def test_refuse_answers_requests_and_ignores_the_rest() -> None:
    """Refused cancel requests get False and offered workers go back; other inputs need no
    answer."""
    pool = Pool()
    cancel: pykka.Future[bool] = pykka.ThreadingFuture()
    refuse([offer(pool), CancelRequest("why", cancel), RetryDue("t", 1)])
    assert pool.declined == ["t"]
    assert cancel.get(timeout=1) is False


def test_an_offer_is_answered_once() -> None:
    """The first answer to an offer counts; later ones change nothing."""
    pool = Pool()
    given = offer(pool)
    assert not given.answered
    given.decline()
    given.accept()
    given.decline()
    assert given.answered
    assert pool.declined == ["t"] and pool.assigned == []
