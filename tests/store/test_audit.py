"""Import's checks beyond the chain: order of lines, runs held with other records, a file
that changes between its two readings."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from flowweaver.errors import ChainBrokenError, ConflictError, ValidationError
from flowweaver.ports import Append
from flowweaver.store.audit import export_run, import_runs, verify_run
from flowweaver.store.memory import MemoryEventStore
from flowweaver.testing.store_suite import completed_run


def _exported(count: int = 2) -> tuple[list[str], list[bytes]]:
    source = MemoryEventStore()
    run_ids = []
    for _ in range(count):
        state, events = completed_run(str(uuid.uuid4()))
        source.append([Append(run_id=state.id, expected_version=0, events=events)])
        run_ids.append(state.id)
    lines = b"".join(b"".join(export_run(source, r)) for r in run_ids).splitlines()
    return run_ids, lines


def test_a_file_changed_between_the_two_readings_stores_nothing_unverified() -> None:
    """Pass one reads a good file, pass two a tampered one: refused, nothing stored."""
    run_ids, lines = _exported(1)
    tampered = list(lines)
    tampered[3] = tampered[3].replace(b'"timestamp":"2', b'"timestamp":"3', 1)
    readings = iter([lines, tampered])
    target = MemoryEventStore()
    with pytest.raises(ChainBrokenError) as raised:
        import_runs(target, lambda: next(readings))
    assert raised.value.version == 4
    assert target.last_version(run_ids[0]) == 0


def test_lines_out_of_order_or_runs_split_are_refused_by_line() -> None:
    """A missing version, or a run whose lines come in two places, is a ValidationError
    naming the line; nothing is stored."""
    run_ids, lines = _exported(2)
    count = len(lines) // 2
    target = MemoryEventStore()
    skipped = lines[:2] + lines[3:]
    with pytest.raises(ValidationError) as raised:
        import_runs(target, lambda: skipped)
    assert raised.value.errors[0].path == "line 3"
    assert "version 4 follows 2" in raised.value.errors[0].message
    split = lines[:2] + lines[count:] + lines[2:count]
    with pytest.raises(ValidationError) as raised:
        import_runs(target, lambda: split)
    assert "appears again after other runs" in raised.value.errors[0].message
    assert [target.last_version(r) for r in run_ids] == [0, 0]


def test_a_run_held_with_other_records_is_a_conflict_and_nothing_is_stored() -> None:
    """The target holds one of the runs with other events: a ConflictError naming it, and
    the other run of the file is not stored either."""
    run_ids, lines = _exported(2)
    target = MemoryEventStore()
    other, events = completed_run(run_ids[1])
    target.append([Append(run_id=other.id, expected_version=0, events=events[:1])])
    # Same run id, same first event, but stored at another time: other bytes at version 2.
    later = msgspec.structs.replace(events[1], attempt=events[1].attempt + 5)
    target.append([Append(run_id=other.id, expected_version=1, events=[later])])
    with pytest.raises(ConflictError) as raised:
        import_runs(target, lambda: lines)
    assert f"run {run_ids[1]} is in the store with other records" in str(raised.value)
    assert "from version 2" in str(raised.value)
    assert target.last_version(run_ids[0]) == 0


def test_an_interrupted_import_is_finished_by_the_next() -> None:
    """A target holding the first versions of a run (an import cut short) gets the rest;
    the run then verifies with the source's head."""
    run_ids, lines = _exported(1)
    target = MemoryEventStore()
    first_half = lines[: len(lines) // 2]
    report = import_runs(target, lambda: first_half)
    assert report.runs == 1
    report = import_runs(target, lambda: lines)
    assert (report.runs, report.events) == (1, len(lines) - len(first_half))
    check = verify_run(target, run_ids[0])
    assert check.ok
    assert check.version == len(lines)
