"""The handler registry: decorator, files and modules, entry points, built-ins."""

from __future__ import annotations

import threading
import time
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import flowweaver.handlers as fw
from flowweaver.errors import HandlerError
from flowweaver.handlers import HandlerRegistry, TaskContext, builtin_registry

FIXTURES = Path(__file__).parent / "fixtures"


def context(attempt: int = 1) -> TaskContext:
    return TaskContext(run_id="r", task_id="t", attempt=attempt, log=fw.bound_logger())


def test_builtins_are_always_there() -> None:
    """noop, echo, sleep and fail are registered in every fresh registry."""
    registry = builtin_registry()
    assert registry.names() == ["echo", "fail", "noop", "sleep"]
    assert registry.get("noop").call({}, context()) == {}
    assert registry.get("echo").call({"a": 1}, context()) == {"a": 1}


def test_fail_raises_until_its_attempt_passes_times() -> None:
    """fail raises while attempt <= times, always without times."""
    fail = builtin_registry().get("fail")
    with pytest.raises(fw.FailError):
        fail.call({"times": 1}, context(attempt=1))
    assert fail.call({"times": 1}, context(attempt=2)) == {"attempt": 2}
    with pytest.raises(fw.FailError):
        fail.call({}, context(attempt=99))


def test_sleep_is_bounded_and_wakes_on_cancel() -> None:
    """sleep rejects bad input, and returns early when the context is cancelled."""
    sleep = builtin_registry().get("sleep")
    with pytest.raises(ValueError, match="seconds"):
        sleep.call({"seconds": "soon"}, context())
    ctx = context()
    threading.Timer(0.05, ctx.cancelled.set).start()
    assert sleep.call({"seconds": 30}, ctx)["cancelled"] is True


def test_sleep_reports_the_seconds_it_slept_when_cancelled() -> None:
    """Cancelled, sleep reports the seconds it really slept, not the seconds asked for."""
    sleep = builtin_registry().get("sleep")
    ctx = context()
    ctx.cancelled.set()
    began = time.monotonic()
    result = sleep.call({"seconds": 30}, ctx)
    elapsed = time.monotonic() - began
    assert result["cancelled"] is True
    assert 0 <= result["slept"] <= elapsed + 0.001
    assert sleep.call({"seconds": 0.01}, context()) == {"slept": 0.01, "cancelled": False}


def test_unknown_name_is_a_clear_error() -> None:
    """Asking for a name nobody registered names the known handlers."""
    with pytest.raises(HandlerError, match=r"no handler named 'nope'.*echo"):
        builtin_registry().get("nope")


def test_a_name_binds_once() -> None:
    """Rebinding a name to another function is refused; the same function is fine."""
    registry = HandlerRegistry()

    def one(inputs: dict[str, Any]) -> int:
        return 1

    registry.register("one", one)
    registry.register("one", one)
    with pytest.raises(HandlerError, match="already registered"):
        registry.register("one", lambda inputs: 2)
    with pytest.raises(HandlerError, match="invalid handler name"):
        registry.register("bad name", one)


def test_context_argument_is_optional() -> None:
    """A handler may take (inputs) or (inputs, context)."""
    registry = HandlerRegistry()
    registry.register("plain", lambda inputs: inputs["v"])
    registry.register("ctx", lambda inputs, ctx: ctx.idempotency_key)
    assert registry.get("plain").call({"v": 3}, context()) == 3
    assert registry.get("ctx").call({}, context()) == "r:t"


def test_loading_a_file_registers_its_decorated_handlers() -> None:
    """--handlers path/to/file.py registers what the file decorates, into that registry."""
    registry = builtin_registry()
    registry.load(str(FIXTURES / "user_handlers.py"))
    assert {"double", "greet"} <= set(registry.names())
    assert registry.get("double").call({"x": 4}, context()) == 8
    assert registry.get("greet").is_async


def test_loading_a_module_by_name() -> None:
    """--handlers package.module imports it; its decorations register."""
    registry = builtin_registry()
    registry.load("tests.fixtures.user_handlers")
    assert "double" in registry.names()


def test_loading_something_missing_fails_clearly(tmp_path: Path) -> None:
    """A file that does not exist, or a module that fails to import, is a HandlerError."""
    registry = builtin_registry()
    with pytest.raises(HandlerError, match="does not exist"):
        registry.load(str(tmp_path / "absent.py"))
    with pytest.raises(HandlerError, match="cannot load handlers"):
        registry.load("no_such_module_anywhere")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(HandlerError, match="boom"):
        registry.load(str(broken))


def test_entry_points_register_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handlers published under the flowweaver.handlers group are registered by their name."""
    published = [
        EntryPoint(name="triple", value="tests.test_handlers:_triple", group=fw.ENTRY_POINT_GROUP),
        EntryPoint(name="broken", value="tests.test_handlers:_missing", group=fw.ENTRY_POINT_GROUP),
    ]

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in published if ep.group == group]

    monkeypatch.setattr(fw, "entry_points", fake_entry_points)
    registry = builtin_registry()
    with pytest.raises(HandlerError, match="entry point 'broken'"):
        registry.load_entry_points()
    assert registry.get("triple").call({"x": 2}, context()) == 6


def _triple(inputs: dict[str, Any]) -> int:
    return int(inputs["x"]) * 3
