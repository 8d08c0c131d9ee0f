"""The engine end to end on real stores: data passing, parallelism, retries, timeouts,
cancellation, idempotency, supervision and shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flowweaver.domain import run as commands
from flowweaver.domain.events import (
    RunCancelled,
    RunCompleted,
    TaskFailed,
    TaskRetried,
    TaskSkipped,
)
from flowweaver.engine import Engine
from flowweaver.errors import (
    EngineClosedError,
    IdempotencyConflictError,
    InvalidCommandError,
    NotFoundError,
    StoreError,
    ValidationError,
)
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import Append
from flowweaver.store import MemoryEventStore
from tests.engine.conftest import EngineFactory, Gate, chain

ORIGINAL_EXAMPLE = {
    "id": "data-pipeline",
    "name": "Data pipeline",
    "tasks": [
        {
            "id": "task1",
            "handler": "fetch_data",
            "inputs": {"url": "$.params.url"},
            "outputs": {"data": "$.result.data"},
        },
        {
            "id": "task2",
            "handler": "process_data",
            "dependencies": ["task1"],
            "inputs": {"data": "$.data"},
        },
        {
            "id": "task3",
            "handler": "save_result",
            "dependencies": ["task2"],
            "inputs": {"result": "$.result"},
        },
    ],
}


def names(engine: Engine, run_id: str) -> list[str]:
    return [e.name for e in engine.store.read_run(run_id)]


def test_original_example_passes_data_along_the_chain(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """fetch_data -> process_data -> save_result works as the original README wrote it."""
    registry.register("fetch_data", lambda inputs: {"data": [1, 2, 3], "from": inputs["url"]})
    registry.register("process_data", lambda inputs: [x * 10 for x in inputs["data"]])
    saved: list[Any] = []
    registry.register("save_result", lambda inputs: saved.append(inputs["result"]) or "ok")
    engine.register_workflow(ORIGINAL_EXAMPLE)
    run = engine.start_run("data-pipeline", parameters={"url": "http://example.test"})
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert saved == [[10, 20, 30]]
    assert state.tasks["task1"].output == {"data": [1, 2, 3]}
    assert state.tasks["task3"].output == {"result": "ok"}
    assert names(engine, run.run_id) == [
        "RunStarted",
        *["TaskScheduled", "TaskStarted", "TaskCompleted"] * 3,
        "RunCompleted",
    ]


def test_versions_are_contiguous_and_state_is_the_replay(engine: Engine) -> None:
    """Every run's versions are 1..N without gaps and its state is the fold of them."""
    engine.register_workflow(chain())
    run = engine.start_run("chain3", parameters={"value": 7})
    state = engine.wait_run_finished(run.run_id, timeout=10)
    versions = [e.version for e in engine.store.read_run(run.run_id)]
    assert versions == list(range(1, state.version + 1))
    assert state.tasks["t3"].output == {"result": {"value": 7}}


def test_the_handle_keeps_the_run_as_its_start_stored_it(engine: Engine) -> None:
    """The state start_run answers with is the run as its first append stored it, also once
    the run has moved on: the actor decides on a state of its own (a POST /runs answer made
    from the handle showed a run failed before RunFailed was stored)."""
    engine.register_workflow(chain())
    run = engine.start_run("chain3", parameters={"value": 7})
    final = engine.wait_run_finished(run.run_id, timeout=10)
    assert final.status == "completed"
    assert run.state is not final
    assert run.state.status == "running"
    assert run.state == engine.store.run_state(run.run_id, at=run.state.version)
    assert run.state.version < final.version


class _AppendLog(MemoryEventStore):
    """Records each run's appends (event names), and refuses the next ``refuse`` appends."""

    def __init__(self) -> None:
        super().__init__()
        self.appends: list[tuple[str, list[str]]] = []
        self.refuse = 0
        self.refused = 0

    def append(self, appends: Sequence[Append]) -> list[int]:
        if self.refuse:
            self.refuse -= 1
            self.refused += 1
            raise StoreError("refused for the test")
        positions = super().append(appends)
        self.appends += [(a.run_id, [type(e).__name__ for e in a.events]) for a in appends]
        return positions

    def of(self, run_id: str) -> list[list[str]]:
        return [names for run, names in self.appends if run == run_id]


