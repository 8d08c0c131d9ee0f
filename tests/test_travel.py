"""Time travel on a real SQLite store: the version at an instant, and the diff of two versions."""

from __future__ import annotations

import bisect
import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowweaver.domain.events import ErrorInfo, RunEvent
from flowweaver.domain.run import (
    RunState,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    start_run,
)
from flowweaver.errors import NotFoundError, ValidationError
from flowweaver.ports import Append, RecordedEvent
from flowweaver.store import MemoryEventStore, SQLiteEventStore
from flowweaver.testing.runs import command_steps, simulate, task, workflow, workflow_specs
from flowweaver.travel import (
    diff_run,
    event_time,
    parse_instant,
    state_as_of,
    version_at,
)

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
FLAKY = ErrorInfo(type="IOError", message="flaky")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def known_run(run_id: str) -> tuple[RunState, list[RunEvent]]:
    """a -> b; b fails once and is retried. Versions and stamps (seconds after T0):

    1 RunStarted 0, 2 TaskScheduled a 0, 3 TaskStarted a 1, 4 TaskCompleted a 2,
    5 TaskScheduled b 2, 6 TaskStarted b 3, 7 TaskFailed b 4, 8 TaskRetried b 5,
    9 TaskStarted b 6, 10 TaskCompleted b 7, 11 RunCompleted 7.
    """
    spec = workflow(
        task("a"), task("b", "a", retry={"maxAttempts": 2, "initialDelay": 1.0, "jitter": 0})
    )
    state, events = start_run(run_id, spec, 1, {"p": 1}, at(0))
    events += record_started(state, "a", 1, "w1", at(1))
    events += record_completed(state, "a", 1, {"x": 1}, 5.0, at(2))
    events += record_started(state, "b", 1, "w2", at(3))
    events += record_failed(state, "b", 1, FLAKY, at(4))
    events += record_retry_due(state, "b", 1, at(5))
    events += record_started(state, "b", 2, "w1", at(6))
    events += record_completed(state, "b", 2, {"y": 2}, 5.0, at(7))
    assert len(events) == 11
    return state, events


@pytest.fixture
def store(tmp_path: Path) -> Any:
    made = SQLiteEventStore(str(tmp_path / "travel.db"), snapshot_interval=4)
    yield made
    made.close()


@pytest.fixture
def run_id(store: SQLiteEventStore) -> str:
    run_id = str(uuid.uuid4())
    _, events = known_run(run_id)
    store.append([Append(run_id, 0, events[:6]), Append(run_id, 6, events[6:])])
    store.run_state(run_id)  # a full read saves the snapshots at 4 and 8
    return run_id


# --- the version at an instant --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "version"),
    [
        (0, 2),  # both events stamped at the run's first instant
        (0.5, 2),
        (1, 3),
        (2 - 1e-6, 3),  # a microsecond before an event: not included
        (2, 5),  # an instant equal to an event's stamp includes it (and its twin)
        (4.999999, 7),
        (7, 11),  # the last instant is the head
        (3600, 11),  # after the last event: the head
    ],
)
def test_version_at_an_instant(
    store: SQLiteEventStore, run_id: str, seconds: float, version: int
) -> None:
    """The version is that of the last event stamped at or before the instant."""
    assert version_at(store, run_id, at(seconds)) == version


def test_before_the_run_began_is_version_zero(store: SQLiteEventStore, run_id: str) -> None:
    """An instant before the first event has no state: version 0, and state_as_of None."""
    assert version_at(store, run_id, at(-1e-6)) == 0
    assert state_as_of(store, run_id, at(-1)) is None


def test_state_as_of_is_the_state_at_that_version(store: SQLiteEventStore, run_id: str) -> None:
    """state_as_of folds to the version found, from the nearest snapshot."""
    for seconds, version in ((0, 2), (4.5, 7), (100, 11)):
        state = state_as_of(store, run_id, at(seconds))
        assert state is not None
        assert state == store.run_state(run_id, at=version)
        assert state.version == version
    mid = state_as_of(store, run_id, at(4.5))
    assert mid is not None
    assert mid.tasks["b"].status == "waiting_retry"


def test_unknown_run_is_not_found(store: SQLiteEventStore) -> None:
    """No event for the id: NotFoundError, whatever the instant."""
    with pytest.raises(NotFoundError):
        version_at(store, str(uuid.uuid4()), at(0))
    with pytest.raises(NotFoundError):
        version_at(store, "not-a-uuid", at(0))


