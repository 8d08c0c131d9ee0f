"""The golden logs of tests/golden/: records as first stored still read, fold and encode alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from flowweaver.api.sse import event_json
from flowweaver.domain.events import RUN_EVENT_TYPES
from flowweaver.domain.run import fold, new_state
from flowweaver.store import codec
from flowweaver.store.chain import split_stored
from flowweaver.store.codec import (
    CURRENT_TOPICS,
    SNAPSHOT_TOPIC,
    WORKFLOW_TOPIC,
    decode_event,
    decode_registration,
    decode_snapshot,
    encode,
    split_topic,
    topic,
)
from flowweaver.store.sqlite import SQLiteEventStore

GOLDEN = Path(__file__).parent.parent / "golden"


class Line(msgspec.Struct, frozen=True):
    """One stored record of a golden file."""

    id: str
    version: int
    topic: str
    stored: str

    @property
    def raw(self) -> bytes:
        return self.stored.encode()


def load(pattern: str) -> list[Line]:
    """Return every line of the golden files matching ``pattern``, file by file."""
    lines: list[Line] = []
    for path in sorted(GOLDEN.glob(pattern)):
        lines += [msgspec.json.decode(row, type=Line) for row in path.read_bytes().splitlines()]
    return lines


RUN_LINES = load("runs*.jsonl")
WORKFLOW_LINES = load("workflows*.jsonl")
SNAPSHOT_LINES = load("snapshots*.jsonl")
SCHEDULE_LINES = load("schedules*.jsonl")
"""The schedule registry's golden log: checked in test_golden_schedules.py."""


def runs() -> dict[str, list[Line]]:
    """Return the golden run records by run id, in version order."""
    by_run: dict[str, list[Line]] = {}
    for line in RUN_LINES:
        by_run.setdefault(line.id, []).append(line)
    return by_run


# run id -> (status, version, {task id: (status, attempts, output)}). A new golden run needs
# its expectations here: see tests/golden/README.md.
EXPECTED: dict[str, tuple[str, int, dict[str, tuple[str, int, Any]]]] = {
    "00000000-0000-4000-8000-00000000a001": (
        "completed",
        11,
        {
            "fetch": ("completed", 2, {"data": "golden"}),
            "process": ("completed", 1, {"result": {"data": "golden"}}),
        },
    ),
    "00000000-0000-4000-8000-00000000a002": (
        "failed",
        9,
        {
            "broken": ("failed", 1, None),
            "after": ("skipped", 0, None),
            "aside": ("completed", 1, {"result": {}}),
        },
    ),
    "00000000-0000-4000-8000-00000000a003": (
        "cancelled",
        6,
        {
            "slow": ("completed", 1, {"result": {"slept": 0.99}}),
            "next": ("cancelled", 0, None),
        },
    ),
    "00000000-0000-4000-8000-00000000a004": (
        "completed",
        19,
        {
            "flaky": ("completed", 2, {"result": {"x": 1}}),
            "after": ("completed", 1, {"result": {"x": 1}}),
            "optional": ("completed", 1, {"result": {}}),
            "manual": ("skipped", 0, None),
        },
    ),
    "00000000-0000-4000-8000-00000000a005": (
        "completed",
        7,
        {
            "broken": ("completed", 1, {"result": "by hand"}),
            "after": ("completed", 1, {"result": {}}),
            "aside": ("completed", 0, {"result": "overridden"}),
        },
    ),
    "00000000-0000-4000-8000-00000000a006": (
        "cancelled",
        5,
        {"slow": ("cancelled", 1, None), "next": ("cancelled", 0, None)},
    ),
    "00000000-0000-4000-8000-00000000a007": (
        "completed",
        8,
        {
            "slow": ("completed", 1, {"result": {"slept": 0.5}}),
            "next": ("completed", 1, {"result": {}}),
        },
    ),
    "00000000-0000-4000-8000-00000000a008": (
        "failed",
        16,
        {
            "extract": ("failed", 1, None),
            "load": ("skipped", 0, None),
            "cleanup": ("completed", 1, {"result": {}}),
            "alert": ("completed", 1, {"result": {"paged": True}}),
            "report": ("skipped", 0, None),
            "join": ("completed", 1, {"result": {}}),
        },
    ),
    "00000000-0000-4000-8000-00000000a009": (
        "completed",
        7,
        {"work": ("completed", 1, {"result": {"customer": "acme"}})},
    ),
    "00000000-0000-4000-8000-00000000a00a": (
        "cancelled",
        4,
        {"work": ("cancelled", 0, None)},
    ),
    "00000000-0000-4000-8000-00000000c001": (
        "completed",
        13,
        {
            "prepare": ("completed", 1, {"result": {}}),
            "approve": ("completed", 2, {"result": {"approved": True}}),
            "confirm": ("completed", 1, {"result": {"ok": True}}),
        },
    ),
    "00000000-0000-4000-8000-00000000c101": (
        "completed",
        8,
        {
            "sub": ("completed", 1, {"result": {"leaf": {"result": {"n": 7}}}}),
            "after": ("completed", 1, {"result": {}}),
        },
    ),
    "00000000-0000-4000-8000-00000000c102": (
        "completed",
        5,
        {"leaf": ("completed", 1, {"result": {"n": 7}})},
    ),
    "00000000-0000-4000-8000-00000000b004": (
        "completed",
        16,
        {
            "fan": ("completed", 1, {"result": [2, 4, 6]}),
            "total": ("completed", 1, {"result": {}}),
        },
    ),
    "00000000-0000-4000-8000-000000014a01": (
        "failed",
        9,
        {
            "broken": ("failed", 1, None),
            "after": ("skipped", 0, None),
            "aside": ("completed", 1, {"result": {}}),
        },
    ),
}


