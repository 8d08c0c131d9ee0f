"""Schedules in the domain: cron fire times in zones, DST, overlap decisions, catch-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowweaver.domain.ids import run_id_for_key
from flowweaver.domain.schedule import (
    AnyScheduleEvent,
    ScheduleCreated,
    ScheduleFireBuffered,
    ScheduleFired,
    ScheduleFireSkipped,
    Schedules,
    ScheduleSpec,
    apply_schedule_event,
    decide_fires,
    fire_key,
    next_fire_times,
    pause_schedule,
    put_schedule,
    resume_schedule,
    trigger_schedule,
)
from flowweaver.errors import NotFoundError, ValidationError

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def made(spec: ScheduleSpec, now: datetime = T0) -> Schedules:
    state = Schedules()
    for event in put_schedule(state, spec, paused=None, by="ann", now=now):
        apply_schedule_event(state, event)
    return state


def fold(state: Schedules, events: list[AnyScheduleEvent]) -> Schedules:
    for event in events:
        apply_schedule_event(state, event)
    return state


def test_next_fire_times_are_in_the_zone_and_strictly_after() -> None:
    """Fire times come in UTC, each strictly after the given moment, in the schedule's zone."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="0 9 * * *", timezone="Europe/Berlin")
    times = next_fire_times(spec, utc(2026, 6, 1, 7, 0), 2)
    assert times == [utc(2026, 6, 2, 7, 0), utc(2026, 6, 3, 7, 0)]  # 09:00 CEST


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        # Spring forward: 02:30 does not exist; it fires once, at 03:00 CEST (01:00 UTC).
        (datetime(2026, 3, 28, 12, tzinfo=UTC), utc(2026, 3, 29, 1, 0)),
        # Fall back: 02:30 happens twice; it fires once, at the first (00:30 UTC).
        (datetime(2026, 10, 24, 12, tzinfo=UTC), utc(2026, 10, 25, 0, 30)),
    ],
)
def test_a_daily_0230_in_berlin_fires_once_on_dst_days(day: datetime, expected: datetime) -> None:
    """On both DST change days a daily 02:30 job in Europe/Berlin fires exactly once."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="30 2 * * *", timezone="Europe/Berlin")
    times = next_fire_times(spec, day, 3)
    assert times[0] == expected
    on_the_day = [t for t in times if t.astimezone(UTC).date() == expected.date()]
    assert on_the_day == [expected]
    assert times[1] - times[0] >= timedelta(hours=23)


def test_six_fields_fire_every_second() -> None:
    """A 6-field expression has seconds first."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="* * * * * *")
    assert next_fire_times(spec, T0, 2) == [T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"cron": "61 * * * *"}, "$.cron"),
        ({"cron": "not cron"}, "$.cron"),
        ({"cron": "0 0 30 2 *"}, "$.cron"),
        ({"timezone": "Mars/Olympus"}, "$.timezone"),
        ({"timezone": "../etc/passwd"}, "$.timezone"),
        ({"catchup_window": -1.0}, "$.catchupWindow"),
        ({"overlap": "queue"}, "$.overlap"),
        ({"id": "bad id"}, "$.id"),
    ],
)
def test_bad_definitions_are_refused_with_their_path(changes: dict[str, object], path: str) -> None:
    """A bad cron, zone, window, overlap or id is a ValidationError naming its field."""
    fields: dict[str, object] = {"id": "s", "workflow_id": "w", "cron": "* * * * *"} | changes
    spec = ScheduleSpec(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as caught:
        put_schedule(Schedules(), spec, paused=None, by="ann", now=T0)
    assert path in [e.path for e in caught.value.errors]


def test_put_again_updates_or_changes_nothing() -> None:
    """The same definition records nothing; another one is ScheduleUpdated, a new version."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="* * * * *")
    state = made(spec)
    assert put_schedule(state, spec, paused=None, by="ann", now=T0) == []
    changed = ScheduleSpec(id="s", workflow_id="w", cron="*/5 * * * *")
    fold(state, put_schedule(state, changed, paused=None, by="ann", now=T0))
    assert state.by_id["s"].version == 2
    assert state.by_id["s"].definition.cron == "*/5 * * * *"


def test_due_fires_fire_with_one_key_each() -> None:
    """Each due fire is ScheduleFired with the key schedule:<id>:<UTC time> and its run id."""
    state = made(ScheduleSpec(id="s", workflow_id="w", cron="* * * * *", overlap="allow"))
    events = decide_fires(state.by_id["s"], T0 + timedelta(minutes=2), previous_running=False)
    assert [type(e) for e in events] == [ScheduleFired, ScheduleFired]
    first = events[0]
    assert isinstance(first, ScheduleFired)
    assert (
        first.idempotency_key == "schedule:s:2026-06-01T12:01:00Z" == fire_key("s", first.fire_time)
    )
    assert first.run_id == run_id_for_key("w", first.idempotency_key)
    fold(state, events)
    assert decide_fires(state.by_id["s"], T0 + timedelta(minutes=2), previous_running=True) == []


def test_overlap_skip_records_the_fire_as_skipped() -> None:
    """Under skip, a fire while the schedule's run is running is ScheduleFireSkipped(overlap)."""
    state = made(ScheduleSpec(id="s", workflow_id="w", cron="* * * * *"))
    events = decide_fires(state.by_id["s"], T0 + timedelta(minutes=2), previous_running=False)
    assert [type(e) for e in events] == [ScheduleFired, ScheduleFireSkipped]
    assert isinstance(events[1], ScheduleFireSkipped)
    assert events[1].reason == "overlap"
    fold(state, events)
    later = decide_fires(state.by_id["s"], T0 + timedelta(minutes=3), previous_running=True)
    assert [(type(e), getattr(e, "reason", None)) for e in later] == [
        (ScheduleFireSkipped, "overlap")
    ]


def test_buffer_one_keeps_one_fire_and_starts_it_when_the_run_ends() -> None:
    """Under buffer_one, one fire waits for the running run; later ones are skipped."""
    state = made(
        ScheduleSpec(
            id="s", workflow_id="w", cron="* * * * *", overlap="buffer_one", catchup_window=600
        )
    )
    events = decide_fires(state.by_id["s"], T0 + timedelta(minutes=3), previous_running=False)
    assert [type(e) for e in events] == [ScheduleFired, ScheduleFireBuffered, ScheduleFireSkipped]
    fold(state, events)
    assert state.by_id["s"].buffered == T0 + timedelta(minutes=2)
    assert decide_fires(state.by_id["s"], T0 + timedelta(minutes=3), previous_running=True) == []
    ended = decide_fires(state.by_id["s"], T0 + timedelta(minutes=3), previous_running=False)
    assert len(ended) == 1
    assert isinstance(ended[0], ScheduleFired)
    assert ended[0].fire_time == T0 + timedelta(minutes=2)
    fold(state, ended)
    assert state.by_id["s"].buffered is None


def test_fires_past_the_catchup_window_are_recorded_missed_in_one_event() -> None:
    """After an outage, fires older than catchupWindow are one missed event; the rest run."""
    spec = ScheduleSpec(
        id="s", workflow_id="w", cron="* * * * *", catchup_window=150, overlap="allow"
    )
    state = made(spec)
    now = T0 + timedelta(minutes=10, seconds=30)
    events = decide_fires(state.by_id["s"], now, previous_running=False)
    skipped = events[0]
    assert isinstance(skipped, ScheduleFireSkipped)
    assert (skipped.reason, skipped.count) == ("missed", 7)
    assert skipped.fire_time == T0 + timedelta(minutes=1)
    assert skipped.last_fire_time == T0 + timedelta(minutes=7)
    assert [e.fire_time for e in events[1:] if isinstance(e, ScheduleFired)] == [
        T0 + timedelta(minutes=8),
        T0 + timedelta(minutes=9),
        T0 + timedelta(minutes=10),
    ]
    fold(state, events)
    assert state.by_id["s"].skipped == 7
    assert decide_fires(state.by_id["s"], now, previous_running=False) == []


def test_paused_schedules_do_not_fire_and_resume_from_now() -> None:
    """A paused schedule decides nothing; resumed, fires while paused are not run."""
    state = made(ScheduleSpec(id="s", workflow_id="w", cron="* * * * *"))
    paused = pause_schedule(state, "s", by="ann", now=T0)
    assert paused is not None
    fold(state, [paused])
    assert pause_schedule(state, "s", by="ann", now=T0) is None
    assert decide_fires(state.by_id["s"], T0 + timedelta(minutes=5), previous_running=False) == []
    resumed = resume_schedule(state, "s", by="ann", now=T0 + timedelta(minutes=5))
    assert resumed is not None
    fold(state, [resumed])
    events = decide_fires(state.by_id["s"], T0 + timedelta(minutes=6), previous_running=False)
    assert [e.fire_time for e in events if isinstance(e, ScheduleFired)] == [
        T0 + timedelta(minutes=6)
    ]


def test_trigger_fires_now_with_its_own_key() -> None:
    """A trigger is a manual fire now, with a key apart from every cron fire's."""
    state = made(ScheduleSpec(id="s", workflow_id="w", cron="0 0 1 1 *"))
    fired = trigger_schedule(state, "s", by="ann", now=T0)
    assert fired.manual
    assert fired.idempotency_key == "schedule:s:trigger:2026-06-01T12:00:00Z"
    fold(state, [fired])
    assert state.by_id["s"].cursor == T0  # a trigger does not move the cron's cursor
    with pytest.raises(NotFoundError):
        trigger_schedule(state, "nope", by="ann", now=T0)


def test_created_events_carry_the_definition() -> None:
    """ScheduleCreated records the whole definition and who made it."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="* * * * *", parameters={"a": 1})
    events = put_schedule(Schedules(), spec, paused=True, by="ann", now=T0)
    assert events == [
        ScheduleCreated(timestamp=T0, schedule_id="s", definition=spec, paused=True, by="ann")
    ]


def test_a_cursor_in_the_repeated_hour_does_not_fire_the_first_pass_again() -> None:
    """From 02:15 of the second pass on the fall-back day, the next 02:30 is the next day's."""
    spec = ScheduleSpec(id="s", workflow_id="w", cron="30 2 * * *", timezone="Europe/Berlin")
    second_pass = utc(2026, 10, 25, 1, 15)  # 02:15 CET, after 02:30 CEST (00:30 UTC) fired
    assert next_fire_times(spec, second_pass, 1) == [utc(2026, 10, 26, 1, 30)]
