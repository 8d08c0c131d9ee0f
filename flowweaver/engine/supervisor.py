"""Supervision of run actors: which runs live here, their actors' deaths, leases, takeover.

The supervisor keeps the live table (run id -> mailbox and actor), starts run actors (which
only queues their first turn on the dispatcher, engine/dispatch.py), rebuilds an actor that
raised (on the same mailbox, after a growing delay, up to MAX_ACTOR_DEATHS), holds the
outcomes of attempts whose run has no actor here (parked), and, with shared leases, scans the
store now and then for runs nobody owns (takeover). It is the pool's router too: a free
worker's offer or an outcome reaches its run's mailbox through :meth:`Supervisor.deliver`. The
Engine composes it; run actors see it only through the
:class:`~flowweaver.engine.run_actor.Supervision` protocol.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from flowweaver.backoff import Backoff
from flowweaver.domain.run import RunState
from flowweaver.engine.mailbox import Mailbox, refuse
from flowweaver.engine.messages import Completed, Failed, Offer, RunInput
from flowweaver.engine.pool import Job, Reservation
from flowweaver.engine.run_actor import RunActor, RunServices
from flowweaver.errors import FlowweaverError
from flowweaver.observability import metrics
from flowweaver.ports import EventStore, Leases

log = structlog.get_logger("flowweaver.engine")

MAX_ACTOR_DEATHS = 5
# Deaths further apart than this are unrelated (a store outage today, a bug in a handler's
# output next week): the count starts again, so a long run is not given up for them.
DEATH_WINDOW_S = 60.0
# A run actor that died again waits longer before its replacement starts: 0.08 s, 0.16 s, ... 1 s.
_RESTART_BACKOFF = Backoff(base=0.02, cap=1.0)
PARKED_RETRY_S = 0.1
ACTOR_STOP_TIMEOUT_S = 5.0
FINISHED_CACHE = 4096


@dataclass
class _LiveRun:
    mailbox: Mailbox
    ref: pykka.ActorRef[Any] | None
    deaths: int = 0
    last_death: float = 0.0  # time.monotonic() of the latest


class Supervisor:
    """The run actors of one engine: their table, their lives and deaths, their leases.

    Threads: the spawner (starts actors, so that callers never wait for a thread to
    start) and, with shared leases, the takeover loop. Everything else runs on the
    caller's thread: an API request (spawn, deliver), a run actor (run_finished, park),
    a worker (offer, report), the timer thread (an actor's delayed restart).
    """

    def __init__(self, store: EventStore, leases: Leases, *, takeover_interval: float) -> None:
        self.store = store
        self.leases = leases
        self.takeover_interval = takeover_interval
        self.death_window = DEATH_WINDOW_S
        self.services: RunServices  # given by start(): the pool needs this router first
        self.closed = False
        self._lock = threading.RLock()
        self._live: dict[str, _LiveRun] = {}
        self._waiters: dict[str, list[threading.Event]] = {}
        # Final states of runs that ended here lately: waiters need no replay for them.
        self._finished: OrderedDict[str, RunState] = OrderedDict()
        self._finish_listeners: list[Callable[[str, RunState], None]] = []
        # Outcomes of attempts that ran here for runs with no actor here (the lease was lost,
        # the store was down): held until a run actor of this engine stores them, or the
        # store shows the attempt was settled without them. Never silently dropped.
        self._parked: dict[str, dict[tuple[str, int], Completed | Failed]] = {}
        self._stop_takeover = threading.Event()
        self._takeover: threading.Thread | None = None
        self.leases.on_lost(self._leases_lost)

    def start(self, services: RunServices, *, recover: bool) -> None:
        """Resume unfinished runs, and start the takeover loop."""
        self.services = services
        if recover and self.leases.shared:
            self.take_over_orphans()  # as many as there is room for; the scan takes the rest
        elif recover:
            self.recover()
        if self.leases.shared:
            self._takeover = threading.Thread(
                target=self._takeover_loop, name="flowweaver-takeover", daemon=True
            )
            self._takeover.start()

    # --- runs ending, and those who wait for it ----------------------------------------------

    def watch(self, run_id: str) -> threading.Event:
        """Return an event set when the run ends here (or the engine closes)."""
        done = threading.Event()
        with self._lock:
            self._waiters.setdefault(run_id, []).append(done)
        return done

    def unwatch(self, run_id: str, done: threading.Event) -> None:
        """Forget an event given by :meth:`watch`."""
        with self._lock:
            waiters = self._waiters.get(run_id, [])
            if done in waiters:
                waiters.remove(done)
            if not waiters:
                self._waiters.pop(run_id, None)

    def finished_state(self, run_id: str) -> RunState | None:
        """Return the final state of a run that ended here lately, if it is remembered."""
        return self._finished.get(run_id)

    def is_live(self, run_id: str) -> bool:
        """Say whether the run has an actor in this process (one may be starting)."""
        return run_id in self._live  # a dict read is atomic; writers hold the lock

    def live_runs(self) -> int:
        """Return how many run actors are alive in this process."""
        with self._lock:
            return len(self._live)

    def recover(self) -> list[str]:
        """Replay and resume every run of the store that has not ended; return their ids."""
        run_ids = self.store.active_run_ids()
        for run_id in run_ids:
            self.spawn(run_id, None)
        if run_ids:
            log.info("runs_recovered", count=len(run_ids))
        return run_ids

    def take_over_orphans(self) -> int:
        """Resume unfinished runs that no process owns, as many as this engine has room for.

        Room is the workers not busy (running or queued jobs), and at least one run per
        call, so that orphans are resumed even by nodes that are always busy. Taking
        only that much leaves the rest of a dead node's runs to the other nodes' scans and
        to a node that restarts, instead of piling them all behind the workers of the
        first node to look. Oldest runs first. Return how many runs were taken.
        """
        pool = self.services.pool
        budget = max(1, pool.size - pool.busy())
        taken = 0
        for run_id in self.store.active_run_ids():
            if taken >= budget or self.closed:
                break
            if run_id not in self._live and self.spawn(run_id, None):
                taken += 1
        if taken:
            log.info("runs_taken_over", count=taken, budget=budget)
        return taken

    def spawn(
        self,
        run_id: str,
        state: RunState | None,
        mailbox: Mailbox | None = None,
        reserved: dict[str, Reservation] | None = None,
    ) -> bool:
        """Start an actor for ``run_id``; say whether this made the run live here.

        ``reserved``: workers set aside for tasks that ``state`` has started (a new run's
        first append); the actor hands them their jobs, or they are given back here when no
        actor starts.
        """
        started, created = self._spawn(run_id, state, mailbox, reserved)
        if reserved and not started:
            self.services.pool.unreserve_all(reserved.values())
        return created

    def _spawn(
        self,
        run_id: str,
        state: RunState | None,
        mailbox: Mailbox | None,
        reserved: dict[str, Reservation] | None,
    ) -> tuple[bool, bool]:
        """Start an actor as :meth:`spawn` says; return whether one started, and whether
        the run became live here."""
        with self._lock:
            if self.closed:
                return False, False
            live = self._live.get(run_id)
            if mailbox is not None and (live is None or live.mailbox is not mailbox):
                return False, False  # a replacement for an actor of a run given up meanwhile
            if live is not None and mailbox is None:
                return False, False  # already live here
            if live is None and not self.leases.acquire(run_id):
                return False, False  # another process owns this run
            created = live is None
            if live is None:
                live = _LiveRun(mailbox=Mailbox(), ref=None)
                self._live[run_id] = live
                for outcome in self._parked.pop(run_id, {}).values():
                    live.mailbox.put(outcome)
            metrics.live_runs.set(len(self._live))
            # Starting an actor only queues its first turn on the dispatcher, so it is done
            # here, under the lock: no actor starts once close() has begun (stop_starting and
            # stop_actors take the lock too). Inputs that arrive before the first turn wait in
            # the mailbox; attach() drains them.
            if live.mailbox.closed:
                return False, created
            live.ref = RunActor.start(self.services, self, run_id, live.mailbox, state, reserved)
        return True, created

    def actor_died(self, run_id: str, mailbox: Mailbox, pending: Sequence[RunInput]) -> None:
        """Called by a run actor that raised (starting or later): rebuild it by replay.

        The new actor keeps the mailbox and gets ``pending`` back. After the first death it
        starts after a growing delay; past the death limit (deaths no further apart than
        ``death_window`` seconds from the one before) the run is given up here: its
        inputs are refused, its lease released (another node may have better luck), and it
        leaves the live table, so nothing waits on a mailbox nobody drains.
        """
        with self._lock:
            live = self._live.get(run_id)
            if live is None or live.mailbox is not mailbox or self.closed:
                refuse(pending)
                return
            now = time.monotonic()
            if now - live.last_death > self.death_window:
                live.deaths = 0
            live.deaths += 1
            live.last_death = now
            deaths = live.deaths
            if deaths > MAX_ACTOR_DEATHS:
                del self._live[run_id]
                metrics.live_runs.set(len(self._live))
        if deaths > MAX_ACTOR_DEATHS:
            log.error("run_actor_keeps_failing", run_id=run_id, deaths=deaths)
            self.park(run_id, list(pending) + mailbox.close())
            self.leases.release(run_id)
            return
        for item in pending:
            mailbox.put(item)
        delay = 0.0 if deaths == 1 else _RESTART_BACKOFF.delay(deaths)
        self.services.timers.call_later(delay, lambda: self.spawn(run_id, None, mailbox))

    def run_finished(self, run_id: str, state: RunState) -> None:
        """Called by a run actor when its run ended."""
        self.leases.release(run_id)
        # Counted and logged before anyone can see the run end here (finished_state, the
        # waiters): a caller that prints after wait_run_finished prints after this line.
        metrics.runs_finished.labels(workflow=state.workflow_id, status=state.status).inc()
        log.info("run_finished", run_id=run_id, status=state.status, version=state.version)
        with self._lock:
            self._live.pop(run_id, None)
            waiters = list(self._waiters.get(run_id, []))
            self._finished[run_id] = state
            if len(self._finished) > FINISHED_CACHE:
                self._finished.popitem(last=False)
            metrics.live_runs.set(len(self._live))
        for done in waiters:
            done.set()
        for listener in self._finish_listeners:
            listener(run_id, state)

    def add_finish_listener(self, listener: Callable[[str, RunState], None]) -> None:
        """Call ``listener(run_id, final state)`` whenever a run ends here (see Engine)."""
        self._finish_listeners = [*self._finish_listeners, listener]

    def remove_finish_listener(self, listener: Callable[[str, RunState], None]) -> None:
        """Stop calling ``listener``."""
        self._finish_listeners = [f for f in self._finish_listeners if f is not listener]

    def run_lost(self, run_id: str, pending: Sequence[RunInput] = ()) -> None:
        """Called by a run actor that found another writer on its run, or lost its lease.

        Outcomes among ``pending`` and the run's mailbox are parked (see :meth:`park`).
        """
        with self._lock:
            live = self._live.pop(run_id, None)
        self.leases.release(run_id)
        self.park(run_id, list(pending) + (live.mailbox.close() if live is not None else []))
        log.warning("run_lost", run_id=run_id)

    def run_waits(self, run_id: str, mailbox: Mailbox) -> None:
        """Called by the actor of a queued run: it leaves, and so does the run's lease.

        Inputs that reached its mailbox meanwhile go to a new actor. A dequeue stored before
        the lease was let go is seen in the store here, and this node begins the run; one
        stored after finds the lease free, and its node begins it.
        """
        with self._lock:
            live = self._live.get(run_id)
            if live is None or live.mailbox is not mailbox:
                return
            del self._live[run_id]
            metrics.live_runs.set(len(self._live))
        leftovers = mailbox.close()
        self.leases.release(run_id)
        for item in leftovers:
            self.deliver(run_id, item)
        try:
            state = self.store.run_state(run_id)
        except FlowweaverError as e:
            log.warning("run_reload_failed", run_id=run_id, error=str(e))
            return
        if state is not None and not state.is_terminal and not state.is_queued:
            self.spawn(run_id, None)

    def park(self, run_id: str, items: Sequence[RunInput]) -> None:
        """Hold the outcomes among ``items`` for the run's next actor here; refuse the rest.

        A worker's outcome is a handler's work done: losing it runs the handler again. So
        an outcome that cannot reach a run actor now (leases lost, the store down, the actor
        gone) waits here. The takeover loop tries to own the run again at once and often;
        when it does, the new actor finds the outcomes in its mailbox and counts their
        attempts as alive, so none is recorded as Interrupted. When the store shows that
        the attempt was settled meanwhile (another node took the run and interrupted it, or
        the run ended), the outcome is dropped with a warning. A closing engine drops them:
        the next one records those attempts as Interrupted.
        """
        refused: list[RunInput] = []
        with self._lock:
            for item in items:
                if isinstance(item, Completed | Failed) and not self.closed:
                    held = self._parked.setdefault(run_id, {})
                    held[item.task_id, item.attempt] = item
                    log.warning(
                        "outcome_parked", run_id=run_id, task_id=item.task_id, attempt=item.attempt
                    )
                else:
                    refused.append(item)
        refuse(refused)

    def unpark(self, run_id: str, mailbox: Mailbox) -> None:
        """Move the outcomes parked for ``run_id`` into its live mailbox."""
        # Nothing parked is the usual case: see it without the lock that every thread takes.
        # A park that comes after this look is no later than one after the pop would be.
        if run_id not in self._parked:
            return
        with self._lock:
            held = self._parked.pop(run_id, {})
        for outcome in held.values():
            if not mailbox.put(outcome):
                self.park(run_id, [outcome])

    def parked(self) -> dict[str, list[tuple[str, int]]]:
        """Return the attempts whose outcome is parked, by run."""
        with self._lock:
            return {run_id: list(held) for run_id, held in self._parked.items()}

    def _leases_lost(self) -> None:
        """Every lease lapsed (the lease connection died): stop every run actor here.

        Other processes may own those runs now; the takeover scan takes back whatever
        nobody owns once leases can be had again. Outcomes waiting in the mailboxes are
        parked, and their runs are the first this engine tries to own again.
        """
        with self._lock:
            lives = list(self._live.items())
            self._live.clear()
        for run_id, live in lives:
            self.park(run_id, live.mailbox.close())
            if live.ref is not None:
                live.ref.stop(block=False)
            log.warning("run_lease_lost", run_id=run_id)

    def _takeover_loop(self) -> None:
        """Now and then, resume unfinished runs that no process owns (see take_over_orphans).

        While outcomes are parked, their runs are tried every PARKED_RETRY_S: the engine
        holding a handler's result should be the one that owns its run next.
        """
        next_scan = time.monotonic() + self.takeover_interval
        while True:
            wait = max(0.0, next_scan - time.monotonic())
            if self._parked:
                wait = min(wait, PARKED_RETRY_S)
            if self._stop_takeover.wait(wait):
                return
            scan = time.monotonic() >= next_scan
            try:
                self._reclaim_parked(check_store=scan)
                if scan:
                    self.take_over_orphans()
            except FlowweaverError as e:
                log.warning("takeover_scan_failed", error=str(e))
            except Exception:  # a bug must not end the scan for the life of the process
                log.exception("takeover_scan_crashed")
            if scan:
                next_scan = time.monotonic() + self.takeover_interval

    def _reclaim_parked(self, *, check_store: bool) -> None:
        """Own again the runs of parked outcomes; drop those the store shows were settled."""
        for run_id in list(self._parked):
            if self.closed:
                return
            live = self._live.get(run_id)
            if live is None:
                self.spawn(run_id, None)  # takes the parked outcomes along when it owns it
                live = self._live.get(run_id)
            if live is not None:
                self.unpark(run_id, live.mailbox)
            elif check_store:
                self._drop_settled(run_id)

    def _drop_settled(self, run_id: str) -> None:
        """Drop parked outcomes whose attempt is no longer running in the store."""
        state = self.store.run_state(run_id)
        with self._lock:
            held = self._parked.get(run_id, {})
            for (task_id, attempt), outcome in list(held.items()):
                task = state.tasks.get(task_id) if state is not None else None
                if (
                    state is not None
                    and not state.is_terminal
                    and task is not None
                    and task.status == "running"
                    and task.attempts == attempt
                ):
                    continue  # still undecided: whoever owns the run may yet be us
                del held[task_id, attempt]
                log.warning(
                    "outcome_dropped",
                    run_id=run_id,
                    task_id=task_id,
                    attempt=attempt,
                    outcome=type(outcome).__name__,
                    reason="the attempt was settled without it (another node owns the run)",
                )
            if not held:
                self._parked.pop(run_id, None)

    def deliver(self, run_id: str, item: RunInput) -> None:
        """Put ``item`` in the run's mailbox, starting an actor for the run if it can own it.

        An input no actor here can take is parked (an outcome, with shared leases) or refused.
        """
        live = self._live.get(run_id)  # a dict read is atomic; writers hold the lock
        if live is not None and live.mailbox.put(item):
            return
        if live is None and not self.closed:
            try:
                state = self.store.run_state(run_id)
            except FlowweaverError as e:  # the store is down: park an outcome, refuse the rest
                log.warning("deliver_failed", run_id=run_id, error=str(e))
                state = None
            if state is not None and state.is_terminal:
                if isinstance(item, Completed | Failed):
                    log.warning(
                        "outcome_dropped",
                        run_id=run_id,
                        task_id=item.task_id,
                        attempt=item.attempt,
                        outcome=type(item).__name__,
                        reason="the run ended without it",
                    )
                refuse([item])
                return
            if state is not None:
                self.spawn(run_id, None)
        with self._lock:
            live = self._live.get(run_id)
            if live is not None and live.mailbox.put(item):
                return
            ended_here = run_id in self._finished
        if self.leases.shared and not ended_here:
            self.park(run_id, [item])  # the takeover loop brings it back to its run
        else:
            refuse([item])

    # --- the pool's router: workers reach their runs through here --------------------------

    def offer(self, offer: Offer) -> bool:
        """Put a free worker's offer in its run's mailbox; False when the run is not live here.

        A run that is not live here has no actor to start the job: whichever actor owns it
        next schedules its scheduled tasks again (see RunActor._reconcile).
        """
        live = self._live.get(offer.job.run_id)  # a dict read is atomic; writers hold the lock
        return live is not None and live.mailbox.put(offer)

    def report(self, job: Job, outcome: Completed | Failed) -> None:
        """Deliver the outcome of an attempt that ran on a worker here to its run."""
        self.deliver(job.run_id, outcome)

    # --- shutdown ------------------------------------------------------------------------

    def stop_starting(self) -> bool:
        """Take no more work: start no actor, stop the takeover loop.

        Return False when it was stopped already (the engine is closing or closed).
        """
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        self._stop_takeover.set()
        if self._takeover is not None:
            self._takeover.join(timeout=10)
        return True

    def stop_actors(self) -> None:
        """Stop every run actor (after the pool closed) and refuse what their mailboxes hold."""
        with self._lock:
            lives = list(self._live.values())
            self._live.clear()
        # Each actor stops after the wake-ups already in its inbox: the outcomes of handlers
        # that finished within the grace period are stored first (or, with the store down,
        # tried once). All together, not one after another: an actor inside an append to a
        # store that hangs holds its stop for the store's own timeout.
        refs = [live.ref for live in lives if live.ref is not None]
        deadline = time.monotonic() + ACTOR_STOP_TIMEOUT_S
        for ref in refs:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.stop(block=False)
        for ref in refs:
            if not ref.actor_stopped.wait(max(0.0, deadline - time.monotonic())):
                log.warning("run_actor_still_busy_at_close", actor=str(ref))
        for live in lives:
            refuse(live.mailbox.close())

    def wake_waiters(self) -> None:
        """Wake everyone waiting for a run to end (the engine closed)."""
        with self._lock:
            for waiters in self._waiters.values():
                for done in waiters:
                    done.set()
