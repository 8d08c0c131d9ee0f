"""The scheduler on real stores (memory and a SQLite file) with a fake clock: one run per
fire, overlap policies, catch-up after a restart, pause, resume and trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowweaver.domain.ids import run_id_for_key
from flowweaver.domain.schedule import ScheduleFired, ScheduleFireSkipped, ScheduleSpec
from flowweaver.engine import Engine
from flowweaver.engine.scheduler import Scheduler
from flowweaver.handlers import HandlerRegistry
from flowweaver.observability import metrics
from flowweaver.ports import EventStore
from flowweaver.store import SQLiteEventStore
from flowweaver.testing.fakes import FakeClock

from .conftest import EngineFactory, Gate

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOOP = {"id": "nightly", "tasks": [{"id": "t", "handler": "noop"}]}
GATED = {"id": "gated", "tasks": [{"id": "t", "handler": "gate"}]}


def fires_counted(schedule_id: str, decision: str) -> float:
    """The flowweaver_schedule_fires counter of one schedule and decision (0 if never set)."""
    value = metrics.registry.get_sample_value(
        "flowweaver_schedule_fires_total", {"schedule": schedule_id, "decision": decision}
    )
    return value or 0.0


def scheduler(engine: Engine, clock: FakeClock) -> Scheduler:
    return Scheduler(engine, clock=clock)


def fired(store: EventStore) -> list[ScheduleFired]:
    assert hasattr(store, "schedule_events")
    return [e for e in store.schedule_events() if isinstance(e, ScheduleFired)]


def test_each_fire_starts_one_run_with_its_key(engine: Engine) -> None:
    """A due fire starts a run whose id comes from schedule:<id>:<fire time>; a repeat does not."""
    engine.register_workflow(NOOP)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(
        ScheduleSpec(
            id="every-minute", workflow_id="nightly", cron="* * * * *", parameters={"a": 1}
        ),
        by="ann",
    )
    assert sched.tick() == 0  # nothing due yet
    clock.set(T0 + timedelta(minutes=1))
    assert sched.tick() == 1
    key = "schedule:every-minute:2026-06-01T12:01:00Z"
    run_id = run_id_for_key("nightly", key)
    state = engine.wait_run_finished(run_id, timeout=10)
    assert state.status == "completed"
    assert state.parameters == {"a": 1}
    assert sched.tick() == 0
    assert [f.run_id for f in fired(engine.store)] == [run_id]


def test_overlap_skip_records_fires_while_the_run_runs(engine: Engine, gate: Gate) -> None:
    """Under skip, fires while the schedule's run is running are recorded as skipped."""
    engine.register_workflow(GATED)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(ScheduleSpec(id="s", workflow_id="gated", cron="* * * * *"), by="ann")
    before = fires_counted("s", "fired"), fires_counted("s", "overlap")
    clock.set(T0 + timedelta(minutes=1))
    sched.tick()
    assert gate.entered.wait(10)
    clock.set(T0 + timedelta(minutes=2))
    sched.tick()
    assert (fires_counted("s", "fired"), fires_counted("s", "overlap")) == (
        before[0] + 1,
        before[1] + 1,
    )
    skipped = [e for e in engine.store.schedule_events() if isinstance(e, ScheduleFireSkipped)]  # type: ignore[attr-defined]
    assert [(e.reason, e.fire_time) for e in skipped] == [("overlap", T0 + timedelta(minutes=2))]
    gate.opened.set()
    engine.wait_run_finished(fired(engine.store)[0].run_id, timeout=10)
    clock.set(T0 + timedelta(minutes=3))
    sched.tick()
    assert len(fired(engine.store)) == 2


def test_buffer_one_starts_the_kept_fire_when_the_run_ends(engine: Engine, gate: Gate) -> None:
    """Under buffer_one, one fire waits and starts once the running run has ended."""
    engine.register_workflow(GATED)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(
        ScheduleSpec(id="s", workflow_id="gated", cron="* * * * *", overlap="buffer_one"),
        by="ann",
    )
    clock.set(T0 + timedelta(minutes=1))
    sched.tick()
    assert gate.entered.wait(10)
    clock.set(T0 + timedelta(minutes=2))
    sched.tick()
    assert sched.registry.get("s").buffered == T0 + timedelta(minutes=2)
    gate.opened.set()
    engine.wait_run_finished(fired(engine.store)[0].run_id, timeout=10)
    sched.tick()
    times = [f.fire_time for f in fired(engine.store)]
    assert times == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]
    engine.wait_run_finished(fired(engine.store)[1].run_id, timeout=10)


def test_allow_starts_every_fire(engine: Engine, gate: Gate) -> None:
    """Under allow, fires start runs whatever runs."""
    engine.register_workflow(GATED)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(
        ScheduleSpec(id="s", workflow_id="gated", cron="* * * * *", overlap="allow"), by="ann"
    )
    clock.set(T0 + timedelta(minutes=2))
    sched.tick()
    assert len(fired(engine.store)) == 2
    gate.opened.set()
    for fire in fired(engine.store):
        engine.wait_run_finished(fire.run_id, timeout=10)


def test_pause_resume_and_trigger(engine: Engine) -> None:
    """A paused schedule does not fire; trigger fires at once; resumed, it fires from then."""
    engine.register_workflow(NOOP)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(ScheduleSpec(id="s", workflow_id="nightly", cron="* * * * *"), by="ann")
    sched.registry.pause("s", by="ann")
    clock.set(T0 + timedelta(minutes=5))
    assert sched.tick() == 0
    trigger = sched.registry.trigger("s", by="ann")
    assert trigger.idempotency_key == "schedule:s:trigger:2026-06-01T12:05:00Z"
    sched.tick()  # the scheduler starts a recorded fire whose run is missing
    engine.wait_run_finished(trigger.run_id, timeout=10)
    sched.registry.resume("s", by="ann")
    clock.set(T0 + timedelta(minutes=6))
    sched.tick()
    assert [f.fire_time for f in fired(engine.store)] == [T0 + timedelta(minutes=5)] * 1 + [
        T0 + timedelta(minutes=6)
    ]


