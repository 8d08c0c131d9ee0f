"""Time travel over a store's log: a run's version at an instant, and what changed between two.

Both read the store, never an actor, and both stay fast on long runs:

- :func:`version_at` finds the last event stamped at or before an instant by galloping then
  binary search over the run's versions, one point read per probe: O(log n) reads of one
  event each, and only each event's timestamp is decoded. It is right because a run's
  timestamps never go backwards (the engine stamps each event with the later of its clock and
  the run's last event, see :mod:`flowweaver.engine.stamps`).
- :func:`diff_run` folds the state at each end from its nearest snapshot (``run_state(at=)``)
  and compares them (:mod:`flowweaver.domain.diff`); the events between are capped, so a diff
  over a hundred thousand events answers in bounded memory.

Used by the API (``GET /runs/{id}?asOf=``, ``GET /runs/{id}/diff``) and the CLI
(``flowweaver replay --as-of``, ``flowweaver diff``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Protocol

import msgspec

from flowweaver.domain.diff import StateDiff, diff_states
from flowweaver.domain.run import RunState, new_state
from flowweaver.errors import FieldError, NotFoundError, ValidationError
from flowweaver.ports import LogReader, RecordedEvent, RunReader

MAX_DIFF_EVENTS = 1000
"""The most events one diff lists; past it the answer says where to page on from."""


class TravelReader(LogReader, RunReader, Protocol):
    """What time travel reads: a run's events and its folded state."""


class _Stamp(msgspec.Struct):
    timestamp: datetime


_stamp_decoder = msgspec.json.Decoder(_Stamp)
_OFFSET_AFTER_SPACE = re.compile(r" (?=\d{2}:\d{2}$)")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_instant(text: str) -> datetime:
    """Return the instant an RFC 3339 timestamp names, with its UTC offset (``Z`` or ``±hh:mm``).

    A ``+`` that a query string turned into a space is read as ``+``. Digits past the
    microsecond are cut off, not rounded, so the instant never moves past the one written.

    Raises:
        ValueError: not an RFC 3339 timestamp with an offset; the message says why.
    """
    cleaned = _LONG_FRACTION.sub(r"\1", _OFFSET_AFTER_SPACE.sub("+", text.strip()), count=1)
    try:
        instant = msgspec.convert(cleaned, datetime)
    except msgspec.ValidationError:
        raise ValueError(
            f"not an RFC 3339 timestamp: {text[:64]!r} (e.g. 2026-01-31T09:30:00Z)"
        ) from None
    if instant.tzinfo is None:
        raise ValueError(
            f"{text[:64]!r} has no UTC offset: end it with Z or an offset such as +02:00"
        )
    return instant


def event_time(rec: RecordedEvent) -> datetime:
    """Return a stored event's timestamp, decoding nothing else of it."""
    return _stamp_decoder.decode(rec.current_raw).timestamp


def _time_of(reader: LogReader, run_id: str, version: int) -> datetime | None:
    """Return the timestamp of the run's event ``version``, None when it has none."""
    found = reader.read_run(run_id, after=version - 1, upto=version)
    return event_time(found[0]) if found else None


def version_at(reader: LogReader, run_id: str, instant: datetime) -> int:
    """Return the run's version as of ``instant``: its last event stamped at or before it.

    0 when the run's first event is later than ``instant``. An instant equal to an event's
    timestamp includes that event (and any others stamped the same).

    Raises:
        NotFoundError: no such run.
    """
    first = _time_of(reader, run_id, 1)
    if first is None:
        raise NotFoundError("run", run_id)
    if first > instant:
        return 0
    # Gallop: double the step until an event is later than the instant or missing. The
    # answer is then in [low, high): low is at or before the instant, high is not.
    low, step = 1, 1
    while True:
        probe = low + step
        stamped = _time_of(reader, run_id, probe)
        if stamped is None or stamped > instant:
            high = probe
            break
        low = probe
        step *= 2
    while high - low > 1:
        middle = (low + high) // 2
        stamped = _time_of(reader, run_id, middle)
        if stamped is not None and stamped <= instant:
            low = middle
        else:
            high = middle
    return low


def state_as_of(reader: TravelReader, run_id: str, instant: datetime) -> RunState | None:
    """Return the run's state after its last event stamped at or before ``instant``.

    None when the run began after ``instant``.

    Raises:
        NotFoundError: no such run.
    """
    version = version_at(reader, run_id, instant)
    if version == 0:
        return None
    state = reader.run_state(run_id, at=version)
    if state is None:  # pragma: no cover - the run's events were found a moment ago
        raise NotFoundError("run", run_id)
    return state


class RunDiff(msgspec.Struct, frozen=True, kw_only=True):
    """What changed in a run from version ``start`` to ``end``, and the events between.

    ``events`` holds events ``start + 1`` on, at most ``limit`` of them: ``truncated`` says
    some were left out, and ``next_after`` is the version to page on from with
    ``GET /runs/{id}/events?after=`` (None when every event is listed).
    """

    run_id: str
    start: int
    end: int
    changes: StateDiff
    events: list[RecordedEvent]
    truncated: bool
    next_after: int | None


def diff_run(
    reader: TravelReader, run_id: str, start: int, end: int, *, limit: int = MAX_DIFF_EVENTS
) -> RunDiff:
    """Compare the run's state at version ``start`` with its state at ``end``.

    Raises:
        NotFoundError: no such run.
        ValidationError: not ``0 <= start <= end <= the run's last version`` (paths
            ``$.query.from`` and ``$.query.to``).
    """
    if start < 0:
        raise ValidationError([FieldError("$.query.from", f"must be at least 0, not {start}")])
    if end < start:
        raise ValidationError(
            [FieldError("$.query.to", f"must be at least from ({start}), not {end}")]
        )
    newer = reader.run_state(run_id, at=end if end else 1)
    if newer is None:
        raise NotFoundError("run", run_id)
    if newer.version < end:
        raise ValidationError(
            [FieldError("$.query.to", f"the run has {newer.version} events; to is {end}")]
        )
    if end == 0:
        newer = new_state(run_id)
    older = new_state(run_id) if start == 0 else reader.run_state(run_id, at=start)
    assert older is not None  # the run has `end` >= `start` events
    events = reader.read_run(run_id, after=start, upto=end, limit=limit) if end > start else []
    truncated = end - start > len(events)
    return RunDiff(
        run_id=run_id,
        start=start,
        end=end,
        changes=diff_states(older, newer),
        events=events,
        truncated=truncated,
        next_after=events[-1].version if truncated and events else None,
    )
