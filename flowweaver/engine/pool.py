"""The task-worker pool: pykka actors that run handlers, and the queue of jobs waiting.

A worker runs a job only once its run actor has stored TaskStarted for it, so a crash
inside a handler is always visible in the log as an attempt that started. There is one way
to get there: a run actor that schedules a task sets an idle worker aside (:meth:`reserve`)
and records TaskStarted in that same append; when no worker is idle, the job waits in the
queue, and the next worker to come free is offered to its run (an :class:`Offer` in the
run's mailbox), whose actor records TaskStarted in its next append. Either way the actor
then hands the job over (:meth:`assign`); no thread ever waits for another. A new run's first
append starts its tasks the same way when workers are idle (``Engine._launch``), and a worker
that reports an outcome is lent to the turn that hears it (:meth:`lend`), so the run's next
task starts on it in that turn's append unless a job is queued. Sync handlers run
on the worker's own thread. When an attempt times out, the watchdog reports the failure and
the pool starts a replacement worker at once; the stuck thread is abandoned (Python cannot
kill a thread), sees its context cancelled, and exits when its handler returns. Async
handlers run on the engine's event loop and are cancelled for real on timeout.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import pykka
import structlog

from flowweaver.domain.events import TIMEOUT, ErrorInfo, LogLine
from flowweaver.engine.detail import AttemptLog, LogCapture, handler_traceback
from flowweaver.engine.dispatch import turn_here
from flowweaver.engine.messages import Completed, Failed, Offer
from flowweaver.engine.timers import Timers
from flowweaver.engine.tracing import Tracing
from flowweaver.errors import FlowweaverError, HandlerError
from flowweaver.handlers import Handler, HandlerRegistry, TaskContext
from flowweaver.observability import metrics

log = structlog.get_logger("flowweaver.pool")
_json = msgspec.json.Encoder()


@dataclass(eq=False)
class Job:
    """One attempt of one task, as handed to the pool."""

    run_id: str
    task_id: str
    attempt: int
    handler: str
    inputs: dict[str, Any]
    timeout: float | None
    priority: int = 0
    """The run's: jobs of higher-priority runs are offered free workers first."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    trace: Any = None
    """The run span's context when tracing is on (see engine/tracing.py), else None."""
    _finished: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str, int]:
        """Return (run id, task id, attempt)."""
        return (self.run_id, self.task_id, self.attempt)

    def claim_outcome(self) -> bool:
        """Return True for the first caller only: the worker or the watchdog reports."""
        with self._lock:
            if self._finished:
                return False
            self._finished = True
            return True


class JobQueue:
    """Jobs waiting for a worker: by run priority, higher first, then first in, first out.

    One deque per priority present; with every run at the default priority it is one deque.
    """

    __slots__ = ("_by_priority", "_count", "_order")

    def __init__(self) -> None:
        self._by_priority: dict[int, deque[Job]] = {}
        self._order: list[int] = []  # the priorities present, highest first
        self._count = 0

    def append(self, job: Job) -> None:
        """Queue ``job`` behind the others of its priority."""
        jobs = self._by_priority.get(job.priority)
        if jobs is None:
            jobs = self._by_priority[job.priority] = deque()
            bisect.insort(self._order, job.priority, key=lambda p: -p)
        jobs.append(job)
        self._count += 1

    def popleft(self) -> Job:
        """Take the next job.

        Raises:
            IndexError: no job waits.
        """
        if not self._order:
            raise IndexError("no job waits")
        top = self._order[0]
        jobs = self._by_priority[top]
        job = jobs.popleft()
        if not jobs:
            del self._by_priority[top]
            self._order.pop(0)
        self._count -= 1
        return job

    def clear(self) -> None:
        """Forget every job."""
        self._by_priority.clear()
        self._order.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Job]:
        for priority in self._order:
            yield from self._by_priority[priority]


@dataclass(frozen=True, eq=False)
class Reservation:
    """A worker set aside for a job whose TaskStarted goes into the run actor's next append."""

    worker: pykka.ActorRef[Any]
    name: str


@dataclass(eq=False)
class _Loan:
    """A worker lent to the turns on its own thread (:meth:`WorkerPool.lend`)."""

    worker: pykka.ActorRef[Any]
    taken: bool = False


_lending = threading.local()  # .loan: the _Loan of this thread's worker, while it lends itself


class Router(Protocol):
    """How the pool reaches run actors (the supervisor, which knows where each run lives)."""

    def offer(self, offer: Offer) -> bool:
        """Put ``offer`` in its run's mailbox; False when the run has no live actor here."""
        ...

    def report(self, job: Job, outcome: Completed | Failed) -> None:
        """Deliver the outcome of an attempt to its run."""
        ...


