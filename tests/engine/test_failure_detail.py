"""Failure detail on a real engine and SQLite store: the handler's traceback on TaskFailed, and
the lines it logged through ``context.log`` on the attempt's TaskCompleted or TaskFailed."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog

from flowweaver.domain.events import (
    MAX_LOG_BYTES,
    MAX_LOG_LINES,
    MAX_TRACEBACK_BYTES,
    LogLine,
    TaskCompleted,
    TaskFailed,
)
from flowweaver.engine import Engine
from flowweaver.engine.detail import bound_traceback, handler_traceback
from flowweaver.handlers import HandlerRegistry
from flowweaver.ports import EventStore
from flowweaver.store import SQLiteEventStore
from tests.engine.conftest import EngineFactory, Gate

ENGINE_MARKS = ("flowweaver/engine", "flowweaver/handlers.py", "asyncio", "concurrent/futures")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    """These tests run on a SQLite file only: what they check is what is stored."""
    store = SQLiteEventStore(str(tmp_path / "detail.db"))
    yield store
    store.close()


def one_task(engine: Engine, handler: str, **task: Any) -> str:
    """Register a one-task workflow running ``handler`` and start it; return the run id."""
    workflow_id = f"wf-{handler}"
    engine.register_workflow(
        {"id": workflow_id, "tasks": [{"id": "t", "handler": handler, **task}]}
    )
    run_id = engine.start_run(workflow_id).run_id
    engine.wait_run_finished(run_id, timeout=15)
    return run_id


def stored(engine: Engine, run_id: str, kind: type[Any]) -> list[Any]:
    """Return the stored events of ``kind``, decoded from the store (not the live state)."""
    return [r.event for r in engine.store.read_run(run_id) if isinstance(r.event, kind)]


def line_of(func: Any, marker: str) -> int:
    """Return the line number of the source line of ``func`` that holds ``marker``."""
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, line in enumerate(lines) if marker in line)


def test_traceback_names_the_handler_and_its_line_and_no_engine_frame(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """A handler that logs and raises: its frames and its lines are on TaskFailed."""

    def explode(inputs: dict[str, Any], context: Any) -> None:
        context.log.info("loading", rows=3)
        context.log.warning("giving up")
        raise ValueError("boom")  # raise-here

    registry.register("explode", explode)
    run_id = one_task(engine, "explode")
    (failed,) = stored(engine, run_id, TaskFailed)
    tb = failed.error.traceback
    assert tb is not None
    assert tb.startswith("Traceback (most recent call last):\n")
    assert f'File "{__file__}", line {line_of(explode, "raise-here")}, in explode' in tb
    assert 'raise ValueError("boom")' in tb
    assert tb.endswith("ValueError: boom\n")
    assert not [mark for mark in ENGINE_MARKS if mark in tb]
    assert failed.error.type == "ValueError"
    assert failed.error.message == "boom"
    assert [(line.level, line.message, line.fields) for line in failed.logs] == [
        ("info", "loading", {"rows": 3}),
        ("warning", "giving up", {}),
    ]
    state = engine.store.run_state(run_id)
    assert state is not None
    assert state.tasks["t"].last_error == failed.error
    assert state.tasks["t"].logs == failed.logs


def test_a_chained_exception_shows_its_cause_and_itself(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """``raise ... from e`` keeps both exceptions, the cause first, as Python prints them."""

    def lookup(inputs: dict[str, Any]) -> None:
        try:
            {}["missing"]
        except KeyError as e:
            raise RuntimeError("lookup failed") from e

    registry.register("lookup", lookup)
    (failed,) = stored(engine, one_task(engine, "lookup"), TaskFailed)
    tb = failed.error.traceback
    assert tb is not None
    cause = tb.index("KeyError: 'missing'")
    link = tb.index("The above exception was the direct cause of the following exception")
    assert cause < link < tb.index("RuntimeError: lookup failed")
    assert tb.count(", in lookup") == 2
    assert not [mark for mark in ENGINE_MARKS if mark in tb]


def test_a_huge_message_is_cut_to_the_bound_keeping_start_and_end(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """A 200 KB message: the traceback fits 16 KiB, with its start, a marker and the end."""

    def shout(inputs: dict[str, Any]) -> None:
        raise ValueError("é" * 100_000 + "THE-END")

    registry.register("shout", shout)
    (failed,) = stored(engine, one_task(engine, "shout"), TaskFailed)
    tb = failed.error.traceback
    assert tb is not None
    assert len(tb.encode("utf-8")) <= MAX_TRACEBACK_BYTES
    assert tb.startswith("Traceback (most recent call last):\n")
    assert ", in shout\n" in tb
    assert "bytes cut ...]" in tb
    assert "\nValueError: éé" in tb
    assert tb.endswith("THE-END\n")
    assert "\ufffd" not in tb
    assert len(failed.error.message) == 4000


def test_a_deep_recursion_traceback_is_cut_keeping_the_final_line(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """Mutual recursion (which Python cannot fold into one repeated line) is cut to 16 KiB."""

    def ping(n: int) -> int:
        return pong(n + 1)

    def pong(n: int) -> int:
        if n > 600:
            raise OverflowError(f"too deep at {n}")
        return ping(n + 1)

    def recurse(inputs: dict[str, Any]) -> int:
        return ping(0)

    registry.register("recurse", recurse)
    (failed,) = stored(engine, one_task(engine, "recurse"), TaskFailed)
    tb = failed.error.traceback
    assert tb is not None
    assert len(tb.encode("utf-8")) <= MAX_TRACEBACK_BYTES
    assert tb.startswith("Traceback (most recent call last):\n")
    assert tb.index(", in recurse\n") < tb.index("bytes cut ...]")
    assert tb.endswith("\nOverflowError: too deep at 601\n")
    assert not [mark for mark in ENGINE_MARKS if mark in tb]


@pytest.mark.parametrize("char", ["a", "é", "€", "𝄞"])
def test_a_cut_never_splits_a_utf8_character(char: str) -> None:
    """Whatever the width of the characters, the cut text is valid, bounded and ends whole."""
    final = "ValueError: " + char * 50 + "\n"
    for extra in range(4):
        text = "Traceback (most recent call last):\n" + char * (20_000 + extra) + "\n" + final
        cut = bound_traceback(text, final)
        assert len(cut.encode("utf-8")) <= MAX_TRACEBACK_BYTES
        assert "\ufffd" not in cut
        assert cut.startswith("Traceback (most recent call last):\n" + char)
        assert cut.endswith(final)
        long_final = "ValueError: " + char * 20_000 + "!\n"
        cut = bound_traceback(text + long_final, long_final)
        assert len(cut.encode("utf-8")) <= MAX_TRACEBACK_BYTES
        assert "\ufffd" not in cut
        assert cut.endswith(char + "!\n")
        assert cut.count("bytes cut ...]") == 2


def test_a_short_traceback_is_kept_whole() -> None:
    """A traceback within the bound is returned as it is."""
    text = "Traceback (most recent call last):\nValueError: x\n"
    assert bound_traceback(text, "ValueError: x\n") == text


def test_past_100_lines_the_rest_is_one_drop_notice(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """150 lines: the first 100 are kept, then one line says 50 were dropped."""

    def chatty(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        for i in range(150):
            context.log.info("line", i=i)
        return {}

    registry.register("chatty", chatty)
    (completed,) = stored(engine, one_task(engine, "chatty"), TaskCompleted)
    assert len(completed.logs) == MAX_LOG_LINES + 1
    assert [line.fields["i"] for line in completed.logs[:-1]] == list(range(100))
    notice = completed.logs[-1]
    assert notice.message.startswith("50 more lines dropped")
    assert notice.fields == {"dropped": 50}


def test_logs_are_bounded_in_bytes(engine: Engine, registry: HandlerRegistry) -> None:
    """Lines of 2 KB each: fewer than 100 fit in 64 KiB; the stored JSON stays under it."""

    def wordy(inputs: dict[str, Any], context: Any) -> None:
        for i in range(100):
            context.log.error("x" * 2000, i=i)
        raise RuntimeError("after the words")

    registry.register("wordy", wordy)
    (failed,) = stored(engine, one_task(engine, "wordy"), TaskFailed)
    size = len(msgspec.json.encode(failed.logs))
    assert size <= MAX_LOG_BYTES
    assert size > MAX_LOG_BYTES - 4096  # filled, not given up early
    kept = len(failed.logs) - 1
    assert 20 < kept < 100
    assert [line.fields["i"] for line in failed.logs[:-1]] == list(range(kept))
    assert failed.logs[-1].message.startswith(f"{100 - kept} more lines dropped")


def test_completed_attempt_logs_land_on_task_completed(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """A handler that returns: its lines, bound fields and non-JSON values made strings."""

    class Opaque:
        def __str__(self) -> str:
            return "<opaque>"

    def tidy(inputs: dict[str, Any], context: Any) -> int:
        log = context.log.bind(step="tidy")
        log.debug("start", thing=Opaque(), nested={"ok": [1, 2]}, when=datetime(2026, 1, 2))
        context.log.log(40, "as %s", "number")
        return 1

    registry.register("tidy", tidy)
    run_id = one_task(engine, "tidy")
    (completed,) = stored(engine, run_id, TaskCompleted)
    assert [(line.level, line.message, line.fields) for line in completed.logs] == [
        (
            "debug",
            "start",
            {
                "step": "tidy",
                "thing": "<opaque>",
                "nested": {"ok": [1, 2]},
                "when": "2026-01-02T00:00:00",  # as JSON has it, live and stored alike
            },
        ),
        ("error", "as number", {}),
    ]
    assert completed.logs[0].timestamp <= completed.logs[1].timestamp <= completed.timestamp
    assert not stored(engine, run_id, TaskFailed)


def test_each_attempt_keeps_its_own_lines(engine: Engine, registry: HandlerRegistry) -> None:
    """A retried task: attempt 1's lines on its TaskFailed, attempt 2's on TaskCompleted."""

    def flaky(inputs: dict[str, Any], context: Any) -> int:
        context.log.info("trying", attempt=context.attempt)
        if context.attempt == 1:
            raise ConnectionError("refused")
        return context.attempt

    registry.register("flaky", flaky)
    run_id = one_task(engine, "flaky", retry={"maxAttempts": 2, "initialDelay": 0.01})
    (failed,) = stored(engine, run_id, TaskFailed)
    (completed,) = stored(engine, run_id, TaskCompleted)
    assert [line.fields for line in failed.logs] == [{"attempt": 1}]
    assert [line.fields for line in completed.logs] == [{"attempt": 2}]


def test_two_tasks_logging_at_once_never_mix_lines(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """Two workers log in lockstep (a barrier per line): each attempt keeps only its own."""
    barrier = threading.Barrier(2, timeout=10)

    def lockstep(inputs: dict[str, Any], context: Any) -> None:
        for i in range(40):
            barrier.wait()
            context.log.info("step", me=context.task_id, i=i)
        raise RuntimeError(f"{context.task_id} done")

    registry.register("lockstep", lockstep)
    engine = make_engine(workers=2)
    engine.register_workflow(
        {
            "id": "pair",
            "tasks": [{"id": "a", "handler": "lockstep"}, {"id": "b", "handler": "lockstep"}],
        }
    )
    run_id = engine.start_run("pair").run_id
    engine.wait_run_finished(run_id, timeout=20)
    failures = {f.task_id: f for f in stored(engine, run_id, TaskFailed)}
    assert set(failures) == {"a", "b"}
    for task_id, failed in failures.items():
        assert [line.fields for line in failed.logs] == [{"me": task_id, "i": i} for i in range(40)]


def test_an_async_handler_gets_its_lines_and_its_own_frames(
    engine: Engine, registry: HandlerRegistry
) -> None:
    """An async handler: lines kept (sync and async calls), frames from the coroutine down."""

    async def fetch(inputs: dict[str, Any], context: Any) -> None:
        await context.log.ainfo("awaiting", url="http://x.test")
        await asyncio.sleep(0)
        context.log.error("bad answer", status=502)
        raise LookupError("no such page")  # raise-here

    registry.register("fetch", fetch)
    (failed,) = stored(engine, one_task(engine, "fetch"), TaskFailed)
    tb = failed.error.traceback
    assert tb is not None
    assert f'File "{__file__}", line {line_of(fetch, "raise-here")}, in fetch' in tb
    assert tb.endswith("LookupError: no such page\n")
    assert not [mark for mark in ENGINE_MARKS if mark in tb]
    assert [(line.level, line.message, line.fields) for line in failed.logs] == [
        ("info", "awaiting", {"url": "http://x.test"}),
        ("error", "bad answer", {"status": 502}),
    ]


def test_a_timeout_has_no_traceback_but_keeps_the_lines_so_far(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """A sync handler past its timeout: TaskFailed Timeout, traceback None, lines logged so far."""
    gate = Gate()

    def slow(inputs: dict[str, Any], context: Any) -> Any:
        context.log.info("about to hang")
        return gate(inputs, context)

    registry.register("slow", slow)
    engine = make_engine(workers=1)
    try:
        (failed,) = stored(engine, one_task(engine, "slow", timeout=0.3), TaskFailed)
    finally:
        gate.opened.set()
    assert failed.error.type == "Timeout"
    assert failed.error.traceback is None
    assert [line.message for line in failed.logs] == ["about to hang"]


def test_an_async_timeout_has_no_traceback(engine: Engine, registry: HandlerRegistry) -> None:
    """An async handler cancelled on timeout: TaskFailed Timeout with no traceback."""

    async def stall(inputs: dict[str, Any], context: Any) -> None:
        context.log.info("stalling")
        await asyncio.sleep(30)

    registry.register("stall", stall)
    (failed,) = stored(engine, one_task(engine, "stall", timeout=0.3), TaskFailed)
    assert failed.error.type == "Timeout"
    assert failed.error.traceback is None
    assert [line.message for line in failed.logs] == ["stalling"]


def test_lines_still_go_to_the_normal_log(engine: Engine, registry: HandlerRegistry) -> None:
    """What a handler logs is kept and also logged as usual, bound to its run and task."""

    def noisy(inputs: dict[str, Any], context: Any) -> int:
        context.log.bind(part=1).warning("heads up", n=2)
        return 0

    registry.register("noisy", noisy)
    with structlog.testing.capture_logs() as captured:
        run_id = one_task(engine, "noisy")
    mine = [c for c in captured if c.get("event") == "heads up"]
    assert mine == [
        {
            "event": "heads up",
            "log_level": "warning",
            "run_id": run_id,
            "task_id": "t",
            "attempt": 1,
            "part": 1,
            "n": 2,
        }
    ]
    (completed,) = stored(engine, run_id, TaskCompleted)
    assert completed.logs[0] == LogLine(
        timestamp=completed.logs[0].timestamp,
        level="warning",
        message="heads up",
        fields={"part": 1, "n": 2},
    )


def test_a_handler_that_logs_nothing_stores_no_lines(engine: Engine) -> None:
    """The built-in echo logs nothing: its TaskCompleted has no logs."""
    (completed,) = stored(engine, one_task(engine, "echo"), TaskCompleted)
    assert completed.logs == ()


def test_a_chain_of_many_exceptions_is_formatted_only_up_to_the_cap() -> None:
    """50,000 chained causes (megabytes as text): formatting stops at the cap, cut to 16 KiB."""
    error: BaseException = ValueError("root")
    for i in range(50_000):
        link = RuntimeError(f"link {i}")
        link.__cause__ = error
        error = link
    tb = handler_traceback(error, (), ())
    assert tb is not None
    assert len(tb.encode("utf-8")) <= MAX_TRACEBACK_BYTES
    assert tb.startswith("ValueError: root\n")
    assert re.search(r"\[\.\.\. more than \d+ bytes cut \.\.\.\]", tb)
    assert tb.endswith("\nRuntimeError: link 49999\n")


def test_an_interrupted_attempt_has_no_traceback_and_no_lines(
    make_engine: EngineFactory, registry: HandlerRegistry
) -> None:
    """An attempt cut off by its engine closing: TaskFailed Interrupted, no traceback, no lines."""
    gate = Gate()

    def stuck(inputs: dict[str, Any], context: Any) -> Any:
        context.log.info("before the end")
        return gate(inputs, context)

    registry.register("stuck", stuck)
    first = make_engine()
    first.register_workflow({"id": "cut", "tasks": [{"id": "t", "handler": "stuck"}]})
    run_id = first.start_run("cut").run_id
    assert gate.entered.wait(10)
    threading.Timer(0.3, gate.opened.set).start()
    first.close(grace=0)  # the attempt's outcome, and its lines, are never recorded
    gate.opened.set()
    second = make_engine()
    assert second.wait_run_finished(run_id, timeout=10).status == "completed"
    (interrupted,) = stored(second, run_id, TaskFailed)
    assert interrupted.error.type == "Interrupted"
    assert interrupted.error.traceback is None
    assert interrupted.logs == ()
    (completed,) = stored(second, run_id, TaskCompleted)
    assert [line.message for line in completed.logs] == ["before the end"]
