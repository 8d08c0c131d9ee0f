"""What reaches a run actor's mailbox: requests from workers, timers and callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pykka import Future

from flowweaver.domain.events import ErrorInfo


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A worker asks to begin an attempt; ``reply`` gets True once TaskStarted is stored."""

    task_id: str
    attempt: int
    worker: str
    reply: Future[bool]


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
