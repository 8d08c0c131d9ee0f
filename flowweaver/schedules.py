"""Schedules as one process sees them: made, changed, paused and triggered on a store.

:class:`ScheduleRegistry` folds the store's schedule events (see
:mod:`flowweaver.domain.schedule`) and keeps them; :meth:`ScheduleRegistry.refresh` reads only
what was stored since, so the API, the CLI and the scheduler of every node see one list. Each
change is decided on the folded state and appended at the version it was decided on; when
another writer stored first, it is decided again on what that writer stored.

POST /schedules of an id that exists replaces its definition (a ScheduleUpdated event, a new
version of the schedule; 200), like POST /workflows of a new definition; the same definition
again records nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from flowweaver.domain.schedule import (
    AnyScheduleEvent,
    ScheduleEntry,
    ScheduleFired,
    Schedules,
    ScheduleSpec,
    apply_schedule_event,
    delete_schedule,
    next_fire_times,
    pause_schedule,
    put_schedule,
    resume_schedule,
    trigger_schedule,
    zone,
)
from flowweaver.errors import ConcurrencyError, FieldError, NotFoundError, ValidationError
from flowweaver.ports import Clock, ScheduleLog, SystemClock

ATTEMPTS = 5
NEXT_FIRES = 5
"""Fire times GET /schedules/{id} shows."""


class FireTimeOut(msgspec.Struct, frozen=True, kw_only=True):
    """A fire time in the schedule's zone (RFC 3339 with its offset) and in UTC."""

    local: str
    utc: str


