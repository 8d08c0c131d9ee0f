"""Schema versions of stored records: topics, upcasters on read, and snapshots that fall back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent
from structlog.testing import capture_logs

from flowweaver.api.sse import event_json
from flowweaver.domain.events import (
    EVENT_SCHEMA_VERSIONS,
    RUN_EVENT_TYPES,
    RunEvent,
    TaskSkipped,
)
from flowweaver.domain.ids import workflow_aggregate_id
from flowweaver.domain.run import fold, new_state
from flowweaver.errors import EventSchemaError
from flowweaver.ports import Append, RecordedEvent
from flowweaver.store import codec
from flowweaver.store.codec import (
    SNAPSHOT_TOPIC,
    UPCASTERS,
    decode_event,
    encode,
    event_topic,
    readable_topics,
    snapshot_originator,
    split_topic,
    topic,
    upcast,
    upcaster,
)
from flowweaver.store.sqlite import SQLiteEventStore
from flowweaver.testing.runs import T0, task, workflow
from flowweaver.testing.store_suite import completed_run

SKIP_RUN_SPEC = workflow(task("a", handler="fail"), task("b", "a"), workflow_id="old")


def skip_v0(document: dict[str, Any]) -> dict[str, Any]:
    """A fictitious version 0 of TaskSkipped said ``task`` and ``why``; version 1 says
    ``taskId`` and ``reason``."""
    out = {k: v for k, v in document.items() if k not in ("task", "why")}
    out["taskId"] = document["task"]
    out["reason"] = document["why"]
    return out


def registered_v0(document: dict[str, Any]) -> dict[str, Any]:
    """A fictitious version 0 of WorkflowRegistered called its definition ``spec``."""
    out = {k: v for k, v in document.items() if k != "spec"}
    out["definition"] = document["spec"]
    return out


@pytest.fixture
def old_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the fictitious version 0 upcasters for the test only."""
    monkeypatch.setitem(UPCASTERS, ("TaskSkipped", 0), skip_v0)
    monkeypatch.setitem(UPCASTERS, ("WorkflowRegistered", 0), registered_v0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    """A SQLite store."""
    sqlite = SQLiteEventStore(str(tmp_path / "events.db"))
    yield sqlite
    sqlite.close()


def insert_raw(store: SQLiteEventStore, *rows: StoredEvent) -> None:
    """Write rows straight to the log, as an older Flowweaver would have."""
    store._events.insert_events(list(rows))


def failed_run_with_an_old_skip(store: SQLiteEventStore) -> tuple[str, list[RunEvent]]:
    """Store a run that failed, its TaskSkipped in the fictitious version 0 shape."""
    from flowweaver.domain.events import ErrorInfo  # noqa: PLC0415
    from flowweaver.domain.run import record_failed, record_started, start_run  # noqa: PLC0415

    run_id = str(uuid.uuid4())
    state, events = start_run(run_id, SKIP_RUN_SPEC, 1, {}, T0)
    events += record_started(state, "a", 1, "w", T0)
    error = ErrorInfo(type="ValueError", message="no", retryable=False)
    events += record_failed(state, "a", 1, error, T0 + timedelta(seconds=1))
    assert [type(e).__name__ for e in events][-2:] == ["TaskSkipped", "RunFailed"]
    rows = []
    for version, event in enumerate(events, 1):
        data, stored_topic = encode(event), event_topic(event)
        if isinstance(event, TaskSkipped):
            old = {"type": "TaskSkipped", "timestamp": "2024-05-01T12:00:01Z"}
            old |= {"task": event.task_id, "why": event.reason}
            data, stored_topic = msgspec.json.encode(old), "TaskSkipped@0"
        rows.append(StoredEvent(uuid.UUID(run_id), version, stored_topic, data))
    insert_raw(store, *rows)
    return run_id, events


# --- topics --------------------------------------------------------------------------------


def test_version_one_is_stored_under_the_bare_type_name() -> None:
    """Topics at version 1 are what stores held before versions existed: the type name."""
    assert topic("TaskFailed", 1) == "TaskFailed"
    assert topic("TaskFailed", 2) == "TaskFailed@2"
    assert split_topic("TaskFailed") == ("TaskFailed", 1)
    assert split_topic("TaskFailed@2") == ("TaskFailed", 2)
    assert split_topic("TaskFailed@0") == ("TaskFailed", 0)


@pytest.mark.parametrize("bad", ["TaskFailed@", "TaskFailed@x", "TaskFailed@²", "A@-1"])
def test_a_topic_with_a_malformed_version_is_a_schema_error(bad: str) -> None:
    """A topic whose version part is not a number is refused by name."""
    with pytest.raises(EventSchemaError, match="schema version"):
        split_topic(bad)


def test_every_event_type_has_a_version_and_every_old_version_an_upcaster() -> None:
    """Each run event type has a schema version >= 1, and a chain of upcasters down to 1."""
    for event_type in RUN_EVENT_TYPES:
        name, current = event_type.__name__, event_type.schema_version
        assert EVENT_SCHEMA_VERSIONS[name] == current >= 1
        for old in range(1, current):
            assert (name, old) in UPCASTERS, f"{name} has no upcaster from version {old}"
    for name, current in codec.SCHEMA_VERSIONS.items():
        for old in range(1, current):
            assert (name, old) in UPCASTERS, f"{name} has no upcaster from version {old}"


def test_events_are_stored_under_their_current_topic(store: SQLiteEventStore) -> None:
    """Appending writes each event's topic; reading splits it into name and schema."""
    state, events = completed_run(str(uuid.uuid4()))
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    rows = store._events.select_events(uuid.UUID(state.id))
    assert [row.topic for row in rows] == [event_topic(e) for e in events]
    assert [(r.name, r.schema) for r in store.read_run(state.id)] == [
        (type(e).__name__, type(e).schema_version) for e in events
    ]


def test_readable_topics_add_each_version_an_upcaster_reaches(old_shapes: None) -> None:
    """The log is filtered by every readable topic: current ones and upcastable old ones."""
    topics = readable_topics(("TaskSkipped", "TaskStarted"))
    assert set(topics) == {"TaskSkipped", "TaskSkipped@0", "TaskStarted"}


# --- upcasting -----------------------------------------------------------------------------


def test_an_old_event_is_upcast_on_read_and_folds(
    store: SQLiteEventStore, old_shapes: None
) -> None:
    """A run holding a version 0 event replays to the same state as the current events."""
    run_id, events = failed_run_with_an_old_skip(store)
    state = store.run_state(run_id)
    assert state == fold(events, new_state(run_id))
    assert state is not None and state.task("b").status == "skipped"
    recorded = store.read_run(run_id)
    skipped = recorded[-2]
    assert (skipped.name, skipped.schema) == ("TaskSkipped", 0)
    assert skipped.event == events[-2]
    assert [r.event for r in recorded] == events


def test_an_old_event_is_served_in_the_current_shape(
    store: SQLiteEventStore, old_shapes: None
) -> None:
    """event_json (REST history and SSE) upcasts and re-encodes an old event; current ones
    are served from their stored bytes."""
    run_id, events = failed_run_with_an_old_skip(store)
    recorded = store.read_run(run_id)
    skipped = recorded[-2]
    document = msgspec.json.decode(event_json(skipped))
    assert list(document)[:4] == ["type", "runId", "version", "timestamp"]
    assert document["taskId"] == "b"
    assert document["reason"] == "upstream task a failed"
    assert "task" not in document and "why" not in document
    assert event_json(skipped) == event_json(
        RecordedEvent(run_id, skipped.version, None, "TaskSkipped", encode(events[-2]))
    )
    current = recorded[0]
    assert current.current_raw is current.raw


def test_the_log_includes_old_events(store: SQLiteEventStore, old_shapes: None) -> None:
    """read_log (the SSE audit feed and tailer) returns events stored at an old version."""
    _, events = failed_run_with_an_old_skip(store)
    log = store.read_log()
    assert [r.event for r in log] == events
    assert [r.schema for r in log].count(0) == 1


def test_without_the_upcaster_an_old_event_is_a_schema_error(store: SQLiteEventStore) -> None:
    """Reading a version no upcaster reaches fails with a clear error, not a wrong state."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(UPCASTERS, ("TaskSkipped", 0), skip_v0)
        run_id, _ = failed_run_with_an_old_skip(store)
    with pytest.raises(EventSchemaError, match="no upcaster for TaskSkipped from schema version 0"):
        store.run_state(run_id)


def test_a_newer_version_than_the_code_knows_is_a_schema_error() -> None:
    """An event written by a newer Flowweaver is refused, naming both versions."""
    raw = encode(TaskSkipped(timestamp=T0, task_id="b", reason="r"))
    with pytest.raises(
        EventSchemaError, match=r"version 7, newer than this Flowweaver reads \(1\)"
    ):
        decode_event(raw, "TaskSkipped@7")
    with pytest.raises(EventSchemaError, match="no known record type"):
        upcast("Nonsense@2", raw)


def test_an_old_registration_is_upcast(store: SQLiteEventStore, old_shapes: None) -> None:
    """A workflow registration stored at an old version reads as the current one."""
    spec = workflow(task("a"), workflow_id="old-wf")
    old = {
        "type": "WorkflowRegistered",
        "timestamp": "2024-05-01T12:00:00Z",
        "workflowId": "old-wf",
        "version": 1,
        "spec": msgspec.json.decode(encode(spec)),
    }
    row = StoredEvent(
        workflow_aggregate_id("old-wf"), 1, "WorkflowRegistered@0", msgspec.json.encode(old)
    )
    insert_raw(store, row)
    assert store.get_workflow("old-wf").definition == spec
    assert store.get_workflow("old-wf", 1).definition == spec
    assert [w.workflow_id for w in store.list_workflows()] == ["old-wf"]
    assert store.register_workflow(spec, T0) == (1, False)  # identical to the upcast version


def test_upcaster_registration_checks_its_step() -> None:
    """An upcaster for an unknown type, for the current version or twice is refused."""
    with pytest.raises(ValueError, match="no record type"):
        upcaster("Nope", 0)
    with pytest.raises(ValueError, match="no upcaster from 1"):
        upcaster("TaskSkipped", 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(UPCASTERS, ("TaskSkipped", 0), skip_v0)
        with pytest.raises(ValueError, match="already has an upcaster"):
            upcaster("TaskSkipped", 0)


def test_upcaster_decorator_registers_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """@upcaster(name, version) puts the function in the registry and returns it."""
    monkeypatch.setattr(codec, "UPCASTERS", {})

    @upcaster("TaskSkipped", 0)
    def step(document: dict[str, Any]) -> dict[str, Any]:
        return document

    assert {("TaskSkipped", 0): step} == codec.UPCASTERS


# --- snapshots -----------------------------------------------------------------------------


def stored_run(store: SQLiteEventStore) -> tuple[str, list[RunEvent]]:
    """Store a completed run and return its id and events."""
    state, events = completed_run(str(uuid.uuid4()))
    store.append([Append(run_id=state.id, expected_version=0, events=events)])
    return state.id, events


def test_an_older_snapshot_version_falls_back_to_replay(store: SQLiteEventStore) -> None:
    """A snapshot of another schema version is ignored, counted and logged; events replay."""
    run_id, events = stored_run(store)
    partial = fold(events[:4], new_state(run_id))
    partial.status = "failed"  # a wrong state: used, it would show
    row = StoredEvent(snapshot_originator(uuid.UUID(run_id)), 4, "RunSnapshot@0", encode(partial))
    store._snapshots.insert_events([row])
    with capture_logs() as logs:
        state = store.run_state(run_id)
    assert state == fold(events, new_state(run_id))
    assert store.snapshots_ignored == 1
    assert [e["event"] for e in logs] == ["snapshot_ignored"]
    assert logs[0]["run_id"] == run_id
    assert logs[0]["topic"] == "RunSnapshot@0"
    assert store.run_state(run_id, at=4) == fold(events[:4], new_state(run_id))


def test_an_undecodable_snapshot_falls_back_to_replay(store: SQLiteEventStore) -> None:
    """A current-version snapshot that does not decode (or is of another run) is ignored."""
    run_id, events = stored_run(store)
    other = fold(events[:3], new_state(str(uuid.uuid4())))
    store._snapshots.insert_events(
        [
            StoredEvent(snapshot_originator(uuid.UUID(run_id)), 2, SNAPSHOT_TOPIC, b'{"id": 12}'),
            StoredEvent(snapshot_originator(uuid.UUID(run_id)), 3, SNAPSHOT_TOPIC, encode(other)),
        ]
    )
    with capture_logs() as logs:
        assert store.run_state(run_id, at=2) == fold(events[:2], new_state(run_id))
        assert store.run_state(run_id, at=3) == fold(events[:3], new_state(run_id))
    assert store.snapshots_ignored == 2
    assert "does not decode" in logs[0]["reason"]
    assert "holds run" in logs[1]["reason"]


def test_a_current_snapshot_is_used(store: SQLiteEventStore) -> None:
    """A snapshot at the current version is where replay starts (its content shows)."""
    run_id, events = stored_run(store)
    marked = fold(events[:4], new_state(run_id))
    marked.request_hash = "from-the-snapshot"
    store.save_snapshot(marked)
    state = store.run_state(run_id)
    assert state is not None and state.request_hash == "from-the-snapshot"
    assert store.snapshots_ignored == 0


def test_snapshots_of_a_later_schema_version_live_apart() -> None:
    """Version 1 snapshots keep the run's id; later versions get an id of their own, so new
    snapshots can be written where old ones sit."""
    run = uuid.uuid4()
    assert snapshot_originator(run, 1) == run
    assert snapshot_originator(run) == snapshot_originator(run, codec.SNAPSHOT_SCHEMA_VERSION)
    assert snapshot_originator(run, 2) == snapshot_originator(run, 2) != run
    assert snapshot_originator(run, 3) not in (run, snapshot_originator(run, 2))


def test_after_a_snapshot_version_bump_old_snapshots_are_not_read(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the snapshot version raised, reads ignore older snapshots and write new ones."""
    run_id, events = stored_run(store)
    stale = fold(events[:4], new_state(run_id))
    stale.request_hash = "stale"
    store.save_snapshot(stale)
    bumped = codec.SNAPSHOT_SCHEMA_VERSION + 1
    monkeypatch.setattr(codec, "SNAPSHOT_SCHEMA_VERSION", bumped)
    monkeypatch.setattr("flowweaver.store.base.SNAPSHOT_TOPIC", f"RunSnapshot@{bumped}")
    monkeypatch.setattr(codec, "SNAPSHOT_TOPIC", f"RunSnapshot@{bumped}")
    store.snapshot_interval = 4
    state = store.run_state(run_id)
    assert state == fold(events, new_state(run_id))
    rows = store._snapshots.select_events(snapshot_originator(uuid.UUID(run_id), bumped))
    assert [(r.originator_version, r.topic) for r in rows] == [
        (4, f"RunSnapshot@{bumped}"),
        (8, f"RunSnapshot@{bumped}"),
    ]
    assert store.run_state(run_id, at=5) == fold(events[:5], new_state(run_id))
    assert store.snapshots_ignored == 0


def test_the_documented_upcaster_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upcaster example of docs/concepts.md registers and turns a stored v1 event into v2."""
    text = (Path(__file__).parents[2] / "docs" / "concepts.md").read_text()
    section = text[text.index("## Event schema versions") :]
    block = section[section.index("```python") + len("```python") : section.index("  ```\n\n")]
    source = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    monkeypatch.setitem(codec.SCHEMA_VERSIONS, "TaskStarted", 2)  # as if TaskStarted were bumped
    monkeypatch.setattr(codec, "UPCASTERS", {})
    exec(compile(source, "docs/concepts.md", "exec"), {})  # noqa: S102 - our own docs
    step = codec.UPCASTERS[("TaskStarted", 1)]
    stored = {"type": "TaskStarted", "timestamp": "2024-05-01T12:00:00Z", "worker": "w-1"}
    assert step(stored)["worker"] == {"name": "w-1", "host": None}