def is_current(line: Line) -> bool:
    """Say whether a golden record is at its type's current schema version."""
    return line.topic in CURRENT_TOPICS or line.topic == SNAPSHOT_TOPIC


def test_golden_files_are_there() -> None:
    """The golden logs exist and hold runs, registrations and a snapshot."""
    assert len(runs()) >= 3
    assert WORKFLOW_LINES
    assert SNAPSHOT_LINES
    assert SCHEDULE_LINES


def test_every_golden_run_has_expectations() -> None:
    """Each golden run is checked below; a run added without expectations fails here."""
    assert set(runs()) == set(EXPECTED)


@pytest.mark.parametrize("run_id", sorted(EXPECTED))
def test_golden_run_decodes_and_folds_to_its_recorded_outcome(run_id: str) -> None:
    """Every golden record decodes with today's codec and the run folds to its outcome."""
    lines = runs()[run_id]
    assert [line.version for line in lines] == list(range(1, len(lines) + 1))
    state = fold((decode_event(line.raw, line.topic) for line in lines), new_state(run_id))
    status, version, tasks = EXPECTED[run_id]
    assert (state.status, state.version) == (status, version)
    assert {
        task_id: (task.status, task.attempts, task.output) for task_id, task in state.tasks.items()
    } == tasks


def test_every_run_event_type_is_in_the_golden_log_at_its_current_version() -> None:
    """A new event type, or a schema version bump, without a golden record fails here."""
    stored = {line.topic for line in RUN_LINES}
    missing = [
        topic(t.__name__, t.schema_version)
        for t in RUN_EVENT_TYPES
        if topic(t.__name__, t.schema_version) not in stored
    ]
    assert not missing, f"add golden records for {missing} (tests/golden/README.md)"
    assert WORKFLOW_TOPIC in {line.topic for line in WORKFLOW_LINES}
    assert SNAPSHOT_TOPIC in {line.topic for line in SNAPSHOT_LINES}


