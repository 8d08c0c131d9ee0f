"""Engine.fork_run on a real SQLite store: what runs again, what is carried, lineage,
idempotency, bad requests that store nothing, and a fork resumed by a new engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowweaver.domain.events import RunForked
from flowweaver.domain.ids import run_id_for_key
from flowweaver.engine import Engine
from flowweaver.errors import IdempotencyConflictError, NotFoundError, ValidationError
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import EventStore
from flowweaver.store import SQLiteEventStore
from tests.engine.conftest import EngineFactory, Gate
from tests.fork_support import FORKABLE, Calls

WAIT = 20.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """A SQLite file (the fork tests need no second store kind: forks are store-agnostic)."""
    store = SQLiteEventStore(str(tmp_path / "fork.db"))
    yield store
    store.close()


@pytest.fixture
def calls(registry: HandlerRegistry) -> Calls:
    """The counting handlers, registered."""
    calls = Calls()
    calls.register(registry)
    return calls


def failed_parent(engine: Engine, calls: Calls) -> str:
    """Run FORKABLE once with b failing for good; return the run id."""
    engine.register_workflow(FORKABLE)
    run = engine.start_run("forkable", parameters={"v": 7, "p": "old"})
    state = engine.wait_run_finished(run.run_id, timeout=WAIT)
    assert state.status == "failed"
    assert {t: s.status for t, s in state.tasks.items()} == {
        "a": "completed",
        "b": "failed",
        "c": "skipped",
        "d": "completed",
    }
    assert calls.by_task == Counter({"a": 1, "b": 1, "d": 1})
    return run.run_id


def test_default_fork_of_a_failed_run_reruns_only_the_failed_task_and_what_follows(
    engine: Engine, calls: Calls
) -> None:
    """With no arguments a fork reruns from the point of failure: b and c run, a and d are
    carried with their outputs and never run again; the parent is not changed."""
    parent_id = failed_parent(engine, calls)
    parent_events = len(engine.store.read_run(parent_id))
    calls.failing.clear()
    fork = engine.fork_run(parent_id, reason="fixed the bug", by="ops")
    assert fork.created
    state = engine.wait_run_finished(fork.run_id, timeout=WAIT)
    assert state.status == "completed"
    assert calls.by_task == Counter({"a": 1, "b": 2, "c": 1, "d": 1})
    assert state.tasks["c"].output == {"result": {"value": 7, "p": "old"}}
    assert state.tasks["a"].output == {"result": {"value": 7}}
    assert (state.parent_run_id, state.parent_version) == (parent_id, parent_events)
    first = engine.store.read_run(fork.run_id, upto=1)[0].event
    assert isinstance(first, RunForked)
    assert (first.reset, first.by, first.reason) == (("b", "c"), "ops", "fixed the bug")
    assert set(first.carried) == {"a", "d"}
    assert len(engine.store.read_run(parent_id)) == parent_events


def test_fork_at_an_earlier_version_reruns_what_had_not_completed_by_then(
    engine: Engine, calls: Calls
) -> None:
    """atVersion picks the parent's state as of that event: only what completed by then is
    carried."""
    parent_id = failed_parent(engine, calls)
    events = engine.store.read_run(parent_id)
    a_done = next(e.version for e in events if e.name == "TaskCompleted" and e.event.task_id == "a")
    calls.failing.clear()
    fork = engine.fork_run(parent_id, at_version=a_done)
    state = engine.wait_run_finished(fork.run_id, timeout=WAIT)
    assert state.status == "completed"
    assert state.parent_version == a_done
    assert calls.by_task == Counter({"a": 1, "b": 2, "c": 1, "d": 2})


def test_reset_parameters_and_an_output_override_reach_the_downstream_inputs(
    engine: Engine, calls: Calls
) -> None:
    """reset names what runs again; an override replaces a carried output, and new parameters
    replace the parent's: the downstream task sees both."""
    calls.failing.clear()
    engine.register_workflow(FORKABLE)
    run = engine.start_run("forkable", parameters={"v": 7, "p": "old"})
    assert engine.wait_run_finished(run.run_id, timeout=WAIT).status == "completed"
    fork = engine.fork_run(
        run.run_id,
        reset=["b"],
        parameters={"v": 7, "p": "new"},
        outputs={"a": {"result": {"value": 42}}},
    )
    state = engine.wait_run_finished(fork.run_id, timeout=WAIT)
    assert state.status == "completed"
    assert state.tasks["b"].output == {"result": {"x": 42}}
    assert state.tasks["c"].output == {"result": {"value": 42, "p": "new"}}
    assert state.tasks["d"].output == {"result": {"value": 1}}
    assert calls.by_task == Counter({"a": 1, "b": 2, "c": 2, "d": 1})


