"""The hash-chain part of the store conformance suite (mixed into ``EventStoreSuite``).

Every test gets a fresh store from the ``store`` fixture of the suite it is mixed into. The
chain is recomputed here from its definition (docs/operations.md, "Tamper evidence"), with
nothing of :mod:`flowweaver.store.chain`, so a change of the stored format fails here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import ApplicationRecorder, StoredEvent

from flowweaver.domain.run import RunState, start_run
from flowweaver.errors import ChainBrokenError, ConcurrencyError, NotFoundError
from flowweaver.ports import Append, EventStore, StoredRuns
from flowweaver.store.audit import export_run, import_runs, verify_run
from flowweaver.store.codec import encode
from flowweaver.store.memory import MemoryEventStore
from flowweaver.testing.runs import T0, task, workflow


def expected_hashes(run_id: str, canonical: Sequence[bytes]) -> list[str]:
    """Return the chain of a run's events from its definition: h_n = SHA-256(h_{n-1} || json)."""
    head = hashlib.sha256(str(uuid.UUID(run_id)).encode()).digest()
    hashes = []
    for document in canonical:
        head = hashlib.sha256(head + document).digest()
        hashes.append(head.hex())
    return hashes


def _run(run_id: str, tasks: int = 3) -> tuple[RunState, list[Any]]:
    spec = workflow(*(task(f"t{i}") for i in range(tasks)), workflow_id="chain")
    return start_run(run_id, spec, 1, {}, T0)


def _stored(store: EventStore) -> StoredRuns:
    assert isinstance(store, StoredRuns), f"{type(store).__name__} has no stored records"
    return store


def _rows(store: EventStore, run_id: str) -> list[tuple[int, str, bytes]]:
    return [(v, t, bytes(d)) for v, t, d in _stored(store).read_stored(run_id)]


