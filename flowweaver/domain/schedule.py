"""Schedules as an event-sourced registry: cron definitions and every fire decided for them.

Every schedule of a store lives in one aggregate (as the tokens do): its definition events
(ScheduleCreated, ScheduleUpdated, SchedulePaused, ScheduleResumed, ScheduleDeleted) and its
fire decisions (ScheduleFired, ScheduleFireSkipped, ScheduleFireBuffered). A node reads what
was stored since the version it knows; optimistic concurrency on the aggregate's version means
two nodes can never both record a decision about the same fire.

Cron expressions are parsed and iterated by ``cronsim`` (5 fields, or 6 with seconds first), in
the schedule's IANA time zone (``zoneinfo``): a fire time that a spring-forward gap skips moves
to the first minute after the gap, and one that a fall-back repeats fires once (the first), as
Debian cron does. Pure: the time comes in as an argument.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from cronsim import CronSim, CronSimError

from flowweaver.domain.ids import is_ident, run_id_for_key
from flowweaver.errors import FieldError, NotFoundError, ValidationError

Overlap = Literal["skip", "buffer_one", "allow"]
OVERLAPS: tuple[Overlap, ...] = ("skip", "buffer_one", "allow")
SkipReason = Literal["missed", "overlap"]

DEFAULT_CATCHUP_WINDOW = 60.0
"""Seconds after its time within which a fire still runs (a server down longer misses it)."""
MAX_CATCHUP_WINDOW = 366 * 86400.0
GRACE = 1.0
"""Seconds a fire may be late without being missed, whatever the window (the loop's tick)."""
MAX_CRON_CHARS = 200
MAX_TIMEZONE_CHARS = 64
MAX_FIRES_PER_DECISION = 100
"""Fires decided at one time at most; the rest wait for the next round (a bounded append)."""
MISSED_COUNT_CAP = 100_000
"""Missed fires counted one by one at most; a longer outage records the cap as its count."""
RECENT_FIRES = 32
"""Fires each schedule remembers, so a node that takes over starts any whose run is missing."""


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fire_key(schedule_id: str, fire_time: datetime) -> str:
    """Return the idempotency key of a fire: ``schedule:<id>:<fire time, RFC 3339 UTC>``."""
    return f"schedule:{schedule_id}:{_utc(fire_time)}"


def trigger_key(schedule_id: str, at: datetime) -> str:
    """Return the idempotency key of a manual trigger at ``at`` (apart from every cron fire)."""
    return f"schedule:{schedule_id}:trigger:{_utc(at)}"


class ScheduleSpec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A schedule's definition, as POST /schedules takes it (validated by :func:`check_spec`)."""

    id: str
    workflow_id: str
    cron: str
    timezone: str = "UTC"
    parameters: dict[str, Any] = {}
    overlap: Overlap = "skip"
    catchup_window: float = DEFAULT_CATCHUP_WINDOW


class ScheduleEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type", tag=True
):
    """Base of the schedule registry's events."""

    schema_version: ClassVar[int] = 1
    """The version of this type's stored JSON; 1 is the shape first stored."""

    timestamp: datetime
    schedule_id: str


class ScheduleCreated(ScheduleEvent, frozen=True, kw_only=True):
    """A schedule was made (``paused``: it does not fire until resumed)."""

    definition: ScheduleSpec
    paused: bool = False
    by: str


class ScheduleUpdated(ScheduleEvent, frozen=True, kw_only=True):
    """A schedule's definition was replaced; fires before this moment are not caught up."""

    definition: ScheduleSpec
    by: str


class SchedulePaused(ScheduleEvent, frozen=True, kw_only=True):
    """A schedule stopped firing."""

    by: str
    reason: str = ""


class ScheduleResumed(ScheduleEvent, frozen=True, kw_only=True):
    """A paused schedule fires again, from this moment on (fires while paused are not run)."""

    by: str
    reason: str = ""


class ScheduleDeleted(ScheduleEvent, frozen=True, kw_only=True):
    """A schedule was deleted: it never fires again (its id may be used anew)."""

    by: str


class ScheduleFired(ScheduleEvent, frozen=True, kw_only=True):
    """A fire starts a run: the run's id, key and parameters are fixed here, before it starts.

    ``manual`` is a trigger by ``by``; a fire of the cron has ``by`` "scheduler".
    """

    fire_time: datetime
    workflow_id: str
    run_id: str
    idempotency_key: str
    parameters: dict[str, Any] = {}
    manual: bool = False
    by: str = "scheduler"


class ScheduleFireSkipped(ScheduleEvent, frozen=True, kw_only=True):
    """A fire did not start a run: ``missed`` (past the catch-up window) or ``overlap``.

    ``count`` fires from ``fireTime`` to ``lastFireTime`` when one event records an outage.
    """

    fire_time: datetime
    reason: SkipReason
    count: int = 1
    last_fire_time: datetime | None = None