def test_golden_log_has_task_failed_with_and_without_retry_at() -> None:
    """Both shapes of TaskFailed are kept: with a retry time and with null."""
    failed = [msgspec.json.decode(line.raw) for line in RUN_LINES if line.topic == "TaskFailed"]
    assert {f["retryAt"] is None for f in failed} == {True, False}


EMPTY: tuple[object, ...] = (None, False, 0, "", [], {})


def without_new_empty_fields(current: Any, golden: Any) -> Any:
    """Return ``current`` without the keys ``golden`` lacks whose values are empty.

    Those are fields added since the golden record was stored, optional with an empty
    default: old JSON decodes to the default, and adding them needs no version bump.
    """
    if isinstance(current, dict) and isinstance(golden, dict):
        return {
            key: without_new_empty_fields(value, golden.get(key))
            for key, value in current.items()
            if key in golden or not any(value == e and type(value) is type(e) for e in EMPTY)
        }
    if isinstance(current, list) and isinstance(golden, list) and len(current) == len(golden):
        return [without_new_empty_fields(c, g) for c, g in zip(current, golden, strict=True)]
    return current


@pytest.mark.parametrize(
    "line",
    [line for line in RUN_LINES + WORKFLOW_LINES if is_current(line)],
    ids=lambda line: f"{line.topic}-{line.id[-4:]}-v{line.version}",
)
def test_current_encoder_writes_the_golden_bytes(line: Line) -> None:
    """A golden record at its current version encodes back to its exact bytes, but for
    fields added since with an empty default.

    A changed shape without a schema version bump (a field renamed, removed, retyped,
    reordered or given a non-empty default) fails here.
    """
    name, _ = split_topic(line.topic)
    decoded: object
    if name == "WorkflowRegistered":
        decoded = decode_registration(line.raw, line.topic)
    else:
        decoded = decode_event(line.raw, line.topic)
    current = msgspec.json.decode(encode(decoded))
    golden = msgspec.json.decode(line.raw)
    # A run event stored since hash chains ends in its "hash" (tests/store/test_golden_chain.py
    # checks it); the encoder writes what comes before it.
    canonical, _ = split_stored(line.raw) if line.topic != WORKFLOW_TOPIC else (line.raw, None)
    assert msgspec.json.encode(without_new_empty_fields(current, golden)) == canonical, (
        f"{line.topic} no longer encodes as stored: bump its schema version and add an "
        "upcaster (docs/concepts.md, Event schema versions)"
    )


@pytest.mark.parametrize("line", [s for s in SNAPSHOT_LINES if is_current(s)])
def test_current_encoder_writes_the_golden_snapshot_bytes(line: Line) -> None:
    """A golden snapshot at the current version encodes back to its exact bytes.

    Snapshots are stricter than events: a field added to RunState with a default would read
    from an old snapshot as the default, not as what the events say, so any change of shape
    bumps SNAPSHOT_SCHEMA_VERSION (old snapshots are then ignored and runs replayed).
    """
    assert encode(decode_snapshot(line.raw, line.topic)) == line.raw, (
        "RunState no longer encodes as the golden snapshot: bump SNAPSHOT_SCHEMA_VERSION in "
        "flowweaver/store/codec.py and add a golden snapshot at the new version"
    )


def test_new_empty_fields_are_all_the_byte_check_forgives() -> None:
    """The byte check drops only keys the golden record lacks and that hold an empty value."""
    golden = {"type": "X", "error": {"type": "E"}, "n": 1}
    added = {"type": "X", "error": {"type": "E", "traceback": None}, "n": 1, "logs": []}
    assert without_new_empty_fields(added, golden) == golden
    changed = {"type": "X", "error": {"type": "E", "retryable": True}, "n": 1}
    assert without_new_empty_fields(changed, golden) != golden
    renamed = {"type": "X", "error": {"type": "E"}, "count": 1}
    assert without_new_empty_fields(renamed, golden) != golden
    assert without_new_empty_fields({"n": 0}, {"n": 1}) == {"n": 0}