def test_a_restart_catches_up_inside_the_window_and_records_the_rest(
    tmp_path: Path, registry: HandlerRegistry
) -> None:
    """Fires missed while down run if inside catchupWindow; older ones are one skipped event."""
    path = str(tmp_path / "restart.db")
    clock = FakeClock(T0)
    with Engine(SQLiteEventStore(path), owns_store=True, handlers=registry) as engine:
        engine.register_workflow(NOOP)
        sched = scheduler(engine, clock)
        sched.registry.put(
            ScheduleSpec(
                id="s", workflow_id="nightly", cron="* * * * *", catchup_window=180, overlap="allow"
            ),
            by="ann",
        )
        clock.set(T0 + timedelta(minutes=1))
        sched.tick()
        engine.wait_run_finished(fired(engine.store)[0].run_id, timeout=10)
    clock.set(T0 + timedelta(minutes=10, seconds=30))  # down for nine and a half minutes
    with Engine(SQLiteEventStore(path), owns_store=True, handlers=registry) as engine:
        sched = scheduler(engine, clock)
        missed, started = fires_counted("s", "missed"), fires_counted("s", "fired")
        sched.tick()
        # the six missed fires are one event, counted six times; three fires inside the window
        assert fires_counted("s", "missed") == missed + 6
        assert fires_counted("s", "fired") == started + 3
        events = engine.store.schedule_events()  # type: ignore[attr-defined]
        skipped = [e for e in events if isinstance(e, ScheduleFireSkipped)]
        assert [(e.reason, e.fire_time, e.last_fire_time, e.count) for e in skipped] == [
            ("missed", T0 + timedelta(minutes=2), T0 + timedelta(minutes=7), 6)
        ]
        times = [f.fire_time for f in fired(engine.store)]
        assert times == [T0 + timedelta(minutes=m) for m in (1, 8, 9, 10)]
        for fire in fired(engine.store):
            assert engine.wait_run_finished(fire.run_id, timeout=10).status == "completed"


def test_a_fire_recorded_before_a_crash_gets_its_run_on_restart(
    make_engine: EngineFactory,
) -> None:
    """A ScheduleFired whose run never started (a crash between) is started by the next leader."""
    engine = make_engine()
    engine.register_workflow(NOOP)
    clock = FakeClock(T0)
    sched = scheduler(engine, clock)
    sched.registry.put(ScheduleSpec(id="s", workflow_id="nightly", cron="0 0 1 1 *"), by="ann")
    fire = sched.registry.trigger("s", by="ann")  # recorded, not started
    assert engine.store.read_run(fire.run_id) == []
    other = scheduler(engine, clock)
    other.tick()
    assert engine.wait_run_finished(fire.run_id, timeout=10).status == "completed"
    other.tick()
    assert len(engine.store.read_run(fire.run_id, upto=1)) == 1


def test_only_the_lease_holder_fires(make_engine: EngineFactory, store: EventStore) -> None:
    """Two schedulers on shared leases: only the one holding the scheduler lease decides."""
    from flowweaver.testing.fakes import FakeLeases, LeaseTable  # noqa: PLC0415

    table = LeaseTable()
    first = make_engine(leases=FakeLeases(table, "a"), node="a")
    second = make_engine(leases=FakeLeases(table, "b"), node="b", recover=False)
    first.register_workflow(NOOP)
    clock = FakeClock(T0)
    a, b = scheduler(first, clock), scheduler(second, clock)
    a.registry.put(
        ScheduleSpec(id="s", workflow_id="nightly", cron="* * * * * *", overlap="allow"), by="ann"
    )
    for _ in range(5):
        clock.advance(1)
        b.tick()
        a.tick()
    assert b.leader and not a.leader  # b asked first
    assert metrics.registry.get_sample_value("flowweaver_scheduler_leader") == 0  # a asked last
    b.tick()
    assert metrics.registry.get_sample_value("flowweaver_scheduler_leader") == 1
    times = [f.fire_time for f in fired(store)]
    assert times == [T0 + timedelta(seconds=s) for s in range(1, 6)]
    for fire in fired(store):
        first.wait_run_finished(fire.run_id, timeout=10)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (datetime(2026, 3, 28, 22, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (datetime(2026, 10, 24, 21, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_a_daily_0230_in_berlin_fires_once_on_each_dst_day(
    engine: Engine, start: datetime, expected: datetime
) -> None:
    """Rounds every 5 minutes through a DST change day: the 02:30 job fires exactly once."""
    engine.register_workflow(NOOP)
    clock = FakeClock(start)
    sched = scheduler(engine, clock)
    sched.registry.put(
        ScheduleSpec(
            id="berlin",
            workflow_id="nightly",
            cron="30 2 * * *",
            timezone="Europe/Berlin",
            catchup_window=3600,
        ),
        by="ann",
    )
    for _ in range(24 * 12):  # the whole local day and more, a round every 5 minutes
        clock.advance(300)
        sched.tick()
        if clock.now() == datetime(2026, 10, 25, 1, 15, tzinfo=UTC):
            sched.registry.pause("berlin", by="ann")  # and resumed inside the repeated hour
            sched.registry.resume("berlin", by="ann")
    times = [f.fire_time for f in fired(engine.store)]
    assert times == [expected]
    engine.wait_run_finished(fired(engine.store)[0].run_id, timeout=10)