@pytest.mark.timeout(30)
def test_a_new_run_starts_its_first_task_in_its_first_append(registry: HandlerRegistry) -> None:
    """With a worker idle, TaskStarted goes into the append that stores RunStarted: no append
    of its own, and the handle shows the task running."""
    store = _AppendLog()
    engine = Engine(store, handlers=registry, workers=2)
    try:
        engine.register_workflow(chain())
        run = engine.start_run("chain3", parameters={"value": 1})
        assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
        appends = store.of(run.run_id)
        assert appends[0] == ["RunStarted", "TaskScheduled", "TaskStarted"]
        assert ["TaskStarted"] not in appends
        assert run.state.tasks["t1"].status == "running"
    finally:
        engine.close(grace=2)


@pytest.mark.timeout(30)
def test_a_new_run_waits_for_a_worker_when_none_is_idle(
    registry: HandlerRegistry, gate: Gate
) -> None:
    """With every worker busy, the first append only schedules; the task starts later."""
    store = _AppendLog()
    engine = Engine(store, handlers=registry, workers=1)
    try:
        engine.register_workflow({"id": "hold", "tasks": [{"id": "g", "handler": "gate"}]})
        engine.register_workflow(chain())
        holding = engine.start_run("hold")
        assert gate.entered.wait(10)
        run = engine.start_run("chain3", parameters={"value": 1})
        assert store.of(run.run_id)[0] == ["RunStarted", "TaskScheduled"]
        assert run.state.tasks["t1"].status == "scheduled"
        gate.opened.set()
        assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
        assert engine.wait_run_finished(holding.run_id, timeout=10).status == "completed"
    finally:
        gate.opened.set()
        engine.close(grace=2)


@pytest.mark.timeout(30)
def test_a_refused_first_append_gives_its_worker_back(registry: HandlerRegistry) -> None:
    """The worker set aside for a new run's first task returns to the pool when the store
    refuses the append: the engine's only worker runs the next run."""
    store = _AppendLog()
    engine = Engine(store, handlers=registry, workers=1)
    try:
        engine.register_workflow(chain())
        store.refuse = 1
        with pytest.raises(StoreError):
            engine.start_run("chain3", parameters={"value": 1})
        assert store.refused == 1
        run = engine.start_run("chain3", parameters={"value": 2})
        assert store.of(run.run_id)[0] == ["RunStarted", "TaskScheduled", "TaskStarted"]
        assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"
    finally:
        engine.close(grace=2)