class ScheduleFireBuffered(ScheduleEvent, frozen=True, kw_only=True):
    """A fire waits for the schedule's running run to end (overlap ``buffer_one``)."""

    fire_time: datetime


AnyScheduleEvent = (
    ScheduleCreated
    | ScheduleUpdated
    | SchedulePaused
    | ScheduleResumed
    | ScheduleDeleted
    | ScheduleFired
    | ScheduleFireSkipped
    | ScheduleFireBuffered
)
SCHEDULE_EVENT_TYPES: tuple[type[ScheduleEvent], ...] = (
    ScheduleCreated,
    ScheduleUpdated,
    SchedulePaused,
    ScheduleResumed,
    ScheduleDeleted,
    ScheduleFired,
    ScheduleFireSkipped,
    ScheduleFireBuffered,
)
SCHEDULE_EVENT_NAMES: tuple[str, ...] = tuple(t.__name__ for t in SCHEDULE_EVENT_TYPES)
SCHEDULE_SCHEMA_VERSIONS: dict[str, int] = {
    t.__name__: t.schema_version for t in SCHEDULE_EVENT_TYPES
}


class FireRecord(msgspec.Struct, kw_only=True):
    """One recent fire of a schedule: what a node needs to start its run if it is missing."""

    fire_time: datetime
    workflow_id: str
    run_id: str
    idempotency_key: str
    parameters: dict[str, Any]


class ScheduleEntry(msgspec.Struct, kw_only=True):
    """One schedule as the registry knows it.

    ``cursor``: every cron fire at or before it is decided (fired, skipped or buffered), or
    came before the schedule existed, was last changed or resumed.
    """

    definition: ScheduleSpec
    version: int
    paused: bool
    created_at: datetime
    updated_at: datetime
    cursor: datetime
    buffered: datetime | None = None
    last_fire_time: datetime | None = None
    last_run_id: str | None = None
    fired: int = 0
    skipped: int = 0
    recent: list[FireRecord] = []


class Schedules(msgspec.Struct, kw_only=True):
    """The registry folded: every live schedule by id, and the version it is folded to."""

    version: int = 0
    by_id: dict[str, ScheduleEntry] = {}


def apply_schedule_event(state: Schedules, event: AnyScheduleEvent) -> Schedules:
    """Fold one event into the registry (and count it in ``version``)."""
    state.version += 1
    sid = event.schedule_id
    if isinstance(event, ScheduleCreated):
        state.by_id[sid] = ScheduleEntry(
            definition=event.definition,
            version=1,
            paused=event.paused,
            created_at=event.timestamp,
            updated_at=event.timestamp,
            cursor=event.timestamp,
        )
        return state
    entry = state.by_id.get(sid)
    if entry is None:
        return state
    if isinstance(event, ScheduleUpdated):
        entry.definition = event.definition
        entry.version += 1
        entry.updated_at = event.timestamp
        entry.cursor = max(entry.cursor, event.timestamp)
    elif isinstance(event, SchedulePaused):
        entry.paused = True
        entry.buffered = None
        entry.updated_at = event.timestamp
    elif isinstance(event, ScheduleResumed):
        entry.paused = False
        entry.updated_at = event.timestamp
        entry.cursor = max(entry.cursor, event.timestamp)
    elif isinstance(event, ScheduleDeleted):
        del state.by_id[sid]
    elif isinstance(event, ScheduleFired):
        entry.fired += 1
        entry.last_run_id = event.run_id
        entry.last_fire_time = event.fire_time
        if not event.manual:
            if entry.buffered == event.fire_time:
                entry.buffered = None
            entry.cursor = max(entry.cursor, event.fire_time)
        entry.recent = [
            *entry.recent[-(RECENT_FIRES - 1) :],
            FireRecord(
                fire_time=event.fire_time,
                workflow_id=event.workflow_id,
                run_id=event.run_id,
                idempotency_key=event.idempotency_key,
                parameters=event.parameters,
            ),
        ]
    elif isinstance(event, ScheduleFireSkipped):
        entry.skipped += event.count
        entry.cursor = max(entry.cursor, event.last_fire_time or event.fire_time)
    else:
        entry.buffered = event.fire_time
        entry.cursor = max(entry.cursor, event.fire_time)
    return state