def test_golden_snapshot_is_the_fold_of_its_run() -> None:
    """The golden snapshot decodes to the state its run's events fold to at that version."""
    current = [line for line in SNAPSHOT_LINES if is_current(line)]
    assert current
    by_originator = {codec.snapshot_originator(uuid.UUID(run_id)): run_id for run_id in runs()}
    for line in current:
        run_id = by_originator[uuid.UUID(line.id)]
        lines = [r for r in runs()[run_id] if r.version <= line.version]
        folded = fold((decode_event(r.raw, r.topic) for r in lines), new_state(run_id))
        assert decode_snapshot(line.raw, line.topic) == folded


def test_golden_runs_pin_the_golden_registrations() -> None:
    """Each golden run's pinned definition is the golden registration it names."""
    registered = {}
    for line in WORKFLOW_LINES:
        registration = decode_registration(line.raw, line.topic)
        registered[(registration.workflow_id, registration.version)] = registration.definition
    for lines in runs().values():
        started = decode_event(lines[0].raw, lines[0].topic)
        key = (started.workflow_id, started.workflow_version)  # type: ignore[union-attr]
        assert registered[key] == started.definition  # type: ignore[union-attr]


@pytest.fixture
def golden_store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    """A SQLite store holding the golden rows as an old database would, written raw."""
    store = SQLiteEventStore(str(tmp_path / "golden.db"))
    rows = [
        StoredEvent(uuid.UUID(line.id), line.version, line.topic, line.raw)
        for line in RUN_LINES + WORKFLOW_LINES
    ]
    store._events.insert_events(rows)
    store._snapshots.insert_events(
        [StoredEvent(uuid.UUID(s.id), s.version, s.topic, s.raw) for s in SNAPSHOT_LINES]
    )
    yield store
    store.close()


def test_a_store_holding_the_golden_rows_reads_them_unchanged(
    golden_store: SQLiteEventStore,
) -> None:
    """A database written before schema versions reads as is: states, runs, SSE JSON."""
    for run_id, (status, version, _) in EXPECTED.items():
        state = golden_store.run_state(run_id)
        assert state is not None
        assert (state.status, state.version) == (status, version)
        for rec in golden_store.read_run(run_id):
            assert rec.schema == 1
            assert rec.current_raw is rec.raw  # served as stored, not decoded
            document = msgspec.json.decode(event_json(rec))
            assert document["runId"] == run_id
            assert document["type"] == rec.name
    assert {r.status for r in golden_store.list_runs().runs} == {"completed", "failed", "cancelled"}
    assert {w.workflow_id for w in golden_store.list_workflows()} == {
        "golden-retry",
        "golden-fail",
        "golden-cancel",
        "golden-operated",
        "golden-trigger",
        "golden-concurrency",
        "golden-signal",
        "golden-sub-child",
        "golden-sub-parent",
        "golden-map",
    }
    assert golden_store.snapshots_ignored == 0
    assert len(golden_store.read_log()) == len(RUN_LINES)


def test_the_golden_writer_never_rewrites_a_file() -> None:
    """write_golden.py leaves existing golden files alone and says so."""
    import importlib.util  # noqa: PLC0415 - the script is not a package module

    spec = importlib.util.spec_from_file_location("write_golden", GOLDEN / "write_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = {path: path.read_bytes() for path in GOLDEN.glob("*.jsonl")}
    assert module.main() == 1
    assert {path: path.read_bytes() for path in GOLDEN.glob("*.jsonl")} == before


def test_golden_run_started_keeps_its_traceparent() -> None:
    """RunStarted.traceparent reads back as stored; runs stored before it read None."""
    started = {
        line.id: decode_event(line.raw, line.topic) for line in RUN_LINES if line.version == 1
    }
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = started.pop("00000000-0000-4000-8000-000000014a01")
    assert getattr(traced, "traceparent", None) == traceparent
    assert all(getattr(event, "traceparent", None) is None for event in started.values())
