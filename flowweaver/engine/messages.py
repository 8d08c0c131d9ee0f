"""What reaches a run actor's mailbox: requests from workers, timers and callers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pykka import Future

from flowweaver.domain.events import ErrorInfo


class Reply:
    """A yes or no given once: the first :meth:`set` wins, later ones change nothing.

    A closing engine says no to every worker still waiting to start an attempt, whatever
    its run actor (perhaps stuck retrying an append) says later.
    """

    __slots__ = ("_answer", "_given", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given = threading.Event()
        self._answer = False

    def set(self, answer: bool) -> bool:
        """Give the answer unless one was given; say whether this one counts."""
        with self._lock:
            if self._given.is_set():
                return False
            self._answer = answer
            self._given.set()
            return True

    @property
    def answered(self) -> bool:
        """Say whether an answer was given."""
        return self._given.is_set()

    def wait(self, timeout: float) -> bool | None:
        """Block until answered and return the answer; None after ``timeout`` seconds."""
        if not self._given.wait(timeout):
            return None
        return self._answer


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A worker asks to begin an attempt; ``reply`` gets True once TaskStarted is stored."""

    task_id: str
    attempt: int
    worker: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned ``result``."""

    task_id: str
    attempt: int
    result: Any
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler raised or timed out."""

    task_id: str
    attempt: int
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Dropped:
    """A worker gave a job back without running it (refused, cancelled or shut down)."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RetryDue:
    """The delay after a failed attempt has passed."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Someone asked to cancel the run; ``reply`` gets True once it is recorded."""

    reason: str
    reply: Future[bool]


RunInput = StartRequest | Completed | Failed | Dropped | RetryDue | CancelRequest


class Drain:
    """The pykka message that tells a run actor its mailbox has something."""


DRAIN = Drain()
