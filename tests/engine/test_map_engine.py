"""Map tasks on the engine with real stores (memory and a SQLite file): results in order,
per-element retries, bad input, cancel, the docs example, and a restart after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowweaver.domain.events import MapElementCompleted, MapElementStarted, TaskFailed
from flowweaver.domain.replay_check import check_run
from flowweaver.engine import Engine
from flowweaver.handlers import HandlerRegistry, TaskContext
from flowweaver.store import SQLiteEventStore
from tests.docs_support import code_blocks, doc_section
from tests.engine import map_crash_child

ROOT = Path(__file__).resolve().parents[2]


def _map_workflow(max_attempts: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "id": "squares",
        "tasks": [
            {
                "id": "fan",
                "handler": "square",
                "inputs": {"items": "$.params.xs", "offset": 0},
                "map": "$.items",
                "retry": {"maxAttempts": max_attempts, "initialDelay": 0.01},
                **extra,
            },
            {
                "id": "after",
                "handler": "echo",
                "dependencies": ["fan"],
                "inputs": {"values": "$.result"},
            },
        ],
    }


class Square:
    """Squares ``item``; fails the first attempt of every element whose index is in ``flaky``."""

    def __init__(self, flaky: frozenset[int] = frozenset()) -> None:
        self.flaky = flaky
        self.calls: Counter[int] = Counter()
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, inputs: dict[str, Any], context: TaskContext) -> int:
        index = inputs["index"]
        with self._lock:
            self.calls[index] += 1
            self.keys.add(context.idempotency_key)
        assert inputs["offset"] == 0 and "items" in inputs
        if index in self.flaky and context.attempt == 1:
            raise ValueError(f"element {index} is flaky")
        item: int = inputs["item"]
        return item * item


def test_a_map_runs_every_element_and_publishes_the_results_in_order(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """200 elements on four workers, a few retried on their own: the list comes out in order,
    each element ran once more only where it failed, and check-replay agrees."""
    square = Square(flaky=frozenset({3, 50, 199}))
    registry.register("square", square)
    engine.register_workflow(_map_workflow())
    xs = list(range(200))
    run = engine.start_run("squares", parameters={"xs": xs})
    state = engine.wait_run_finished(run.run_id, timeout=30)
    assert state.status == "completed"
    assert state.tasks["fan"].output == {"result": [x * x for x in xs]}
    assert state.tasks["after"].output == {"result": {"values": [x * x for x in xs]}}
    assert square.calls == Counter({i: 2 if i in square.flaky else 1 for i in xs})
    assert len(square.keys) == 200  # one idempotency key per element
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    completed = Counter(e.index for e in stored if isinstance(e, MapElementCompleted))
    assert completed == Counter(dict.fromkeys(xs, 1))
    assert check_run(run.run_id, stored).difference is None
    fan = state.tasks["fan"]
    assert fan.elements is not None
    assert (fan.elements.total, fan.elements.completed, fan.elements.failed) == (200, 200, 0)


def test_an_element_failing_for_good_fails_the_task_and_skips_what_follows(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """With one attempt, the flaky element fails the task with its error; ``after`` is skipped."""
    registry.register("square", Square(flaky=frozenset({7})))
    engine.register_workflow(_map_workflow(max_attempts=1))
    run = engine.start_run("squares", parameters={"xs": list(range(20))})
    state = engine.wait_run_finished(run.run_id, timeout=30)
    assert state.status == "failed"
    fan = state.tasks["fan"]
    assert fan.status == "failed"
    assert fan.last_error is not None
    assert fan.last_error.type == "ValueError"
    assert fan.last_error.message == "element 7: element 7 is flaky"
    assert state.tasks["after"].status == "skipped"
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    assert check_run(run.run_id, stored).difference is None


@pytest.mark.parametrize(
    ("xs", "status", "expected"),
    [
        (5, "failed", "MapInputError"),
        ({"not": "a list"}, "failed", "MapInputError"),
        (list(range(10_001)), "failed", "MapInputError"),
        ([], "completed", None),
    ],
)
def test_bad_or_empty_lists_end_the_task_at_once(
    engine: Engine, registry: HandlerRegistry, xs: Any, status: str, expected: str | None
) -> None:
    """Not a list or too long: a clear, non-retryable task failure; empty: ``[]``."""
    registry.register("square", Square())
    engine.register_workflow(_map_workflow())
    run = engine.start_run("squares", parameters={"xs": xs})
    state = engine.wait_run_finished(run.run_id, timeout=30)
    assert state.status == status
    fan = state.tasks["fan"]
    if expected is None:
        assert fan.output == {"result": []}
    else:
        assert fan.last_error is not None
        assert fan.last_error.type == expected
        assert not fan.last_error.retryable
        assert fan.attempts == 1


def test_a_cancel_mid_map_stops_elements_from_starting(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """Cancelled while four elements block: they finish, none of the other 96 starts."""
    opened = threading.Event()
    entered = threading.Semaphore(0)

    def block(inputs: dict[str, Any], context: TaskContext) -> int:
        entered.release()
        opened.wait(10)
        return 0

    registry.register("square", block)
    engine.register_workflow(_map_workflow())
    run = engine.start_run("squares", parameters={"xs": list(range(100))})
    for _ in range(4):
        assert entered.acquire(timeout=10)
    engine.cancel_run(run.run_id, "enough")
    opened.set()
    state = engine.wait_run_finished(run.run_id, timeout=30)
    assert state.status == "cancelled"
    assert state.tasks["fan"].status == "cancelled"
    stored = [e.event for e in engine.store.read_run(run.run_id)]
    assert sum(isinstance(e, MapElementStarted) for e in stored) == 4


def test_the_concepts_example_runs_as_written(tmp_path: Path) -> None:
    """The workflow and the Python block of docs/concepts.md, "Map", print what the page says."""
    section = doc_section("concepts.md", "## Map")
    [document] = code_blocks(section, "json")
    [code] = code_blocks(section, "python")
    (tmp_path / "sum-of-squares.json").write_text(document)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "{'result': [1, 4, 9]} {'result': 14}"


def _run_child(db: Path, log: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k != "FLOWWEAVER_FAULTS"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.engine.map_crash_child", str(db), str(log)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


@pytest.mark.slow
def test_killed_mid_map_the_restart_reruns_no_completed_element(tmp_path: Path) -> None:
    """kill -9 while elements run; on restart elements completed before are not run again,
    the interrupted ones are, and the list comes out once, in order."""
    db, log = tmp_path / "map.db", tmp_path / "calls.log"
    log.touch()
    assert _run_child(db, log) == -signal.SIGKILL
    store = SQLiteEventStore(str(db))
    try:
        [row] = store.list_runs(limit=10).runs
        before = [e.event for e in store.read_run(row.id)]
    finally:
        store.close()
    done_before = {e.index for e in before if isinstance(e, MapElementCompleted)}
    assert done_before  # the crash came mid-map
    assert len(done_before) < map_crash_child.ELEMENTS
    assert _run_child(db, log) == 0
    store = SQLiteEventStore(str(db))
    try:
        state = store.run_state(row.id)
        events = [e.event for e in store.read_run(row.id)]
    finally:
        store.close()
    assert state is not None
    assert state.status == "completed"
    n = map_crash_child.ELEMENTS
    assert state.tasks["fan"].output == {"result": [i * i for i in range(n)]}
    completed = Counter(e.index for e in events if isinstance(e, MapElementCompleted))
    assert completed == Counter(dict.fromkeys(range(n), 1))
    calls = Counter(line.split()[1] for line in log.read_text().splitlines() if line.strip())
    for index in done_before:
        assert calls[f"fan[{index}]"] == 1, index
    interrupted = [
        e for e in events if isinstance(e, TaskFailed) or type(e).__name__ == "MapElementFailed"
    ]
    assert interrupted  # at least the killer element was recorded as interrupted
    assert check_run(row.id, events).difference is None