def test_a_live_run_forks_and_both_finish_on_their_own(
    engine: Engine, registry: HandlerRegistry, gate: Gate
) -> None:
    """Forking a run that is still running leaves it running; the fork reruns what had not
    completed and the parent never sees the fork's events."""
    engine.register_workflow(
        {
            "id": "live",
            "tasks": [
                {"id": "first", "handler": "noop"},
                {"id": "wait", "handler": "gate", "dependencies": ["first"]},
            ],
        }
    )
    parent = engine.start_run("live")
    assert gate.entered.wait(WAIT)
    fork = engine.fork_run(parent.run_id)
    assert fork.state.tasks["first"].status == "completed"
    assert fork.state.tasks["wait"].status in ("scheduled", "running")
    gate.opened.set()
    assert engine.wait_run_finished(parent.run_id, timeout=WAIT).status == "completed"
    assert engine.wait_run_finished(fork.run_id, timeout=WAIT).status == "completed"
    assert gate.calls == 2
    assert "RunForked" not in [e.name for e in engine.store.read_run(parent.run_id)]


def test_a_fork_of_a_fork_shows_its_lineage_both_ways(engine: Engine, calls: Calls) -> None:
    """lineage names a fork's parent and lists each run's forks, newest first."""
    calls.failing.clear()
    engine.register_workflow(FORKABLE)
    root = engine.start_run("forkable", parameters={"v": 1, "p": "x"}).run_id
    engine.wait_run_finished(root, timeout=WAIT)
    child = engine.fork_run(root, reset=["d"]).run_id
    engine.wait_run_finished(child, timeout=WAIT)
    second = engine.fork_run(root, at_version=2).run_id
    grandchild = engine.fork_run(child).run_id
    for run_id in (second, grandchild):
        engine.wait_run_finished(run_id, timeout=WAIT)
    top = engine.lineage(root)
    assert top.parent is None
    assert [c.id for c in top.children] == [second, child]
    assert [c.parent_version for c in top.children] == [2, len(engine.store.read_run(root))]
    middle = engine.lineage(child)
    assert middle.parent is not None
    assert middle.parent.run_id == root
    assert [c.id for c in middle.children] == [grandchild]
    bottom = engine.lineage(grandchild)
    assert bottom.parent is not None
    assert (bottom.parent.run_id, bottom.children) == (child, [])
    first_page = engine.lineage(root, limit=1)
    assert [c.id for c in first_page.children] == [second]
    assert first_page.next_cursor is not None
    rest = engine.lineage(root, limit=1, cursor=first_page.next_cursor)
    assert ([c.id for c in rest.children], rest.next_cursor) == ([child], None)


