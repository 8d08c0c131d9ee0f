"""What reaches a run actor's mailbox: offers and outcomes from workers, timers, callers."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pykka import Future

from flowweaver.domain.events import ErrorInfo, LogLine

if TYPE_CHECKING:  # the pool sends these messages; it imports this module
    from flowweaver.domain.run import RunState
    from flowweaver.engine.operator import OperatorAction
    from flowweaver.engine.pool import Job, Reservation, WorkerPool
    from flowweaver.errors import FlowweaverError


class Offer:
    """A free worker offered to the run for one of its queued jobs.

    The run actor records TaskStarted for ``job`` with this worker's name in its next append
    and hands the job over (:meth:`accept`), or gives the worker back (:meth:`decline`): the
    attempt is stale or cancelled, the append failed, the run ended or is not live here.
    Only the first of them counts: an actor that dies after answering leaves its inputs to
    the next one, which skips an offer already answered.
    """

    __slots__ = ("_answer", "_pool", "job", "reservation")

    def __init__(self, job: Job, reservation: Reservation, pool: WorkerPool) -> None:
        self.job = job
        self.reservation = reservation
        self._pool = pool
        self._answer = threading.Lock()  # taken by the one answer that counts

    @property
    def answered(self) -> bool:
        """Say whether the offer was accepted or declined."""
        return self._answer.locked()

    @property
    def task_id(self) -> str:
        """Return the task of the offered job."""
        return self.job.task_id

    @property
    def attempt(self) -> int:
        """Return the attempt of the offered job."""
        return self.job.attempt

    @property
    def worker(self) -> str:
        """Return the name of the offered worker (recorded in TaskStarted)."""
        return self.reservation.name

    def accept(self) -> None:
        """Hand the job to the worker: its TaskStarted is stored."""
        if self._answer.acquire(blocking=False):
            self._pool.assign(self.reservation, self.job)

    def decline(self) -> None:
        """Give the worker back without running the job (it is offered for the next one)."""
        if self._answer.acquire(blocking=False):
            self._pool.decline(self.reservation, self.job)

    def __repr__(self) -> str:
        return f"Offer({self.job.run_id}, {self.task_id}, {self.attempt}, {self.worker})"


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned ``result``."""

    task_id: str
    attempt: int
    result: Any
    duration_ms: float
    logs: tuple[LogLine, ...] = ()
    """What the handler logged through ``context.log`` in this attempt (bounded)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler raised or timed out."""

    task_id: str
    attempt: int
    error: ErrorInfo
    logs: tuple[LogLine, ...] = ()
    """What the handler logged through ``context.log`` in this attempt (bounded)."""


@dataclass(frozen=True, slots=True)
class RetryDue:
    """The delay after a failed attempt has passed."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class WaitExpired:
    """The timeout of a ``wait`` task's attempt has passed (domain/signals.py)."""

    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Someone asked to cancel the run; ``reply`` gets True once it is recorded."""

    reason: str
    reply: Future[bool]


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    """An operator's action (engine/operator.py), decided by the run actor in its drain.

    ``reply`` gets the run's state once the events are stored, the domain error when the
    state does not allow the action (nothing stored), or None when no actor here takes it
    (the run ended meanwhile, or another node owns it).
    """

    action: OperatorAction
    reply: Future[RunState | FlowweaverError | None]


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """The child run of a sub-workflow task's attempt is stored (engine/children.py)."""

    task_id: str
    attempt: int
    child_run_id: str
    workflow_id: str
    workflow_version: int


RunInput = (
    Offer
    | Completed
    | Failed
    | RetryDue
    | WaitExpired
    | CancelRequest
    | OperatorCommand
    | ChildStarted
)


class Drain:
    """The pykka message that tells a run actor its mailbox has something."""


DRAIN = Drain()


class RetryAppend:
    """The pykka message a run actor's backoff timer sends: try the failed append again."""


RETRY_APPEND = RetryAppend()