class ChainSuite:
    """Tests of the hash chain every store keeps on its run events."""

    def test_each_stored_event_ends_with_its_hash_on_the_run_chain(self, store: EventStore) -> None:
        """Stored bytes = the event's canonical JSON with ``"hash"`` last; the hashes chain
        from the run id, across appends."""
        run_id = str(uuid.uuid4())
        _, events = _run(run_id)
        store.append([Append(run_id=run_id, expected_version=0, events=events[:2])])
        store.append([Append(run_id=run_id, expected_version=2, events=events[2:])])
        rows = _stored(store).read_stored(run_id)
        hashes = expected_hashes(run_id, [encode(e) for e in events])
        for (version, _, data), event, hashed in zip(rows, events, hashes, strict=True):
            assert data == encode(event)[:-1] + b',"hash":"%s"}' % hashed.encode(), version
            assert msgspec.json.decode(data)["hash"] == hashed
        assert [r.event for r in store.read_run(run_id)] == events
        check = verify_run(_stored(store), run_id)
        assert (check.ok, check.version, check.head) == (True, len(events), hashes[-1])

    def test_appends_of_one_run_in_one_batch_chain_in_order(self, store: EventStore) -> None:
        """Two appends of a run in one batch, and another run's between them, chain in order."""
        run_id, other = str(uuid.uuid4()), str(uuid.uuid4())
        _, events = _run(run_id)
        _, others = _run(other)
        store.append(
            [
                Append(run_id=run_id, expected_version=0, events=events[:1]),
                Append(run_id=other, expected_version=0, events=others),
                Append(run_id=run_id, expected_version=1, events=events[1:]),
            ]
        )
        for ident, evs in ((run_id, events), (other, others)):
            check = verify_run(_stored(store), ident)
            assert check.ok
            assert check.head == expected_hashes(ident, [encode(e) for e in evs])[-1]

    def test_appends_chain_on_the_stored_head_when_none_is_remembered(
        self, store: EventStore
    ) -> None:
        """With no head remembered (as in a new process), an append reads its run's last
        event and chains on it."""
        if not hasattr(store, "chain_head_cache"):
            pytest.skip(f"{type(store).__name__} has no head cache to turn off")
        store.chain_head_cache = 0
        run_id = str(uuid.uuid4())
        _, events = _run(run_id)
        for version, event in enumerate(events):
            store.append([Append(run_id=run_id, expected_version=version, events=[event])])
        check = verify_run(_stored(store), run_id)
        assert check.ok
        assert check.head == expected_hashes(run_id, [encode(e) for e in events])[-1]

    def test_a_refused_append_leaves_the_chain_whole(self, store: EventStore) -> None:
        """An append at a taken version is refused; the next right one chains on what is stored."""
        run_id = str(uuid.uuid4())
        _, events = _run(run_id)
        store.append([Append(run_id=run_id, expected_version=0, events=events[:3])])
        with pytest.raises(ConcurrencyError):
            store.append([Append(run_id=run_id, expected_version=2, events=events[3:])])
        store.append([Append(run_id=run_id, expected_version=3, events=events[3:])])
        check = verify_run(_stored(store), run_id)
        assert check.ok
        assert check.version == len(events)

    def test_verify_of_a_run_the_store_does_not_hold_raises_not_found(
        self, store: EventStore
    ) -> None:
        """Verify names a run that is not there (or no run id at all) as not found."""
        for run_id in (str(uuid.uuid4()), "not-a-run"):
            with pytest.raises(NotFoundError):
                verify_run(_stored(store), run_id)

    def test_events_stored_before_chains_are_reported_and_chained_on(
        self, store: EventStore
    ) -> None:
        """A run whose first events have no hash verifies as not ok at version 1, saying so;
        what it appends afterwards chains on them, and removing a hash later is caught."""
        recorder = getattr(store, "_events", None)
        if not isinstance(recorder, ApplicationRecorder):
            pytest.skip(f"{type(store).__name__} has no recorder to write old events with")
        run_id = str(uuid.uuid4())
        _, events = _run(run_id)
        recorder.insert_events(
            [
                StoredEvent(uuid.UUID(run_id), v, type(e).__name__, encode(e))
                for v, e in enumerate(events[:2], 1)
            ]
        )
        store.append([Append(run_id=run_id, expected_version=2, events=events[2:])])
        check = verify_run(_stored(store), run_id)
        assert (check.ok, check.first_bad_version) == (False, 1)
        assert check.reason == "versions 1-2 were stored before hash chains (no hash)"
        rows = _stored(store).read_stored(run_id)
        hashes = expected_hashes(run_id, [encode(e) for e in events])
        assert msgspec.json.decode(rows[-1][2])["hash"] == hashes[-1]

    def test_an_export_imports_into_this_store_once(self, store: EventStore) -> None:
        """Runs exported from another store import here byte for byte, list in the run list,
        verify, and a second import stores nothing."""
        source = MemoryEventStore()
        run_ids = [str(uuid.uuid4()) for _ in range(2)]
        for run_id in run_ids:
            _, events = _run(run_id)
            source.append([Append(run_id=run_id, expected_version=0, events=events)])
        lines = b"".join(b"".join(export_run(source, run_id)) for run_id in run_ids)
        report = import_runs(_stored(store), lines.splitlines)
        assert (report.runs, report.present) == (2, 0)
        for run_id in run_ids:
            assert _rows(store, run_id) == _rows(source, run_id)
            assert verify_run(_stored(store), run_id).ok
        assert {row.id for row in store.list_runs().runs} == set(run_ids)
        again = import_runs(_stored(store), lines.splitlines)
        assert (again.runs, again.events, again.present) == (0, 0, 2)
        # The imported runs go on: the store chains new events on their imported heads.
        run_id = run_ids[0]
        _, events = _run(run_id)
        version = _stored(store).last_version(run_id)
        store.append([Append(run_id=run_id, expected_version=version, events=events[1:2])])
        assert verify_run(_stored(store), run_id).ok

    def test_a_broken_export_imports_nothing(self, store: EventStore) -> None:
        """An export with one changed byte is refused at that version and stores nothing."""
        source = MemoryEventStore()
        good, bad = str(uuid.uuid4()), str(uuid.uuid4())
        for run_id in (good, bad):
            _, events = _run(run_id)
            source.append([Append(run_id=run_id, expected_version=0, events=events)])
        lines = b"".join(export_run(source, good)).splitlines()
        tampered = b"".join(export_run(source, bad)).splitlines()
        tampered[2] = tampered[2].replace(b'"timestamp":"2024', b'"timestamp":"2025')
        with pytest.raises(ChainBrokenError) as raised:
            import_runs(_stored(store), lambda: [*lines, *tampered])
        assert (raised.value.run_id, raised.value.version) == (bad, 3)
        assert _stored(store).last_version(good) == 0
        assert _stored(store).last_version(bad) == 0
