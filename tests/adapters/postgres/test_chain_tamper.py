"""One byte changed in one stored event in PostgreSQL is caught by verify at that version."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from flowweaver.errors import ConcurrencyError
from flowweaver.ports import Append
from flowweaver.store.audit import verify_run
from flowweaver.testing.store_suite import completed_run
from tests.adapters.postgres.conftest import OpenStore
from tests.adapters.postgres.support import SERVER_URL

pytestmark = pytest.mark.postgres


def _rewrite(schema: str, run_id: str, version: int, old: bytes, new: bytes) -> None:
    """Change the stored bytes of one event with a SQL UPDATE in the test's schema."""
    table = SQL("{0}.{1}").format(Identifier(schema), Identifier("fw_events"))
    where = SQL(" WHERE originator_id = %s AND originator_version = %s")
    key = (uuid.UUID(run_id), version)
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        row = conn.execute(SQL("SELECT state FROM {0}").format(table) + where, key).fetchone()
        assert row is not None
        state = bytes(row[0])
        changed = state.replace(old, new, 1)
        assert len(changed) == len(state)
        assert sum(a != b for a, b in zip(state, changed, strict=True)) == 1
        conn.execute(SQL("UPDATE {0} SET state = %s").format(table) + where, (changed, *key))


def test_one_changed_byte_is_caught_at_that_version(schema: str, open_pg_store: OpenStore) -> None:
    """An UPDATE of one byte of version 3 (of 10) fails verify at 3; the other run stays ok."""
    store = open_pg_store()
    state, events = completed_run(str(uuid.uuid4()))
    other, other_events = completed_run(str(uuid.uuid4()))
    for start, stop in ((0, 2), (2, 6), (6, len(events))):
        store.append(
            [
                Append(run_id=state.id, expected_version=start, events=events[start:stop]),
                Append(run_id=other.id, expected_version=start, events=other_events[start:stop]),
            ]
        )
    assert verify_run(store, state.id).ok
    _rewrite(schema, state.id, 3, b'"timestamp":"2', b'"timestamp":"3')
    check = verify_run(store, state.id)
    assert (check.ok, check.first_bad_version) == (False, 3)
    assert check.reason == "the stored hash does not match the event and the chain"
    assert verify_run(store, other.id).ok


def test_a_changed_hash_is_caught_at_its_version(schema: str, open_pg_store: OpenStore) -> None:
    """One hex digit of version 5's stored hash changed fails verify at 5."""
    store = open_pg_store()
    state, events = completed_run(str(uuid.uuid4()))
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    stored = store.read_stored(state.id, after=4, upto=5)[0][2]
    digit = bytes(stored)[-3:-2]
    _rewrite(schema, state.id, 5, digit + b'"}', (b"0" if digit != b"0" else b"1") + b'"}')
    assert verify_run(store, state.id).first_bad_version == 5


def test_fenced_appends_chain_and_a_fenced_off_one_leaves_no_head(
    open_pg_store: OpenStore,
) -> None:
    """With leases open, appends go through the lease session and chain the same; an append
    refused by the fence (another node's run) stores nothing and the owner's chain holds."""
    owner, other = open_pg_store(), open_pg_store()
    owner_leases = owner.open_leases("a")
    other_leases = other.open_leases("b")
    try:
        state, events = completed_run(str(uuid.uuid4()))
        owner.append([Append(run_id=state.id, expected_version=0, events=events[:4])])
        assert owner_leases.holds(state.id)
        with pytest.raises(ConcurrencyError):
            other.append([Append(run_id=state.id, expected_version=4, events=events[4:5])])
        owner.append([Append(run_id=state.id, expected_version=4, events=events[4:])])
        check = verify_run(other, state.id)
        assert (check.ok, check.version) == (True, len(events))
    finally:
        other_leases.close()
        owner_leases.close()
