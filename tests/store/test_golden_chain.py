"""The chained golden log (tests/golden/runs-chained.jsonl) verifies, as stored and in a store."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import msgspec
from eventsourcing.persistence import StoredEvent

from flowweaver.store.audit import verify_run
from flowweaver.store.sqlite import SQLiteEventStore
from tests.store.test_golden import RUN_LINES, load

CHAINED = load("runs-chained.jsonl")
CHAINED_RUN = "00000000-0000-4000-8000-00000000a007"
TRIGGER = load("runs-trigger.jsonl")
TRIGGER_RUN = "00000000-0000-4000-8000-00000000a008"
CONCURRENCY = load("runs-concurrency.jsonl")
MAP = load("runs-map.jsonl")
MAP_RUN = "00000000-0000-4000-8000-00000000b004"
"""Written with trigger rules (issue 13), in one append since hash chains."""
SIGNAL = load("runs-signal.jsonl")
SIGNAL_RUN = "00000000-0000-4000-8000-00000000c001"
"""Written with signals and waits (issue 13), in one append since hash chains."""
SUB_RUNS = {"00000000-0000-4000-8000-00000000c101", "00000000-0000-4000-8000-00000000c102"}
"""Written with sub-workflows (issue 13), each run in one append since hash chains."""
# The last hash of the chained golden run, as first stored: a change of the chain's definition
# (or of the stored bytes) fails here.
HEAD = "6cfc6895615b8a252809380ba1a0e05c006abc4fd70b680d134469bcf1d16c37"


def test_the_chained_golden_run_chains_from_its_id_by_the_documented_formula() -> None:
    """Each stored hash is SHA-256(previous hash || the stored JSON without its hash member),
    from SHA-256(run id): recomputed here by hand, not with the store's code."""
    assert [line.id for line in CHAINED] == [CHAINED_RUN] * len(CHAINED)
    head = hashlib.sha256(CHAINED_RUN.encode()).digest()
    for line in CHAINED:
        document = msgspec.json.decode(line.raw)
        stored_hash = document["hash"]
        suffix = b',"hash":"%s"}' % stored_hash.encode()
        assert line.raw.endswith(suffix)
        canonical = line.raw[: -len(suffix)] + b"}"
        head = hashlib.sha256(head + canonical).digest()
        assert head.hex() == stored_hash, line.version
    assert head.hex() == HEAD


def test_golden_runs_verify_in_a_store_as_first_stored(tmp_path: Path) -> None:
    """Loaded as an old database holds them, the chained run verifies with its recorded head;
    the runs stored before chains report so, at version 1."""
    store = SQLiteEventStore(str(tmp_path / "golden.db"))
    try:
        rows = [
            StoredEvent(uuid.UUID(line.id), line.version, line.topic, line.raw)
            for line in RUN_LINES
        ]
        store._events.insert_events(rows)
        check = verify_run(store, CHAINED_RUN)
        assert (check.ok, check.version, check.head) == (True, len(CHAINED), HEAD)
        later = verify_run(store, TRIGGER_RUN)
        assert (later.ok, later.version) == (True, len(TRIGGER))
        # Every golden run written since chains (issue 13 on) verifies too.
        chained = {line.id for line in RUN_LINES if '"hash":' in line.stored}
        for run_id in chained - {CHAINED_RUN, TRIGGER_RUN}:
            assert verify_run(store, run_id).ok, run_id
        for run_id in {line.id for line in RUN_LINES} - chained:
            old = verify_run(store, run_id)
            assert (old.ok, old.first_bad_version) == (False, 1)
            assert old.reason is not None
            assert "stored before hash chains (no hash)" in old.reason
    finally:
        store.close()
