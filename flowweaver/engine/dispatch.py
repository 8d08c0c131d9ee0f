"""Pykka actors that share a few threads instead of owning one each.

A :class:`pykka.ThreadingActor` owns a thread for its whole life. A run actor lives as long as
its run, sleeps almost all of that time, and there is one per live run: 500 runs submitted
together were 500 threads, each started, switched to and torn down, and starting and ending
them took about a seventh of W3's time under the GIL (docs/benchmarks.md). A
:class:`PooledActor` is a pykka actor all the same (an ``ActorRef`` to ``tell``, ``ask`` and
``stop``, the ``on_start``/``on_receive``/``on_failure``/``on_stop`` hooks, the registry), but
its messages are handled in *turns* on the threads of a :class:`Dispatcher`:

- a message put in an idle actor's inbox queues the actor on the dispatcher; a thread takes
  it, runs ``on_start`` on its first turn, then handles messages one after another;
- one actor is on at most one thread at a time, so it still handles one message at a time,
  in order, and needs no lock of its own;
- a turn ends when the inbox is empty, or after :data:`TURN_MESSAGES` messages, when the
  actor queues itself behind the others (no actor holds a thread while others wait).

A handler may block (an append waits for its transaction), holding its thread meanwhile: the
dispatcher needs as many threads as blocking turns should overlap, and no actor may wait for
another one's turn (a run actor never does: what it asks of others goes through mailboxes,
the worker pool's ``tell`` and the engine's own threads).

A thread that hands an actor its next message and then has nothing to do may take that
actor's turn itself (:func:`turn_here`): a task worker that reports an outcome runs its run's
turn, and that of the run it was offered to next, before it waits for its next job. Each
hand-off between threads is a context switch and a pass of the GIL, about 30 µs of CPU time
on the 2-core benchmark machine (docs/benchmarks.md); this saves one or two per task. The
guard is the same: an actor is on one thread at a time, whichever it is.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import structlog
from pykka import ActorRegistry

log = structlog.get_logger("flowweaver.engine")

DEFAULT_ACTOR_THREADS = 16
"""Threads an engine's run actors share (``Engine(actor_threads=...)``)."""

TURN_MESSAGES = 32
"""Messages an actor handles in one turn before it lets the actors queued behind it go."""

HELD_TURNS = 2
"""Turns a :func:`turn_here` block keeps for its thread: a worker's report readies its run, and
its offer to the next queued job readies that job's run, whose turn hands the job to it."""

_counter = itertools.count(1)
_here = threading.local()  # .held: the actors whose turns this thread takes (None: not holding)


class Dispatcher:
    """Threads that run :class:`PooledActor` turns, in the order the actors became ready."""

    def __init__(self, threads: int, name: str = "RunActor") -> None:
        if threads < 1:
            raise ValueError("a dispatcher needs at least one thread")
        self._ready: queue.SimpleQueue[PooledActor | None] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{n}", daemon=True)
            for n in range(1, threads + 1)
        ]
        for thread in self._threads:
            thread.start()

    def ready(self, actor: PooledActor) -> None:
        """Queue ``actor`` for a turn (its inbox holds a message, or it has yet to start);
        inside :func:`turn_here`, keep the first ones for this thread instead."""
        held = getattr(_here, "held", None)
        if held is not None and len(held) < HELD_TURNS:
            held.append(actor)
            return
        self._ready.put(actor)

    def close(self, timeout: float = 10.0) -> None:
        """Let every thread finish the turn it is in, then end them (actors left get no turn).

        Called once the actors are stopped (the engine stops them first).
        """
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._ready.put(None)
        current = threading.current_thread()
        deadline = time.monotonic() + timeout  # one wait for all: a stuck turn holds no more
        for thread in self._threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            actor = self._ready.get()
            if actor is None:
                return
            _run_turn(actor)


@contextlib.contextmanager
def turn_here() -> Iterator[None]:
    """Run on this thread, as the block ends, the turns of the first actors made ready in it.

    For a thread that readies actors and then would only wait (a task worker reporting an
    outcome and offering itself for the next job): their turns run here, in the order they
    became ready, instead of waking dispatcher threads. Past HELD_TURNS, actors are queued
    as usual; so are the held ones if the block raises.
    """
    held: list[PooledActor] = []
    outer = getattr(_here, "held", None)  # a block this one is nested in keeps its own
    _here.held = held
    try:
        yield
    except BaseException:
        _here.held = outer
        for actor in held:
            actor.dispatcher.ready(actor)
        raise
    _here.held = outer
    for actor in held:
        _run_turn(actor)


def _run_turn(actor: PooledActor) -> None:
    try:
        actor._turn()
    except Exception:  # a bug must not take this thread, every actor's, with it
        log.exception("dispatcher_turn_failed", actor=str(actor))


class _TurnInbox:
    """A pooled actor's inbox: putting a message in an idle actor's queues it for a turn."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._actor: PooledActor | None = None
        self._queued = True  # until the actor starts: its first turn is queued by start()

    def bind(self, actor: PooledActor) -> None:
        self._actor = actor

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            self._items.append(envelope)
            if self._queued:
                return
            self._queued = True
        assert self._actor is not None
        self._actor.dispatcher.ready(self._actor)

    def get(self) -> Any:
        """Take the oldest message (the actor's own turn, or its teardown, asks)."""
        with self._lock:
            return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def take_or_idle(self) -> Any:
        """Take the oldest message, or, when there is none, mark the actor idle."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._queued = False
            return None


class PooledActor(pykka.Actor):
    """A pykka actor whose messages are handled in turns on a :class:`Dispatcher`."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        super().__init__()
        self.dispatcher = dispatcher
        self._inbox: _TurnInbox = self.actor_inbox  # type: ignore[assignment]
        self._inbox.bind(self)
        self._began = False
        self._name = f"{type(self).__name__}-{next(_counter)}"

    def __str__(self) -> str:
        return f"{self._name} ({self.actor_urn})"

    @staticmethod
    def _create_actor_inbox() -> Any:
        return _TurnInbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.dispatcher.ready(self)  # the first turn runs on_start

    def _turn(self) -> None:
        """Run on a dispatcher thread: start if need be, then handle queued messages."""
        if not self._began:
            self._began = True
            self._actor_loop_setup()  # on_start; a failure there stops the actor
        for _ in range(TURN_MESSAGES):
            if self.actor_stopped.is_set():
                self._actor_loop_teardown()  # asks left unanswered hear ActorDeadError
                return
            envelope = self._inbox.take_or_idle()
            if envelope is None:
                return  # idle: the next message queues a turn
            self._handle(envelope)
        if self.actor_stopped.is_set():
            self._actor_loop_teardown()
            return
        self.dispatcher.ready(self)  # still queued: behind the actors that waited meanwhile

    def _handle(self, envelope: Any) -> None:
        # What a ThreadingActor's loop does with each message, for one message.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:  # noqa: BLE001 - to the asker, else the actor's failure hooks
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001 - logged, as pykka does
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            log.error("pooled_actor_interrupted", actor=str(self), exc_info=True)
            self._stop()
            ActorRegistry.stop_all(block=False)  # blocking would wait on this very thread


__all__ = ["DEFAULT_ACTOR_THREADS", "HELD_TURNS", "Dispatcher", "PooledActor", "turn_here"]