# --- cron ---------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``.

    Raises:
        ValidationError: no such zone.
    """
    if not name or len(name) > MAX_TIMEZONE_CHARS:
        raise ValidationError([FieldError("$.timezone", "is not an IANA time zone name")])
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            [FieldError("$.timezone", f"unknown time zone {name!r} (an IANA name: Europe/Berlin)")]
        ) from None


def fire_times(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Yield the fire times of ``cron`` in ``timezone`` strictly after ``after``, in UTC.

    Raises:
        ValidationError: the expression or the zone is not valid.
    """
    tz = zone(timezone)
    try:
        sim = CronSim(cron, after.astimezone(tz))
    except (CronSimError, ValueError, KeyError, IndexError) as e:
        raise ValidationError([FieldError("$.cron", f"not a cron expression: {e}")]) from None
    while True:
        try:
            moment = next(sim).astimezone(UTC)
        except StopIteration:
            return
        # cronsim walks local wall-clock time for 5-field expressions at fixed times: started
        # inside a fall-back's repeated hour, it can name the hour's first pass, already gone.
        if moment > after:
            yield moment


def next_fire_times(definition: ScheduleSpec, after: datetime, count: int = 5) -> list[datetime]:
    """Return the next ``count`` fire times of a schedule strictly after ``after`` (UTC)."""
    return list(itertools.islice(fire_times(definition.cron, definition.timezone, after), count))


def check_spec(spec: ScheduleSpec, now: datetime) -> None:
    """Check a schedule definition beyond its wire shape.

    Raises:
        ValidationError: every problem found, each with its JSON path.
    """
    errors: list[FieldError] = []
    if not is_ident(spec.id):
        errors.append(FieldError("$.id", "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"))
    if not is_ident(spec.workflow_id):
        errors.append(FieldError("$.workflowId", "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"))
    if spec.overlap not in OVERLAPS:
        errors.append(FieldError("$.overlap", f"must be one of {', '.join(OVERLAPS)}"))
    if not 0 <= spec.catchup_window <= MAX_CATCHUP_WINDOW:
        errors.append(
            FieldError("$.catchupWindow", f"must be seconds from 0 to {MAX_CATCHUP_WINDOW:.0f}")
        )
    if len(spec.cron) > MAX_CRON_CHARS:
        errors.append(FieldError("$.cron", f"must be at most {MAX_CRON_CHARS} characters"))
    else:
        try:
            zone(spec.timezone)
        except ValidationError as e:
            errors += e.errors
        else:
            try:
                if not next_fire_times(spec, now, 1):
                    errors.append(FieldError("$.cron", "never fires"))
            except ValidationError as e:
                errors += e.errors
    if errors:
        raise ValidationError(errors)


# --- commands -------------------------------------------------------------------------------


def put_schedule(
    state: Schedules, spec: ScheduleSpec, *, paused: bool | None, by: str, now: datetime
) -> list[AnyScheduleEvent]:
    """Decide a create or an update of ``spec.id``; nothing when it changes nothing.

    ``paused`` None keeps an existing schedule's state (a new one is active); True or False
    also pauses or resumes it.

    Raises:
        ValidationError: the definition is not valid (the workflow is checked by the caller).
    """
    check_spec(spec, now)
    entry = state.by_id.get(spec.id)
    if entry is None:
        return [
            ScheduleCreated(
                timestamp=now, schedule_id=spec.id, definition=spec, paused=bool(paused), by=by
            )
        ]
    events: list[AnyScheduleEvent] = []
    if entry.definition != spec:
        events.append(ScheduleUpdated(timestamp=now, schedule_id=spec.id, definition=spec, by=by))
    if paused is True and not entry.paused:
        events.append(SchedulePaused(timestamp=now, schedule_id=spec.id, by=by))
    elif paused is False and entry.paused:
        events.append(ScheduleResumed(timestamp=now, schedule_id=spec.id, by=by))
    return events


def _entry(state: Schedules, schedule_id: str) -> ScheduleEntry:
    entry = state.by_id.get(schedule_id)
    if entry is None:
        raise NotFoundError("schedule", schedule_id[:130])
    return entry


def pause_schedule(
    state: Schedules, schedule_id: str, *, by: str, reason: str = "", now: datetime
) -> SchedulePaused | None:
    """Decide a pause; None when the schedule is paused already.

    Raises:
        NotFoundError: no such schedule.
    """
    if _entry(state, schedule_id).paused:
        return None
    return SchedulePaused(timestamp=now, schedule_id=schedule_id, by=by, reason=reason)


def resume_schedule(
    state: Schedules, schedule_id: str, *, by: str, reason: str = "", now: datetime
) -> ScheduleResumed | None:
    """Decide a resume; None when the schedule is not paused.

    Raises:
        NotFoundError: no such schedule.
    """
    if not _entry(state, schedule_id).paused:
        return None
    return ScheduleResumed(timestamp=now, schedule_id=schedule_id, by=by, reason=reason)


def delete_schedule(
    state: Schedules, schedule_id: str, *, by: str, now: datetime
) -> ScheduleDeleted:
    """Decide a deletion.

    Raises:
        NotFoundError: no such schedule.
    """
    _entry(state, schedule_id)
    return ScheduleDeleted(timestamp=now, schedule_id=schedule_id, by=by)


