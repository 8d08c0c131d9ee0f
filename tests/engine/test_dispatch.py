"""Pooled pykka actors: turns on a few shared threads, with a ThreadingActor's guarantees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from flowweaver.engine.dispatch import (
    HELD_TURNS,
    TURN_MESSAGES,
    Dispatcher,
    PooledActor,
    turn_here,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    made = Dispatcher(4, name="TestDispatch")
    yield made
    pykka.ActorRegistry.stop_all()
    made.close()


class Recorder(PooledActor):
    """Keeps what it received, notes concurrent entry, and can block on a gate."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        made: list[Recorder],
        gate: threading.Event | None = None,
        journal: list[Any] | None = None,
    ) -> None:
        super().__init__(dispatcher)
        made.append(self)
        self.gate = gate
        self.journal = journal if journal is not None else []  # shared by actors, in order
        self.seen: list[Any] = []
        self.inside = 0
        self.overlaps = 0
        self.threads: set[str] = set()
        self.started_on: str | None = None
        self.failures: list[BaseException | None] = []
        self.stopped = threading.Event()
        self.entered = threading.Event()  # set as "block" starts waiting on the gate

    def on_start(self) -> None:
        self.started_on = threading.current_thread().name

    def on_receive(self, message: Any) -> Any:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.threads.add(threading.current_thread().name)
        try:
            if message == "block" and self.gate is not None:
                self.entered.set()
                self.gate.wait(10)
            if message == "boom":
                raise RuntimeError("boom")
            self.seen.append(message)
            self.journal.append(message)
            return ("echo", message)
        finally:
            self.inside -= 1

    def on_failure(self, *exc_info: Any) -> None:
        self.failures.append(exc_info[1])

    def on_stop(self) -> None:
        self.stopped.set()


def start(
    dispatcher: Dispatcher,
    gate: threading.Event | None = None,
    journal: list[Any] | None = None,
) -> tuple[pykka.ActorRef[Any], Recorder]:
    made: list[Recorder] = []
    ref = Recorder.start(dispatcher, made, gate, journal)
    return ref, made[0]