class ScheduleOut(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A schedule as the API and ``schedules show --json`` give it."""

    id: str
    workflow_id: str
    cron: str
    timezone: str
    parameters: dict[str, Any]
    overlap: str
    catchup_window: float
    paused: bool
    version: int
    created_at: str
    updated_at: str
    fired: int
    skipped: int
    last_fire_time: str | None
    last_run_id: str | None
    buffered_fire_time: str | None
    next_fire_times: list[FireTimeOut]


class ScheduleList(msgspec.Struct, frozen=True, kw_only=True):
    """GET /schedules: every schedule, by id."""

    schedules: list[ScheduleOut]


class ScheduleTriggered(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """POST /schedules/{id}/trigger: the fire recorded and the run it started."""

    schedule_id: str
    fire_time: datetime
    run_id: str
    idempotency_key: str


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def schedule_out(entry: ScheduleEntry, now: datetime, *, count: int = NEXT_FIRES) -> ScheduleOut:
    """Return what the API shows of a schedule, with its next ``count`` fire times after now.

    A paused schedule shows the times it would fire at once resumed.
    """
    spec = entry.definition
    tz = zone(spec.timezone)
    after = max(now, entry.cursor)
    upcoming = [
        FireTimeOut(local=t.astimezone(tz).isoformat(), utc=_utc(t))
        for t in next_fire_times(spec, after, count)
    ]
    return ScheduleOut(
        id=spec.id,
        workflow_id=spec.workflow_id,
        cron=spec.cron,
        timezone=spec.timezone,
        parameters=spec.parameters,
        overlap=spec.overlap,
        catchup_window=spec.catchup_window,
        paused=entry.paused,
        version=entry.version,
        created_at=_utc(entry.created_at),
        updated_at=_utc(entry.updated_at),
        fired=entry.fired,
        skipped=entry.skipped,
        last_fire_time=_utc(entry.last_fire_time) if entry.last_fire_time else None,
        last_run_id=entry.last_run_id,
        buffered_fire_time=_utc(entry.buffered) if entry.buffered else None,
        next_fire_times=upcoming,
    )


class ScheduleRegistry:
    """The schedules of one store, folded in memory and refreshed from the store on demand.

    ``check_workflow(workflow_id)`` raises NotFoundError for a workflow the store lacks; a
    schedule of one is refused (422) before anything is stored.
    """

    def __init__(
        self,
        store: ScheduleLog,
        *,
        check_workflow: Callable[[str], object] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._check_workflow = check_workflow
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._state = Schedules()

    def refresh(self) -> int:
        """Fold what the store holds since the last refresh; return how many events that was.

        Raises:
            StoreError: the store cannot be reached; what was known stays.
        """
        with self._lock:
            events = self._store.schedule_events(after=self._state.version)
            for event in events:
                apply_schedule_event(self._state, event)
        return len(events)

    @property
    def version(self) -> int:
        """Return how many schedule events the registry has folded."""
        return self._state.version

    def entries(self) -> list[ScheduleEntry]:
        """Return every schedule known at the last refresh, by id (copies)."""
        with self._lock:
            return [
                msgspec.structs.replace(e, recent=list(e.recent))
                for _, e in sorted(self._state.by_id.items())
            ]

    def get(self, schedule_id: str) -> ScheduleEntry:
        """Return the schedule ``schedule_id`` as of the last refresh (a copy).

        Raises:
            NotFoundError: no such schedule.
        """
        with self._lock:
            entry = self._state.by_id.get(schedule_id)
            if entry is None:
                raise NotFoundError("schedule", schedule_id[:130])
            return msgspec.structs.replace(entry, recent=list(entry.recent))

    def now(self) -> datetime:
        """Return the registry clock's time."""
        return self.clock.now()

    # --- changes ------------------------------------------------------------------------

    def put(
        self, spec: ScheduleSpec, *, paused: bool | None = None, by: str
    ) -> tuple[ScheduleEntry, bool]:
        """Create or replace a schedule; return it and whether it is new.

        Raises:
            ValidationError: the definition is not valid, or its workflow is unknown.
            ConcurrencyError: other writers kept storing first.
            StoreError: the store failed; nothing was stored.
        """
        if self._check_workflow is not None:
            try:
                self._check_workflow(spec.workflow_id)
            except NotFoundError:
                raise ValidationError(
                    [FieldError("$.workflowId", f"no workflow {spec.workflow_id!r} is registered")]
                ) from None
        created = False

        def decide(state: Schedules, now: datetime) -> list[AnyScheduleEvent]:
            nonlocal created
            created = spec.id not in state.by_id
            return put_schedule(state, spec, paused=paused, by=by, now=now)

        self._change(decide)
        return self.get(spec.id), created

    def pause(self, schedule_id: str, *, by: str, reason: str = "") -> ScheduleEntry:
        """Pause a schedule (a paused one stays as it is).

        Raises:
            NotFoundError: no such schedule.
            ConcurrencyError, StoreError: as :meth:`put`.
        """
        self._change(
            lambda state, now: _some(
                pause_schedule(state, schedule_id, by=by, reason=reason, now=now)
            )
        )
        return self.get(schedule_id)

    def resume(self, schedule_id: str, *, by: str, reason: str = "") -> ScheduleEntry:
        """Resume a paused schedule: it fires from now on (fires while paused are not run).

        Raises:
            NotFoundError: no such schedule.
            ConcurrencyError, StoreError: as :meth:`put`.
        """
        self._change(
            lambda state, now: _some(
                resume_schedule(state, schedule_id, by=by, reason=reason, now=now)
            )
        )
        return self.get(schedule_id)

    def delete(self, schedule_id: str, *, by: str) -> None:
        """Delete a schedule; runs it started are not touched.

        Raises:
            NotFoundError: no such schedule.
            ConcurrencyError, StoreError: as :meth:`put`.
        """
        self._change(lambda state, now: [delete_schedule(state, schedule_id, by=by, now=now)])

    def trigger(self, schedule_id: str, *, by: str) -> ScheduleFired:
        """Record a fire now; the caller (or any node's scheduler within a second) starts its run.

        Raises:
            NotFoundError: no such schedule.
            ConcurrencyError, StoreError: as :meth:`put`.
        """
        fired: list[ScheduleFired] = []

        def decide(state: Schedules, now: datetime) -> list[AnyScheduleEvent]:
            fired[:] = [trigger_schedule(state, schedule_id, by=by, now=now)]
            return list(fired)

        self._change(decide)
        return fired[0]

    def record(self, expected_version: int, events: Sequence[AnyScheduleEvent]) -> bool:
        """Append decisions made on version ``expected_version``; False when another writer
        stored first (nothing was stored; refresh and decide again).

        Raises:
            StoreError: the store failed; nothing was stored.
        """
        try:
            self._store.append_schedule_events(expected_version, events)
        except ConcurrencyError:
            return False
        self.refresh()
        return True

    def _change(self, decide: Callable[[Schedules, datetime], list[AnyScheduleEvent]]) -> None:
        for _ in range(ATTEMPTS):
            self.refresh()
            with self._lock:
                version = self._state.version
                events = decide(self._state, self.now())
            if not events or self.record(version, events):
                return
        raise ConcurrencyError(["schedules"])


def _some(event: AnyScheduleEvent | None) -> list[AnyScheduleEvent]:
    return [] if event is None else [event]