def _fired(
    entry: ScheduleEntry, fire_time: datetime, key: str, now: datetime, **extra: Any
) -> ScheduleFired:
    spec = entry.definition
    return ScheduleFired(
        timestamp=now,
        schedule_id=spec.id,
        fire_time=fire_time,
        workflow_id=spec.workflow_id,
        run_id=run_id_for_key(spec.workflow_id, key),
        idempotency_key=key,
        parameters=spec.parameters,
        **extra,
    )


def trigger_schedule(
    state: Schedules, schedule_id: str, *, by: str, now: datetime
) -> ScheduleFired:
    """Decide a fire now, paused or not and whatever runs (its own key, with ``now``).

    Raises:
        NotFoundError: no such schedule.
    """
    entry = _entry(state, schedule_id)
    return _fired(entry, now, trigger_key(schedule_id, now), now, manual=True, by=by)


def is_due(entry: ScheduleEntry, now: datetime) -> bool:
    """Say whether :func:`decide_fires` may decide anything for ``entry`` at ``now``.

    Cheap (no run is read): a buffered fire waits, or a cron fire after the cursor has come.
    """
    if entry.paused:
        return False
    if entry.buffered is not None:
        return True
    spec = entry.definition
    upcoming = next(fire_times(spec.cron, spec.timezone, entry.cursor), None)
    return upcoming is not None and upcoming <= now


def decide_fires(
    entry: ScheduleEntry, now: datetime, *, previous_running: bool
) -> list[AnyScheduleEvent]:
    """Decide what happens to the fires of ``entry`` that are due at ``now``.

    ``previous_running``: the last run this schedule started has not ended. A buffered fire
    starts once it has. Fires later than ``catchupWindow`` (plus :data:`GRACE`) are recorded
    as missed, in one event; the others fire, or under ``skip`` and ``buffer_one`` wait or
    are skipped while a run of the schedule is running. At most
    :data:`MAX_FIRES_PER_DECISION` fires are decided; call again for the rest.
    """
    if entry.paused:
        return []
    spec = entry.definition
    events: list[AnyScheduleEvent] = []
    running = previous_running
    buffered = entry.buffered
    if buffered is not None and not running:
        events.append(_fired(entry, buffered, fire_key(spec.id, buffered), now))
        buffered = None
        running = True
    horizon = now - timedelta(seconds=spec.catchup_window + GRACE)
    cursor = entry.cursor
    if cursor < horizon:
        missed = _missed(spec, cursor, horizon)
        if missed is not None:
            first, last, count = missed
            events.append(
                ScheduleFireSkipped(
                    timestamp=now,
                    schedule_id=spec.id,
                    fire_time=first,
                    reason="missed",
                    count=count,
                    last_fire_time=last if count > 1 else None,
                )
            )
        cursor = horizon
    due = itertools.takewhile(lambda t: t <= now, fire_times(spec.cron, spec.timezone, cursor))
    for fire_time in itertools.islice(due, MAX_FIRES_PER_DECISION):
        if spec.overlap == "allow" or not running:
            events.append(_fired(entry, fire_time, fire_key(spec.id, fire_time), now))
            running = True
        elif spec.overlap == "buffer_one" and buffered is None:
            events.append(
                ScheduleFireBuffered(timestamp=now, schedule_id=spec.id, fire_time=fire_time)
            )
            buffered = fire_time
        else:
            events.append(
                ScheduleFireSkipped(
                    timestamp=now, schedule_id=spec.id, fire_time=fire_time, reason="overlap"
                )
            )
    return events


def _missed(
    spec: ScheduleSpec, cursor: datetime, horizon: datetime
) -> tuple[datetime, datetime, int] | None:
    """Return the first and last fire in (cursor, horizon] and how many (capped), or None."""
    first: datetime | None = None
    last: datetime | None = None
    count = 0
    for moment in fire_times(spec.cron, spec.timezone, cursor):
        if moment > horizon:
            break
        if first is None:
            first = moment
        last = moment
        count += 1
        if count >= MISSED_COUNT_CAP:
            # A long outage of a frequent schedule: the last missed fire comes from a
            # backward step instead of counting each one.
            last = _last_before(spec, horizon) or moment
            break
    if first is None or last is None:
        return None
    return first, last, count


def _last_before(spec: ScheduleSpec, horizon: datetime) -> datetime | None:
    try:
        sim = CronSim(
            spec.cron,
            (horizon + timedelta(seconds=1)).astimezone(zone(spec.timezone)),
            reverse=True,
        )
        return next(sim).astimezone(UTC)
    except (CronSimError, StopIteration, ValueError):
        return None