def test_messages_are_handled_in_order_one_at_a_time(dispatcher: Dispatcher) -> None:
    ref, actor = start(dispatcher)
    senders = [
        threading.Thread(target=lambda n=n: [ref.tell((n, i)) for i in range(200)])
        for n in range(4)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert ref.ask("last") == ("echo", "last")
    assert actor.overlaps == 0
    for n in range(4):
        assert [i for m, i in (x for x in actor.seen if isinstance(x, tuple)) if m == n] == list(
            range(200)
        )
    assert actor.started_on is not None and actor.started_on.startswith("TestDispatch-")
    assert actor.threads <= {t.name for t in threading.enumerate()}


def test_many_actors_share_the_dispatchers_threads(dispatcher: Dispatcher) -> None:
    before = threading.active_count()
    started = [start(dispatcher) for _ in range(200)]
    answers = [ref.ask("hi", block=False) for ref, _ in started]
    assert [a.get(timeout=10) for a in answers] == [("echo", "hi")] * 200
    assert threading.active_count() == before  # no thread per actor
    names = set().union(*(actor.threads for _, actor in started))
    assert names <= {f"TestDispatch-{n}" for n in range(1, 5)}


def test_a_blocked_actor_holds_one_thread_and_others_go_on(dispatcher: Dispatcher) -> None:
    gate = threading.Event()
    blocked, _ = start(dispatcher, gate)
    blocked.tell("block")
    others = [start(dispatcher)[0] for _ in range(20)]
    assert [ref.ask("x", timeout=10) for ref in others] == [("echo", "x")] * 20
    late = blocked.ask("after", block=False)
    with pytest.raises(pykka.Timeout):
        late.get(timeout=0.05)  # queued behind the blocked message: order holds
    gate.set()
    assert late.get(timeout=10) == ("echo", "after")


def test_a_busy_actor_lets_the_others_have_a_turn() -> None:
    """After TURN_MESSAGES messages an actor queues behind the actors that waited."""
    single = Dispatcher(1, name="TestSingle")
    try:
        gate = threading.Event()
        journal: list[Any] = []
        busy, busy_actor = start(single, gate, journal)
        busy.tell("block")  # holds the only thread while its inbox fills
        for i in range(TURN_MESSAGES * 3):
            busy.tell(i)
        other, _ = start(single, None, journal)
        answer = other.ask("hello", block=False)
        gate.set()
        assert answer.get(timeout=10) == ("echo", "hello")
        assert busy.ask("done", timeout=10) == ("echo", "done")
        # one turn of the busy actor ("block" and what followed), then the other's turn
        assert journal.index("hello") == TURN_MESSAGES
        assert busy_actor.seen == ["block", *range(TURN_MESSAGES * 3), "done"]
    finally:
        pykka.ActorRegistry.stop_all()
        single.close()


def test_a_failure_reaches_the_asker_or_the_failure_hook(dispatcher: Dispatcher) -> None:
    asked, _ = start(dispatcher)
    with pytest.raises(RuntimeError, match="boom"):
        asked.ask("boom", timeout=10)
    assert asked.is_alive()  # an ask's failure is the asker's, as with a ThreadingActor
    told, actor = start(dispatcher)
    told.tell("boom")
    assert told.actor_stopped.wait(10)
    assert [type(e) for e in actor.failures] == [RuntimeError]


def test_stop_answers_what_was_left_with_actor_dead(dispatcher: Dispatcher) -> None:
    gate = threading.Event()
    ref, actor = start(dispatcher, gate)
    ref.tell("block")
    stopping = ref.stop(block=False)
    left = ref.ask("never", block=False)
    gate.set()
    stopping.get(timeout=10)
    assert actor.stopped.is_set()
    with pytest.raises(pykka.ActorDeadError):
        left.get(timeout=10)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")


def test_close_ends_the_threads() -> None:
    made = Dispatcher(3, name="TestClose")
    ref, _ = start(made)
    assert ref.ask("x", timeout=10) == ("echo", "x")
    ref.stop()
    made.close()
    assert not any(t.name.startswith("TestClose-") for t in threading.enumerate())
    with pytest.raises(ValueError, match="at least one thread"):
        Dispatcher(0)


def test_a_turn_that_raises_does_not_end_the_thread() -> None:
    """A bug inside a turn (not in a handler: those are caught per message) is logged, and
    the dispatcher's thread goes on serving the other actors."""
    single = Dispatcher(1, name="TestBroken")
    try:
        broken, actor = start(single)
        assert broken.ask("x", timeout=10) == ("echo", "x")
        raised: list[str] = []

        def fail() -> None:
            raised.append("raised")
            raise RuntimeError("a bug in the runtime")

        actor._inbox.take_or_idle = fail  # type: ignore[method-assign]
        broken.tell("y")
        healthy, _ = start(single)
        assert healthy.ask("z", timeout=10) == ("echo", "z")
        assert raised == ["raised"]
    finally:
        pykka.ActorRegistry.stop_all(block=False)
        single.close(timeout=2)
        # The broken actor never ends (its turns fail): out of the registry, so that a later
        # test's stop_all does not wait for it.
        for ref in pykka.ActorRegistry.get_all():
            if ref.actor_urn == actor.actor_urn:
                pykka.ActorRegistry.unregister(ref)


def test_turn_here_runs_the_readied_actors_turns_on_the_calling_thread(
    dispatcher: Dispatcher,
) -> None:
    """The first HELD_TURNS actors a block readies take their turns on this thread as it ends
    (a task worker after its report and its offer), in order; the next one is queued."""
    started = [start(dispatcher) for _ in range(HELD_TURNS + 1)]
    for ref, _ in started:
        assert ref.ask("warm", timeout=10) == ("echo", "warm")  # started, idle
    here = threading.current_thread().name
    journal: list[Any] = []
    for _, actor in started:
        actor.journal = journal
    with turn_here():
        for n, (ref, _) in enumerate(started):
            ref.tell(n)
        for _, actor in started[:HELD_TURNS]:
            assert actor.seen == ["warm"]  # not before the block ends
    held = [m for m in journal if m != HELD_TURNS]  # the last one's turn may come any time
    assert held == list(range(HELD_TURNS))  # their turns ran as it ended, in order
    for _, actor in started[:HELD_TURNS]:
        assert here in actor.threads
    last_ref, last = started[-1]
    assert last_ref.ask("after", timeout=10) == ("echo", "after")
    assert last.seen == ["warm", HELD_TURNS, "after"]
    assert here not in last.threads  # the dispatcher's threads took that one


def test_turn_here_queues_the_held_turn_when_the_block_raises(dispatcher: Dispatcher) -> None:
    ref, actor = start(dispatcher)
    assert ref.ask("warm", timeout=10) == ("echo", "warm")

    def report_then_fail() -> None:
        with turn_here():
            ref.tell("held")
            raise RuntimeError("worker bug")

    with pytest.raises(RuntimeError, match="worker bug"):
        report_then_fail()
    assert ref.ask("next", timeout=10) == ("echo", "next")  # the held turn was not lost
    assert actor.seen == ["warm", "held", "next"]
    assert threading.current_thread().name not in actor.threads


def test_an_actor_in_a_turn_elsewhere_is_not_run_twice(dispatcher: Dispatcher) -> None:
    """A message for an actor that is in a turn on another thread readies nothing: the
    running turn takes it, and the block ends without a turn of its own."""
    gate = threading.Event()
    ref, actor = start(dispatcher, gate)
    ref.tell("block")
    assert actor.entered.wait(10)
    with turn_here():
        ref.tell("while blocked")
    gate.set()
    assert ref.ask("last", timeout=10) == ("echo", "last")
    assert actor.overlaps == 0
    assert actor.seen == ["block", "while blocked", "last"]
    assert threading.current_thread().name not in actor.threads


def test_a_nested_turn_here_leaves_the_outer_blocks_turns_to_it(dispatcher: Dispatcher) -> None:
    """A block inside another (a run started from a thread that holds turns) runs its own
    held turns as it ends, and the outer block still holds what is readied after it."""
    (inner_ref, inner), (outer_ref, outer) = start(dispatcher), start(dispatcher)
    for ref in (inner_ref, outer_ref):
        assert ref.ask("warm", timeout=10) == ("echo", "warm")
    here = threading.current_thread().name
    with turn_here():
        with turn_here():
            inner_ref.tell("inner")
        assert inner.seen == ["warm", "inner"]  # its turn ran as the inner block ended
        outer_ref.tell("outer")
        assert outer.seen == ["warm"]  # held by the outer block, not lost to a reset
    assert outer.seen == ["warm", "outer"]
    assert here in inner.threads and here in outer.threads