class CountingReader:
    """A store whose point reads are counted."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.reads = 0

    def read_run(self, run_id: str, **kw: Any) -> list[RecordedEvent]:
        self.reads += 1
        return self.store.read_run(run_id, **kw)


def test_bisection_matches_a_linear_scan_in_log_reads(store: SQLiteEventStore) -> None:
    """On a run of 700 events, some sharing a stamp, every instant finds what a scan finds,
    with O(log n) point reads."""
    run_id = str(uuid.uuid4())
    spec = workflow(*(task(f"t{i}") for i in range(230)))
    state, events = start_run(run_id, spec, 1, {}, at(0))
    for i in range(230):
        events += record_started(state, f"t{i}", 1, "w", at(i + 1))
        events += record_completed(state, f"t{i}", 1, None, 1.0, at(i + 1.5))
    store.append([Append(run_id, 0, events)])
    stamps = [event_time(rec) for rec in store.read_run(run_id)]
    assert stamps == [e.timestamp for e in events]
    reader = CountingReader(store)
    worst = 0
    for seconds in [x / 4 for x in range(-2, 4 * 232)]:
        instant = at(seconds)
        reader.reads = 0
        assert version_at(reader, run_id, instant) == bisect.bisect_right(stamps, instant)  # type: ignore[arg-type]
        worst = max(worst, reader.reads)
    assert worst <= 2 * math.ceil(math.log2(len(events))) + 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T09:00:00Z", T0),
        ("2026-01-05t09:00:00z", T0),
        ("2026-01-05T11:00:00+02:00", T0),
        ("2026-01-05T11:00:00 02:00", T0),  # a query string's + read as a space
        ("2026-01-05T09:00:00.0000009Z", T0),  # cut to the microsecond, never rounded up
        ("2026-01-05T09:00:00.1234567Z", T0 + timedelta(microseconds=123456)),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    """RFC 3339 with an offset is read; a space before the offset is its +."""
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-01-05T09:00:00", "no UTC offset"),
        ("yesterday", "not an RFC 3339 timestamp"),
        ("2026-13-05T09:00:00Z", "not an RFC 3339 timestamp"),
        ("", "not an RFC 3339 timestamp"),
    ],
)
def test_parse_instant_refuses(text: str, why: str) -> None:
    """Anything else is a ValueError that says why."""
    with pytest.raises(ValueError, match=why):
        parse_instant(text)


# --- the diff of two versions ---------------------------------------------------------------


def test_diff_lists_changed_run_and_task_fields_and_the_events(
    store: SQLiteEventStore, run_id: str
) -> None:
    """From 4 (a completed) to 8 (b retried): b's fields, the run's version, events 5..8."""
    found = diff_run(store, run_id, 4, 8)
    assert (found.start, found.end, found.truncated, found.next_after) == (4, 8, False, None)
    assert found.changes.run == {
        "version": (4, 8),
        "updatedAt": ("2026-01-05T09:00:02Z", "2026-01-05T09:00:05Z"),
    }
    assert list(found.changes.tasks) == ["b"]
    b = found.changes.tasks["b"]
    assert b["status"] == ("pending", "scheduled")
    assert b["attempts"] == (0, 2)
    error = {"type": "IOError", "message": "flaky", "retryable": True, "traceback": None}
    assert b["lastError"] == (None, error)
    assert b["worker"] == (None, "w2")
    assert b["inputs"] == (None, {})
    assert "waitingFor" not in b  # the fold's bookkeeping is not shown
    assert [rec.version for rec in found.events] == [5, 6, 7, 8]
    assert [rec.name for rec in found.events] == [
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "TaskRetried",
    ]


def test_diff_from_zero_shows_the_whole_run(store: SQLiteEventStore, run_id: str) -> None:
    """From 0 (before the first event) every field the run set is a change."""
    found = diff_run(store, run_id, 0, 11)
    assert found.changes.run["status"] == ("pending", "completed")
    assert found.changes.run["workflowId"] == ("", "wf")
    assert found.changes.run["parameters"] == ({}, {"p": 1})
    assert found.changes.tasks["a"]["output"] == (None, {"result": {"x": 1}})
    assert len(found.events) == 11


def test_diff_of_a_version_with_itself_is_empty(store: SQLiteEventStore, run_id: str) -> None:
    """from == to: no change and no event."""
    found = diff_run(store, run_id, 7, 7)
    assert found.changes.empty
    assert found.events == []
    assert not found.truncated


def test_diff_caps_the_events_and_says_where_to_page_on(
    store: SQLiteEventStore, run_id: str
) -> None:
    """Past the limit the events are cut: truncated, and next_after is the last one listed."""
    found = diff_run(store, run_id, 1, 11, limit=3)
    assert [rec.version for rec in found.events] == [2, 3, 4]
    assert found.truncated
    assert found.next_after == 4
    assert found.changes.run["status"] == ("running", "completed")  # the diff itself is whole


@pytest.mark.parametrize(
    ("start", "end", "path"),
    [(5, 4, "$.query.to"), (0, 12, "$.query.to"), (-1, 3, "$.query.from")],
)
def test_diff_refuses_a_bad_range(
    store: SQLiteEventStore, run_id: str, start: int, end: int, path: str
) -> None:
    """0 <= from <= to <= head, else a ValidationError at the parameter."""
    with pytest.raises(ValidationError) as caught:
        diff_run(store, run_id, start, end)
    assert caught.value.errors[0].path == path


def test_diff_of_an_unknown_run_is_not_found(store: SQLiteEventStore) -> None:
    """No such run: NotFoundError."""
    with pytest.raises(NotFoundError):
        diff_run(store, str(uuid.uuid4()), 0, 1)


@given(workflow_specs(), command_steps, st.lists(st.floats(-2, 70), min_size=1, max_size=8))
def test_version_at_is_a_bisection_of_the_stamps_on_any_run(
    spec: Any, steps: list[tuple[int, int]], offsets: list[float]
) -> None:
    """On any simulated run (many events sharing a stamp), every instant finds the version a
    scan of the stamps finds, and the state there is the fold of that prefix."""
    run_id = str(uuid.uuid4())
    simulated = simulate(spec, steps, run_id=run_id)
    events = simulated.events
    store = MemoryEventStore()
    store.append([Append(run_id, 0, events)])
    stamps = [event.timestamp for event in events]
    for seconds in offsets:
        instant = simulated.checkpoints[0][1].created_at + timedelta(seconds=seconds)  # type: ignore[operator]
        expected = bisect.bisect_right(stamps, instant)
        assert version_at(store, run_id, instant) == expected
        state = state_as_of(store, run_id, instant)
        assert (state.version if state else 0) == expected
