"""A run's mailbox: its inputs, kept outside the actor so none is lost when the actor dies.

Workers, timers and callers put inputs; the run actor takes them all at each wake-up. One
DRAIN message per batch wakes the actor; the supervisor hands the same mailbox to the next
actor when one dies, and closes it when the run ends or is given up here.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import pykka

from flowweaver.engine.messages import (
    DRAIN,
    CancelRequest,
    Completed,
    Failed,
    Offer,
    OperatorCommand,
    RunInput,
)


class Mailbox:
    """A run's inputs, waiting for its actor; one DRAIN message per batch wakes the actor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[RunInput] = deque()
        self._ref: pykka.ActorRef[Any] | None = None
        self._owner: pykka.ActorRef[Any] | None = None
        self._kicked = False
        self._closed = False

    def bind(self, ref: pykka.ActorRef[Any]) -> bool:
        """Make ``ref`` the actor that closing the mailbox stops; False if already closed.

        A run actor binds first thing as it starts, before it dispatches anything, so that
        whoever closes the mailbox (leases lost, engine closing) stops it even if the
        supervisor has not yet recorded its ref.
        """
        with self._lock:
            if self._closed:
                return False
            self._owner = ref
            return True

    def attach(self, ref: pykka.ActorRef[Any]) -> None:
        """Hand the mailbox to a (new) actor and wake it if inputs are waiting."""
        with self._lock:
            self._ref = ref
            self._kicked = False
        self.kick()

    def put(self, item: RunInput) -> bool:
        """Queue an input; False when the run has ended (the caller must refuse it)."""
        with self._lock:
            if self._closed:
                return False
            self._items.append(item)
        self.kick()
        return True

    def kick(self) -> None:
        """Wake the actor unless a wake-up is already on its way."""
        with self._lock:
            if self._kicked or self._ref is None or not self._items:
                return
            self._kicked = True
            ref = self._ref
        try:
            ref.tell(DRAIN)
        except pykka.ActorDeadError:
            with self._lock:
                self._kicked = False  # the engine attaches a new actor and kicks again

    def outcomes(self) -> list[tuple[str, int]]:
        """Return (task id, attempt) of every worker outcome queued, without taking them."""
        with self._lock:
            return [
                (item.task_id, item.attempt)
                for item in self._items
                if isinstance(item, Completed | Failed)
            ]

    def take(self) -> list[RunInput]:
        """Remove and return everything queued."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._kicked = False
        return items

    @property
    def closed(self) -> bool:
        """Say whether the run ended here (or was given up) and refuses inputs."""
        return self._closed

    def close(self) -> list[RunInput]:
        """Refuse further inputs, stop the bound actor, and return the inputs still queued."""
        with self._lock:
            self._closed = True
            items = list(self._items)
            self._items.clear()
            owner, self._owner = self._owner, None
        if owner is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                owner.stop(block=False)
        return items


def refuse(items: Sequence[RunInput]) -> None:
    """Answer inputs that a finished run will never handle (offered workers go back)."""
    for item in items:
        if isinstance(item, CancelRequest):
            item.reply.set(False)
        elif isinstance(item, OperatorCommand):
            item.reply.set(None)
        elif isinstance(item, Offer):
            item.decline()
