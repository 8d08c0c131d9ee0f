"""Tampering with a SQLite file behind the store's back is caught at the version touched."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowweaver.ports import Append
from flowweaver.store.audit import verify_run
from flowweaver.store.chain import ChainCheck
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.testing.store_suite import completed_run

WHERE = "WHERE originator_id=? AND originator_version=?"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    made = SQLiteEventStore(str(tmp_path / "events.db"))
    yield made
    made.close()


def _stored_run(store: SQLiteEventStore) -> tuple[str, int]:
    """Store a completed run in three appends; return its id and last version."""
    state, events = completed_run(str(uuid.uuid4()))
    for start, stop in ((0, 4), (4, 5), (5, len(events))):
        store.append([Append(run_id=state.id, expected_version=start, events=events[start:stop])])
    return state.id, len(events)


def _state(store: SQLiteEventStore, run_id: str, version: int) -> bytes:
    with sqlite3.connect(store.path) as db:
        (state,) = db.execute(
            f"SELECT state FROM fw_events {WHERE}", (uuid.UUID(run_id).hex, version)
        ).fetchone()
    return bytes(state)


def _write(store: SQLiteEventStore, run_id: str, version: int, state: bytes) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute(f"UPDATE fw_events SET state=? {WHERE}", (state, uuid.UUID(run_id).hex, version))


def _flip(data: bytes, at: int) -> bytes:
    """Return ``data`` with the byte at ``at`` changed (one bit of it)."""
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _bad_at(check: ChainCheck) -> int | None:
    assert check.ok is False, check
    return check.first_bad_version


def test_one_changed_byte_anywhere_in_any_event_is_caught_at_that_version(
    store: SQLiteEventStore,
) -> None:
    """For every version and several byte positions (JSON, the hash, its member name, the
    closing brace), one byte changed with an UPDATE fails verify at exactly that version."""
    run_id, last = _stored_run(store)
    head = verify_run(store, run_id)
    assert head.ok
    picks = random.Random(11)
    for version in range(1, last + 1):
        original = _state(store, run_id, version)
        positions = {0, 5, len(original) - 1, len(original) - 2, len(original) - 40}
        positions |= {len(original) - 70, *picks.sample(range(len(original)), 4)}
        for at in sorted(positions):
            _write(store, run_id, version, _flip(original, at))
            assert _bad_at(verify_run(store, run_id)) == version, (version, at)
        _write(store, run_id, version, original)
    assert verify_run(store, run_id) == head


def test_a_changed_event_with_its_hash_recomputed_is_caught_at_the_next_version(
    store: SQLiteEventStore,
) -> None:
    """Whoever changes an event and fixes its own hash breaks the link of the next one."""
    run_id, _ = _stored_run(store)
    original = _state(store, run_id, 3)
    changed = original.replace(b'"timestamp":"2', b'"timestamp":"3', 1)
    # Recompute version 3's hash from version 2's, as a forger would.
    previous = bytes.fromhex(_state(store, run_id, 2)[-66:-2].decode())
    canonical = changed[:-75] + b"}"
    digest = hashlib.sha256(previous + canonical).hexdigest().encode()
    forged = canonical[:-1] + b',"hash":"%s"}' % digest
    _write(store, run_id, 3, forged)
    check = verify_run(store, run_id)
    assert (check.first_bad_version, check.reason) == (
        4,
        "the stored hash does not match the event and the chain",
    )


def test_a_deleted_event_is_caught_as_missing(store: SQLiteEventStore) -> None:
    """Deleting version 3 fails verify at 3 ('version 3 is missing')."""
    run_id, _ = _stored_run(store)
    with sqlite3.connect(store.path) as db:
        db.execute(f"DELETE FROM fw_events {WHERE}", (uuid.UUID(run_id).hex, 3))
    check = verify_run(store, run_id)
    assert (check.ok, check.first_bad_version, check.reason) == (False, 3, "version 3 is missing")


def test_a_deleted_first_event_is_caught_as_missing(store: SQLiteEventStore) -> None:
    """Deleting version 1 fails verify at 1."""
    run_id, _ = _stored_run(store)
    with sqlite3.connect(store.path) as db:
        db.execute(f"DELETE FROM fw_events {WHERE}", (uuid.UUID(run_id).hex, 1))
    assert _bad_at(verify_run(store, run_id)) == 1


def test_a_cut_off_end_changes_the_head(store: SQLiteEventStore) -> None:
    """Deleting the last event leaves a chain that holds, but not the head recorded before:
    that is what the head in verify's answer is for."""
    run_id, last = _stored_run(store)
    before = verify_run(store, run_id)
    with sqlite3.connect(store.path) as db:
        db.execute(f"DELETE FROM fw_events {WHERE}", (uuid.UUID(run_id).hex, last))
    after = verify_run(store, run_id)
    assert after.ok
    assert after.version == last - 1
    assert after.head != before.head


def test_two_swapped_events_are_caught_at_the_first_of_them(store: SQLiteEventStore) -> None:
    """Swapping the stored bytes of versions 2 and 3 fails verify at 2."""
    run_id, _ = _stored_run(store)
    second, third = _state(store, run_id, 2), _state(store, run_id, 3)
    _write(store, run_id, 2, third)
    _write(store, run_id, 3, second)
    assert _bad_at(verify_run(store, run_id)) == 2


def test_an_event_copied_from_another_run_is_caught(store: SQLiteEventStore) -> None:
    """Each run chains from its own id: another run's first event does not fit in."""
    run_id, _ = _stored_run(store)
    other, _ = _stored_run(store)
    _write(store, run_id, 1, _state(store, other, 1))
    assert _bad_at(verify_run(store, run_id)) == 1


def test_a_removed_hash_after_hashed_events_is_caught(store: SQLiteEventStore) -> None:
    """A hash stripped from version 4 (the rest intact) fails at 4: no hash after hashed ones."""
    run_id, _ = _stored_run(store)
    original = _state(store, run_id, 4)
    _write(store, run_id, 4, original[:-75] + b"}")
    check = verify_run(store, run_id)
    assert (check.first_bad_version, check.reason) == (
        4,
        "the event has no hash, unlike the events before it",
    )


def test_appends_after_a_reopen_chain_on_the_stored_head(tmp_path: Path) -> None:
    """A new store object (a new process) reads the head of a run and chains on it."""
    path = str(tmp_path / "events.db")
    state, events = completed_run(str(uuid.uuid4()))
    first = SQLiteEventStore(path)
    first.append([Append(run_id=state.id, expected_version=0, events=events[:3])])
    first.close()
    second = SQLiteEventStore(path)
    try:
        second.append([Append(run_id=state.id, expected_version=3, events=events[3:])])
        check = verify_run(second, state.id)
        assert check.ok
        assert check.version == len(events)
    finally:
        second.close()