class _InFlight:
    """The jobs queued or running here, by (run id, task id, attempt), found by run too.

    The pool asks for a run's jobs as each run actor starts or reconciles; with hundreds of
    runs' jobs queued, scanning them all under the pool's lock held up every other thread
    that reports, submits or offers (W3).
    """

    def __init__(self) -> None:
        self._runs: dict[str, dict[tuple[str, str, int], Job]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        jobs = self._runs.get(key[0])
        return jobs is not None and key in jobs

    def add(self, job: Job) -> None:
        key = job.key
        jobs = self._runs.setdefault(key[0], {})
        if key not in jobs:
            self._count += 1
        jobs[key] = job

    def discard(self, job: Job) -> None:
        """Forget ``job``, unless another job took its key since."""
        key = job.key
        jobs = self._runs.get(key[0])
        if jobs is None or jobs.get(key) is not job:
            return
        del jobs[key]
        self._count -= 1
        if not jobs:
            del self._runs[key[0]]

    def of_run(self, run_id: str) -> list[Job]:
        return list(self._runs.get(run_id, {}).values())


class WorkerPool:
    """N TaskWorker actors and the queue of jobs waiting for one."""

    def __init__(
        self,
        size: int,
        registry: HandlerRegistry,
        router: Router,
        timers: Timers,
        loop: Callable[[], asyncio.AbstractEventLoop],
        *,
        node: str = "local",
    ) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.size = size
        self.registry = registry
        self.router = router
        self.timers = timers
        self._loop = loop
        self._node = node
        self._lock = threading.Lock()
        self._pending = JobQueue()
        self._idle: list[pykka.ActorRef[Any]] = []
        self._workers: list[pykka.ActorRef[Any]] = []
        self._names_of: dict[pykka.ActorRef[Any], str] = {}
        self._inflight = _InFlight()
        self._names = itertools.count(1)
        self._closed = False
        self.tracing: Tracing | None = None  # set by the engine when tracing is on
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> pykka.ActorRef[Any]:
        name = f"{self._node}/w{next(self._names)}"
        ref = TaskWorker.start(self, name)
        with self._lock:
            closed = self._closed
            if not closed:
                self._workers.append(ref)
                self._names_of[ref] = name
        if closed:
            # close() ran while this worker started (a timed-out worker's replacement, on the
            # timer thread): close() did not see it, so it stops here, or it would outlive
            # the pool.
            ref.stop(block=False)
            return ref
        self.worker_free(ref)
        return ref

    def submit(self, job: Job) -> None:
        """Queue ``job``; when a worker is idle, it is offered to the job's run at once."""
        with self._lock:
            if self._closed:
                return
            if job.key in self._inflight:
                return  # the same attempt is already queued or running
            self._inflight.add(job)
            self._pending.append(job)
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            self.worker_free(worker)
        else:
            metrics.queue_depth.set(len(self._pending))

    def reserve(self) -> Reservation | None:
        """Set an idle worker aside, or None when all are busy.

        A run actor that got one records TaskStarted for it in the same append as the
        scheduling, then hands it the job with :meth:`assign`: one append per task. It gives
        the worker back with :meth:`unreserve` if the append fails.

        On a worker's thread while it lends itself (:meth:`lend`), that worker comes first
        when no job waits: the run whose outcome it just reported keeps it for its next task.
        """
        loan: _Loan | None = getattr(_lending, "loan", None)
        with self._lock:
            if self._closed:
                return None
            if (
                loan is not None
                and not loan.taken
                and not self._pending
                and loan.worker in self._workers
            ):
                loan.taken = True
                return Reservation(loan.worker, self._names_of[loan.worker])
            if not self._idle:
                return None
            worker = self._idle.pop()
            return Reservation(worker, self._names_of[worker])

    @contextlib.contextmanager
    def lend(self, worker: pykka.ActorRef[Any]) -> Iterator[_Loan]:
        """Within the block, :meth:`reserve` on this thread may take ``worker`` (which has
        just finished a job and is neither idle nor running): the loan says whether it did.

        A worker that reported an outcome lends itself to the turns that run on its thread
        before it is free for anyone: otherwise a run started meanwhile on another thread
        could take it, and the reporting run's next task would wait in the queue and need
        an append of its own for its TaskStarted.
        """
        loan = _Loan(worker)
        _lending.loan = loan
        try:
            yield loan
        finally:
            _lending.loan = None

    def assign(self, reservation: Reservation, job: Job) -> None:
        """Hand a job whose TaskStarted is stored to the worker reserved for it."""
        with self._lock:
            self._inflight.add(job)
        reservation.worker.tell(job)

    def unreserve(self, reservation: Reservation) -> None:
        """Give a reserved worker back: it is offered for a queued job or goes idle."""
        self.worker_free(reservation.worker)

    def unreserve_all(self, reservations: Iterable[Reservation]) -> None:
        """Give back every worker of ``reservations`` (an append that carried their
        TaskStarted failed, or nobody will hand them their jobs)."""
        for reservation in reservations:
            self.worker_free(reservation.worker)

    def decline(self, reservation: Reservation, job: Job) -> None:
        """An offer was declined: forget its job, and offer the worker again."""
        self.finish(job)
        self.worker_free(reservation.worker)

    @property
    def closed(self) -> bool:
        """Say whether the pool was closed (no job starts any more)."""
        return self._closed

    def worker_free(self, worker: pykka.ActorRef[Any], loan: _Loan | None = None) -> None:
        """Offer a free worker to the run of the oldest queued job of the highest run priority,
        or record it as idle.

        The job leaves the in-flight set while it is offered (the run actor puts it back when
        it accepts): a run that is not live here, or whose next actor reconciles meanwhile,
        then schedules it again, so no task stays scheduled with nobody to run it. A job
        whose run has no live actor here is dropped, and the next one is tried.

        With the worker's ``loan`` (see :meth:`lend`): when no job waits, it stays lent to
        the turns on this thread instead of going idle, and the caller frees it after them
        unless one took it; once it is offered, it is no longer lent.
        """
        offered = False
        while True:
            with self._lock:
                if self._closed or worker not in self._workers:
                    return
                if loan is not None and loan.taken and not offered:
                    return  # a turn on this thread reserved it already
                if not self._pending:
                    if loan is not None and not loan.taken:
                        return  # still lent
                    self._idle.append(worker)
                    return
                if loan is not None:
                    loan.taken = True
                offered = True
                job = self._pending.popleft()
                metrics.queue_depth.set(len(self._pending))
                self._inflight.discard(job)
                reservation = Reservation(worker, self._names_of[worker])
            if self.router.offer(Offer(job, reservation, self)):
                return

    def finish(self, job: Job) -> None:
        """Forget a job: it reported its outcome or was given back."""
        with self._lock:
            self._inflight.discard(job)

    def inflight(self, run_id: str) -> list[tuple[str, int]]:
        """Return (task id, attempt) of every job of ``run_id`` queued or running here."""
        with self._lock:
            return [(job.task_id, job.attempt) for job in self._inflight.of_run(run_id)]

    def is_inflight(self, run_id: str, task_id: str, attempt: int) -> bool:
        """Say whether this attempt is queued or running here."""
        with self._lock:
            return (run_id, task_id, attempt) in self._inflight

    def cancel_run(self, run_id: str) -> None:
        """Set the cancellation flag of every job of ``run_id``."""
        with self._lock:
            jobs = self._inflight.of_run(run_id)
        for job in jobs:
            job.cancelled.set()

    def replace(self, worker: pykka.ActorRef[Any]) -> None:
        """Retire a worker stuck in a timed-out handler and start a fresh one."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            closed = self._closed
        if not closed:
            self._spawn()
            metrics.workers_replaced.inc()

    def retired(self, worker: pykka.ActorRef[Any]) -> bool:
        """Say whether ``worker`` was replaced and should stop after its current job."""
        with self._lock:
            return worker not in self._workers

    def queue_depth(self) -> int:
        """Return how many jobs wait for a worker."""
        with self._lock:
            return len(self._pending)

    def idle(self) -> int:
        """Return how many workers wait with nothing to do (neither running nor offered)."""
        with self._lock:
            return len(self._idle)

    def busy(self) -> int:
        """Return how many jobs are queued or running."""
        with self._lock:
            return len(self._inflight)

    def close(self, grace: float = 10.0) -> None:
        """Stop taking jobs, let running handlers finish within ``grace``, stop the workers."""
        with self._lock:
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            workers = list(self._workers)
        for job in dropped:
            self.finish(job)
        deadline = time.monotonic() + grace
        for ref in workers:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ref.stop(block=True, timeout=remaining)
            except pykka.Timeout:
                log.warning("worker_still_busy_at_close", worker=str(ref))
            except pykka.ActorDeadError:
                pass


class TaskWorker(pykka.ThreadingActor):
    """Runs jobs one at a time; after each, is offered for the next queued one."""

    # Engine.close() stops every actor; a daemon thread only keeps a straggler (a handler
    # stuck past the grace period) from holding the interpreter open at exit.
    use_daemon_thread = True

    def __init__(self, pool: WorkerPool, name: str) -> None:
        super().__init__()
        self.pool = pool
        self.name = name

    def on_failure(self, *exc_info: Any) -> None:
        log.error("task_worker_failed", worker=self.name, exc_info=exc_info)
        self.pool.replace(self.actor_ref)  # keep the pool at its size

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Job):
            return None
        # Every job a worker gets has its TaskStarted stored: it runs even if cancelled
        # meanwhile; its handler sees the flag, and its outcome lets the run finish.
        tracing = self.pool.tracing
        job = message
        outcome = self._execute(job) if tracing is None else tracing.run_attempt(job, self._execute)
        # The run that hears this outcome, and the run this worker is offered to next (when
        # a job is queued), take their turns on this thread; with no job queued, the worker
        # is lent to those turns for the run's next task, and freed after them unless one
        # took it. No dispatcher thread is woken for them (dispatch.py).
        with self.pool.lend(self.actor_ref) as loan, turn_here():
            if job.claim_outcome():
                self.pool.router.report(job, outcome)
                self.pool.finish(job)
            if not self.pool.retired(self.actor_ref):
                # To a queued job now, so that a run offered it and hearing the outcome
                # takes both in one turn and one append; with none queued it stays lent.
                self.pool.worker_free(self.actor_ref, loan)
        if loan.taken:
            return None  # its next job is in its inbox (or it was given back meanwhile)
        with turn_here():
            if self.pool.retired(self.actor_ref):
                self.stop()
            else:
                self.pool.worker_free(self.actor_ref)
        return None

    def _execute(self, job: Job) -> Completed | Failed:
        capture = LogCapture()
        context = TaskContext(
            run_id=job.run_id,
            task_id=job.task_id,
            attempt=job.attempt,
            log=AttemptLog(
                capture,
                log,
                {"run_id": job.run_id, "task_id": job.task_id, "attempt": job.attempt},
            ),
            cancelled=job.cancelled,
        )
        started = time.perf_counter()
        watchdog = None
        try:
            handler = self.pool.registry.get(job.handler)
            if handler.is_async:
                result = self._await(handler.call(job.inputs, context), job)
            else:
                if job.timeout is not None:
                    watchdog = self.pool.timers.call_later(
                        job.timeout, lambda: self._timed_out(job, capture)
                    )
                result = handler.call(job.inputs, context)
        except _AttemptTimeout:
            return _timeout_failure(job, capture.lines())
        except BaseException as e:  # noqa: BLE001 - a handler's failure, whatever it is, is data
            return Failed(job.task_id, job.attempt, _error_info(e), capture.lines())
        finally:
            if watchdog is not None:
                watchdog.cancel()
        duration_ms = (time.perf_counter() - started) * 1000
        metrics.task_duration.labels(handler=job.handler).observe(duration_ms / 1000)
        logs = capture.lines()
        try:
            _json.encode(result)
        except (TypeError, ValueError, OverflowError) as e:
            error = ErrorInfo(
                type="OutputError", message=f"result is not JSON: {e}", retryable=False
            )
            return Failed(job.task_id, job.attempt, error, logs)
        return Completed(job.task_id, job.attempt, result, duration_ms, logs)

    def _await(self, coroutine: Any, job: Job) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.pool._loop())
        try:
            return future.result(timeout=job.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            job.cancelled.set()
            raise _AttemptTimeout from None

    def _timed_out(self, job: Job, capture: LogCapture) -> None:
        """On the timer thread: fail the attempt and replace this stuck worker."""
        if not job.claim_outcome():
            return
        job.cancelled.set()
        self.pool.router.report(job, _timeout_failure(job, capture.lines()))
        self.pool.finish(job)
        log.warning("task_timed_out", run_id=job.run_id, task_id=job.task_id, attempt=job.attempt)
        self.pool.replace(self.actor_ref)


class _AttemptTimeout(Exception):  # noqa: N818 - internal signal, never leaves this module
    """An async handler ran past its timeout."""


def _timeout_failure(job: Job, logs: tuple[LogLine, ...] = ()) -> Failed:
    message = f"attempt exceeded its timeout of {job.timeout} s"
    return Failed(job.task_id, job.attempt, ErrorInfo(type=TIMEOUT, message=message), logs)


MAX_MESSAGE_CHARS = 4000
# The frames above a handler's: the worker's, Handler.call's, and for an async handler the
# future and the event loop it ran on. A traceback starts below the last of them.
_ENGINE_CODES = frozenset(
    {TaskWorker._execute.__code__, TaskWorker._await.__code__, Handler.call.__code__}
)
_ENGINE_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep
    for module in (asyncio, concurrent.futures)
    if module.__file__ is not None
)


def _error_info(error: BaseException) -> ErrorInfo:
    if isinstance(error, HandlerError):
        return ErrorInfo(type="HandlerNotFound", message=str(error), retryable=False)
    retryable = getattr(error, "retryable", None)
    if retryable is None:
        retryable = not isinstance(error, FlowweaverError)
    try:
        message = str(error) or type(error).__name__
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails is still a failure
        message = type(error).__name__
    return ErrorInfo(
        type=type(error).__name__,
        message=message[:MAX_MESSAGE_CHARS],
        retryable=bool(retryable),
        traceback=handler_traceback(error, _ENGINE_CODES, _ENGINE_DIRS),
    )