def test_a_repeated_key_returns_the_fork_and_a_reused_one_conflicts(
    engine: Engine, calls: Calls
) -> None:
    """The same key and request give the existing fork (created False); the same key with
    another request is an IdempotencyConflictError; keys are scoped to their parent and never
    give the id a POST /runs key does."""
    parent_id = failed_parent(engine, calls)
    first = engine.fork_run(parent_id, idempotency_key="k1", reset=["b"])
    again = engine.fork_run(parent_id, idempotency_key="k1", reset=["b"], reason="other words")
    assert (again.run_id, again.created) == (first.run_id, False)
    engine.wait_run_finished(first.run_id, timeout=WAIT)  # so that the log stands still
    before = engine.store.max_position()
    with pytest.raises(IdempotencyConflictError):
        engine.fork_run(parent_id, idempotency_key="k1", reset=["c"])
    assert engine.store.max_position() == before
    other_parent = engine.start_run("forkable", parameters={"v": 2, "p": "q"}).run_id
    engine.wait_run_finished(other_parent, timeout=WAIT)
    elsewhere = engine.fork_run(other_parent, idempotency_key="k1", reset=["b"])
    assert elsewhere.created and elsewhere.run_id != first.run_id
    assert first.run_id != run_id_for_key("forkable", "k1")
    engine.wait_run_finished(elsewhere.run_id, timeout=WAIT)


@pytest.mark.parametrize(
    ("arguments", "error", "path"),
    [
        ({"at_version": 0}, ValidationError, "$.atVersion"),
        ({"at_version": 999}, ValidationError, "$.atVersion"),
        ({"reset": ["nope"]}, ValidationError, "$.reset[0]"),
        ({"outputs": {"b": 1}}, ValidationError, "$.outputs.b"),
        ({"outputs": {"zz": 1}}, ValidationError, "$.outputs.zz"),
        ({"outputs": [1]}, ValidationError, "$.outputs"),
        ({"parameters": "x"}, ValidationError, "$.parameters"),
        ({"idempotency_key": ""}, ValidationError, "$.idempotencyKey"),
    ],
)
def test_a_bad_fork_request_raises_and_stores_nothing(
    engine: Engine, calls: Calls, arguments: dict[str, Any], error: type[Exception], path: str
) -> None:
    """Each bad argument raises with its JSON path, and the log does not grow."""
    parent_id = failed_parent(engine, calls)
    before = engine.store.max_position()
    with pytest.raises(error) as raised:
        engine.fork_run(parent_id, **arguments)
    assert isinstance(raised.value, ValidationError)
    assert path in [e.path for e in raised.value.errors]
    assert engine.store.max_position() == before


def test_forking_an_unknown_run_is_not_found(engine: Engine) -> None:
    """No such run (or no UUID at all) is NotFoundError, and nothing is stored."""
    for run_id in ("8d1f8a52-4a39-4c52-9d6e-2f8e0b1c5a77", "not-a-run"):
        with pytest.raises(NotFoundError):
            engine.fork_run(run_id)
        with pytest.raises(NotFoundError):
            engine.lineage(run_id)
    assert engine.store.max_position() == 0


def test_a_fork_left_unfinished_is_resumed_by_the_next_engine(
    make_engine: EngineFactory, registry: HandlerRegistry, calls: Calls, gate: Gate
) -> None:
    """A fork whose engine closed while its task ran is resumed by the next engine on the
    store, like any run; its carried tasks still do not run again."""
    engine = make_engine()
    engine.register_workflow(
        {
            "id": "resumable",
            "tasks": [
                {"id": "a", "handler": "count", "inputs": {"value": 1}},
                {"id": "g", "handler": "gate", "dependencies": ["a"]},
            ],
        }
    )
    parent = engine.start_run("resumable")
    assert gate.entered.wait(WAIT)
    gate.opened.set()
    engine.wait_run_finished(parent.run_id, timeout=WAIT)
    gate.opened.clear()
    gate.entered.clear()
    fork = engine.fork_run(parent.run_id, reset=["g"])
    assert gate.entered.wait(WAIT)
    engine.close(grace=0.1)
    gate.opened.set()  # frees the abandoned handler thread; its outcome has no engine now
    assert not engine.store.run_state(fork.run_id).is_terminal  # type: ignore[union-attr]
    after = make_engine()
    state = after.wait_run_finished(fork.run_id, timeout=WAIT)
    assert state.status == "completed"
    assert calls.by_task["a"] == 1
    assert gate.calls == 3