def test_independent_tasks_run_in_parallel(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """Four independent tasks are all running at once on a pool of four workers."""
    barrier = threading.Barrier(4, timeout=10)

    def meet(inputs: dict[str, Any]) -> int:
        return barrier.wait()

    registry.register("meet", meet)
    engine = make_engine(workers=4)
    engine.register_workflow(
        {"id": "fan", "tasks": [{"id": f"p{i}", "handler": "meet"} for i in range(4)]}
    )
    run = engine.start_run("fan")
    assert engine.wait_run_finished(run.run_id, timeout=15).status == "completed"


def test_join_waits_for_every_dependency(engine: Engine) -> None:
    """A join task runs once, after all of its dependencies, with their outputs merged."""
    engine.register_workflow(
        {
            "id": "join",
            "tasks": [
                {"id": "a", "handler": "echo", "inputs": {"x": 1}, "outputs": {"a": "$.result.x"}},
                {"id": "b", "handler": "echo", "inputs": {"x": 2}, "outputs": {"b": "$.result.x"}},
                {
                    "id": "j",
                    "handler": "echo",
                    "dependencies": ["a", "b"],
                    "inputs": {"sum": ["$.a", "$.b"], "all": "$.tasks.a"},
                },
            ],
        }
    )
    state = engine.wait_run_finished(engine.start_run("join").run_id, timeout=10)
    assert state.tasks["j"].output == {"result": {"sum": [1, 2], "all": {"a": 1}}}


def test_retries_with_backoff_until_success(engine: Engine) -> None:
    """fail(times=2) fails twice, is retried after its delays, then completes on attempt 3."""
    engine.register_workflow(
        {
            "id": "flaky",
            "tasks": [
                {
                    "id": "f",
                    "handler": "fail",
                    "inputs": {"times": 2},
                    "retry": {"maxAttempts": 3, "initialDelay": 0.01, "backoffFactor": 2},
                }
            ],
        }
    )
    run = engine.start_run("flaky")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    assert state.tasks["f"].attempts == 3
    events = [e.event for e in engine.store.read_run(run.run_id)]
    failed = [e for e in events if isinstance(e, TaskFailed)]
    retried = [e for e in events if isinstance(e, TaskRetried)]
    assert [f.attempt for f in failed] == [1, 2]
    assert [r.attempt for r in retried] == [2, 3]
    assert all(f.retry_at is not None and f.retry_at > f.timestamp for f in failed)
    delays = [(f.retry_at - f.timestamp).total_seconds() for f in failed if f.retry_at]
    assert delays == pytest.approx([0.01, 0.02], abs=1e-6)
    assert all(
        r.timestamp >= f.retry_at for f, r in zip(failed, retried, strict=True) if f.retry_at
    )


def test_retries_run_out_and_the_run_fails_skipping_downstream(engine: Engine) -> None:
    """A task that keeps failing fails for good: descendants skipped, a sibling completes."""
    engine.register_workflow(
        {
            "id": "doomed",
            "defaults": {"retry": {"maxAttempts": 2, "initialDelay": 0.0}},
            "tasks": [
                {"id": "bad", "handler": "fail"},
                {"id": "after", "handler": "noop", "dependencies": ["bad"]},
                {"id": "later", "handler": "noop", "dependencies": ["after"]},
                {"id": "sibling", "handler": "noop"},
            ],
        }
    )
    run = engine.start_run("doomed")
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "failed"
    assert state.tasks["bad"].status == "failed"
    assert state.tasks["bad"].attempts == 2
    assert state.tasks["after"].status == "skipped"
    assert state.tasks["later"].status == "skipped"
    assert state.tasks["sibling"].status == "completed"
    assert state.summary is not None and state.summary.failed_tasks == ("bad",)
    skipped = [e.event for e in engine.store.read_run(run.run_id) if e.name == "TaskSkipped"]
    assert all(isinstance(s, TaskSkipped) and "bad" in s.reason for s in skipped)


def test_non_retryable_error_types_fail_at_once(engine: Engine) -> None:
    """An error type listed in nonRetryable is not retried, whatever maxAttempts says."""
    engine.register_workflow(
        {
            "id": "nr",
            "tasks": [
                {
                    "id": "f",
                    "handler": "fail",
                    "retry": {"maxAttempts": 5, "initialDelay": 0, "nonRetryable": ["FailError"]},
                }
            ],
        }
    )
    state = engine.wait_run_finished(engine.start_run("nr").run_id, timeout=10)
    assert state.status == "failed"
    assert state.tasks["f"].attempts == 1
    assert state.tasks["f"].last_error is not None
    assert state.tasks["f"].last_error.type == "FailError"
    assert state.tasks["f"].last_error.retryable is False
    [failed] = [r.event for r in engine.store.read_run(state.id) if r.name == "TaskFailed"]
    assert isinstance(failed, TaskFailed)
    assert failed.error.retryable is False
    assert failed.retry_at is None


def test_input_path_matching_nothing_fails_the_task_clearly(engine: Engine) -> None:
    """An input path that matches nothing fails the task for good with a clear message."""
    engine.register_workflow(
        {
            "id": "missing",
            "tasks": [
                {
                    "id": "t",
                    "handler": "echo",
                    "inputs": {"x": "$.params.nope"},
                    "retry": {"maxAttempts": 3},
                }
            ],
        }
    )
    state = engine.wait_run_finished(engine.start_run("missing").run_id, timeout=10)
    error = state.tasks["t"].last_error
    assert state.status == "failed"
    assert error is not None and error.type == "InputError" and not error.retryable
    assert "$.params.nope" in error.message


def test_sync_timeout_fails_the_attempt_and_frees_the_worker(
    make_engine: EngineFactory, gate: Gate
) -> None:
    """A stuck sync handler times out; with one worker, the next task still runs."""
    engine = make_engine(workers=1)
    engine.register_workflow(
        {
            "id": "stuck",
            "tasks": [
                {"id": "s", "handler": "gate", "timeout": 0.2},
                {"id": "n", "handler": "noop"},
            ],
        }
    )
    state = engine.wait_run_finished(engine.start_run("stuck").run_id, timeout=10)
    gate.opened.set()
    assert state.tasks["s"].status == "failed"
    assert state.tasks["s"].last_error is not None
    assert state.tasks["s"].last_error.type == "Timeout"
    assert state.tasks["n"].status == "completed"


def test_async_handler_is_awaited_and_cancelled_on_timeout(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """Async handlers run on the event loop; one past its timeout is cancelled for real."""
    cancelled = threading.Event()

    async def quick(inputs: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        return 5

    async def slow(inputs: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    registry.register("quick", quick)
    registry.register("slow", slow)
    engine.register_workflow(
        {
            "id": "async",
            "tasks": [
                {"id": "q", "handler": "quick"},
                {"id": "s", "handler": "slow", "timeout": 0.2},
            ],
        }
    )
    state = engine.wait_run_finished(engine.start_run("async").run_id, timeout=10)
    assert state.tasks["q"].output == {"result": 5}
    assert state.tasks["s"].last_error is not None
    assert state.tasks["s"].last_error.type == "Timeout"
    assert cancelled.wait(5)


def test_cancel_stops_pending_tasks_and_flags_running_ones(engine: Engine, gate: Gate) -> None:
    """Cancel: the running handler sees the flag, pending tasks cancel, RunCancelled ends it."""
    engine.register_workflow(
        {
            "id": "long",
            "tasks": [
                {"id": "g", "handler": "gate"},
                {"id": "next", "handler": "noop", "dependencies": ["g"]},
            ],
        }
    )
    run = engine.start_run("long")
    assert gate.entered.wait(10)
    engine.cancel_run(run.run_id, reason="operator said so")
    gate.opened.set()
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "cancelled"
    assert state.tasks["next"].status == "cancelled"
    assert state.tasks["g"].output == {"result": {"cancelled": True}}
    last = engine.store.read_run(run.run_id)[-1].event
    assert isinstance(last, RunCancelled) and last.reason == "operator said so"
    with pytest.raises(InvalidCommandError):
        engine.cancel_run(run.run_id)


def test_cancel_of_sleep_builtin_returns_early(engine: Engine) -> None:
    """The sleep built-in wakes when the run is cancelled instead of sleeping on."""
    engine.register_workflow(
        {"id": "nap", "tasks": [{"id": "z", "handler": "sleep", "inputs": {"seconds": 60}}]}
    )
    run = engine.start_run("nap")
    _wait_for(lambda: engine.get_run(run.run_id).tasks["z"].status == "running")
    engine.cancel_run(run.run_id)
    state = engine.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "cancelled"


def test_idempotency_key_returns_the_same_run(engine: Engine) -> None:
    """The same key and request return the existing run; the id is derived from the key."""
    engine.register_workflow(chain())
    first = engine.start_run("chain3", parameters={"value": 1}, idempotency_key="k-1")
    again = engine.start_run("chain3", parameters={"value": 1}, idempotency_key="k-1")
    assert first.created and not again.created
    assert again.run_id == first.run_id
    engine.wait_run_finished(first.run_id, timeout=10)
    assert len(engine.store.list_runs().runs) == 1


def test_idempotency_key_with_other_parameters_is_a_conflict(engine: Engine) -> None:
    """The same key with different parameters raises, and records nothing new."""
    engine.register_workflow(chain())
    run = engine.start_run("chain3", parameters={"value": 1}, idempotency_key="k-2")
    engine.wait_run_finished(run.run_id, timeout=10)
    before = engine.store.max_position()
    with pytest.raises(IdempotencyConflictError):
        engine.start_run("chain3", parameters={"value": 2}, idempotency_key="k-2")
    assert len(engine.store.list_runs().runs) == 1
    assert engine.store.max_position() == before


def test_concurrent_requests_with_one_key_create_one_run(engine: Engine) -> None:
    """Eight threads racing with one key get one run between them."""
    engine.register_workflow(chain())
    with ThreadPoolExecutor(8) as pool:
        handles = list(
            pool.map(
                lambda _: engine.start_run(
                    "chain3", parameters={"value": 3}, idempotency_key="race"
                ),
                range(8),
            )
        )
    assert len({h.run_id for h in handles}) == 1
    assert sum(h.created for h in handles) == 1
    engine.wait_run_finished(handles[0].run_id, timeout=10)


def test_unknown_handler_is_refused_at_run_start(engine: Engine) -> None:
    """A workflow naming an unregistered handler registers, but starting it is refused."""
    engine.register_workflow({"id": "ghost", "tasks": [{"id": "t", "handler": "no_such"}]})
    before = engine.store.max_position()
    with pytest.raises(ValidationError, match="no_such"):
        engine.start_run("ghost")
    assert engine.store.max_position() == before


def test_bad_requests_are_refused_and_store_nothing(engine: Engine) -> None:
    """Unknown workflows, bad parameters and bad keys raise clear errors and store nothing."""
    engine.register_workflow(chain())
    before = engine.store.max_position()
    with pytest.raises(NotFoundError):
        engine.start_run("nope")
    with pytest.raises(NotFoundError):
        engine.start_run("chain3", version=9)
    with pytest.raises(ValidationError):
        engine.start_run("chain3", parameters=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        engine.start_run("chain3", idempotency_key="")
    with pytest.raises(ValidationError):
        engine.register_workflow({"id": "bad id", "tasks": []})
    assert engine.store.max_position() == before


def test_run_actors_stop_when_runs_end(engine: Engine) -> None:
    """No run actor outlives its run."""
    engine.register_workflow(chain())
    runs = [engine.start_run("chain3", parameters={"value": i}).run_id for i in range(20)]
    for run_id in runs:
        engine.wait_run_finished(run_id, timeout=10)
    _wait_for(lambda: engine.live_runs() == 0)


def test_an_actor_that_raises_is_rebuilt_by_replay(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that kills a run actor once loses nothing: a new actor replays and finishes."""
    real = commands.record_completed
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(commands, "record_completed", flaky)
    engine.register_workflow(chain())
    run = engine.start_run("chain3", parameters={"value": 4})
    state = engine.wait_run_finished(run.run_id, timeout=15)
    assert state.status == "completed"
    versions = [e.version for e in engine.store.read_run(run.run_id)]
    assert versions == list(range(1, len(versions) + 1))


def test_close_refuses_new_runs_and_leaves_no_thread(store: Any, registry: HandlerRegistry) -> None:
    """After close, starting a run raises and no engine thread is left."""
    before = set(threading.enumerate())
    engine = Engine(store, handlers=registry, workers=3)
    engine.register_workflow(chain())
    engine.wait_run_finished(engine.start_run("chain3", parameters={"value": 1}).run_id, timeout=10)
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.start_run("chain3")
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []


def test_unfinished_runs_resume_in_a_new_engine(make_engine: EngineFactory, gate: Gate) -> None:
    """A run whose engine closed mid-task resumes in the next engine: the attempt is
    recorded as Interrupted, runs again, and the run completes."""
    first = make_engine()
    first.register_workflow(
        {
            "id": "resume",
            "tasks": [
                {"id": "g", "handler": "gate"},
                {"id": "h", "handler": "noop", "dependencies": ["g"]},
            ],
        }
    )
    run = first.start_run("resume")
    assert gate.entered.wait(10)
    threading.Timer(0.3, gate.opened.set).start()
    first.close(grace=0)  # the gate handler's outcome is never recorded
    gate.opened.set()
    second = make_engine()
    state = second.wait_run_finished(run.run_id, timeout=10)
    assert state.status == "completed"
    g = state.tasks["g"]
    assert g.interruptions == 1 and g.attempts == 2
    failed = [e.event for e in second.store.read_run(run.run_id) if e.name == "TaskFailed"]
    assert len(failed) == 1 and isinstance(failed[0], TaskFailed)
    assert failed[0].error.type == "Interrupted"


def test_state_at_every_version_is_a_prefix_replay(engine: Engine) -> None:
    """get_run(at=N) is the state after the first N events, for every N."""
    engine.register_workflow(chain())
    run = engine.start_run("chain3", parameters={"value": 2})
    final = engine.wait_run_finished(run.run_id, timeout=10)
    statuses = [
        engine.get_run(run.run_id, at=n).tasks["t1"].status for n in range(1, final.version + 1)
    ]
    assert statuses[:4] == ["pending", "scheduled", "running", "completed"]
    assert engine.get_run(run.run_id, at=final.version) == final
    assert isinstance(engine.store.read_run(run.run_id)[-1].event, RunCompleted)


def test_wait_times_out_with_a_clear_error(engine: Engine, gate: Gate) -> None:
    """wait_run_finished raises TimeoutError when the run is still going."""
    engine.register_workflow({"id": "slow", "tasks": [{"id": "g", "handler": "gate"}]})
    run = engine.start_run("slow")
    with pytest.raises(TimeoutError):
        engine.wait_run_finished(run.run_id, timeout=0.1)
    gate.opened.set()
    assert engine.wait_run_finished(run.run_id, timeout=10).status == "completed"


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                raise AssertionError("condition not reached in time")
    finally:
        deadline.cancel()
