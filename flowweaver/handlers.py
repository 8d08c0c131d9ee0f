"""Handlers: the named Python callables that tasks run, and the built-ins.

A handler takes ``(inputs)`` or ``(inputs, context)`` and returns a JSON value. Sync handlers
run on worker threads; ``async def`` handlers are awaited on the engine's event loop.
Handlers come from ``@flowweaver.handler("name")``, from the entry-point group
``flowweaver.handlers``, or from ``--handlers MODULE_OR_FILE``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import structlog

from flowweaver.domain.ids import is_handler_name
from flowweaver.errors import HandlerError

ENTRY_POINT_GROUP = "flowweaver.handlers"
MAX_SLEEP_S = 3600.0

HandlerFunc = Callable[..., Any]
F = TypeVar("F", bound=HandlerFunc)


@dataclass
class TaskContext:
    """What a handler knows about the attempt it runs, and how it learns of cancellation.

    ``idempotency_key`` (``run_id:task_id``) is stable across attempts: use it to make side
    effects idempotent, since delivery is at-least-once. ``log`` is a structlog-style logger
    bound to the attempt; in the engine, what goes through it is also stored with the attempt's
    outcome (TaskCompleted.logs or TaskFailed.logs).
    """

    run_id: str
    task_id: str
    attempt: int
    log: Any
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def idempotency_key(self) -> str:
        """Return ``run_id:task_id``, the same for every attempt of this task."""
        return f"{self.run_id}:{self.task_id}"

    def is_cancelled(self) -> bool:
        """Say whether the run was cancelled or the attempt timed out; stop soon if so."""
        return self.cancelled.is_set()


@dataclass(frozen=True)
class Handler:
    """A registered handler and how to call it."""

    name: str
    func: HandlerFunc
    is_async: bool
    wants_context: bool

    def call(self, inputs: dict[str, Any], context: TaskContext) -> Any:
        """Call the handler (for async ones, return the coroutine)."""
        if self.wants_context:
            return self.func(inputs, context)
        return self.func(inputs)


def _make_handler(name: str, func: HandlerFunc) -> Handler:
    if not isinstance(name, str) or not is_handler_name(name):
        raise HandlerError(f"invalid handler name {name!r}")
    if not callable(func):
        raise HandlerError(f"handler {name!r} is not callable")
    try:
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        has_varargs = any(
            p.kind is p.VAR_POSITIONAL for p in inspect.signature(func).parameters.values()
        )
    except (TypeError, ValueError):
        params, has_varargs = [], True
    wants_context = has_varargs or len(params) >= 2
    is_async = inspect.iscoroutinefunction(func)
    return Handler(name=name, func=func, is_async=is_async, wants_context=wants_context)


def _origin(func: HandlerFunc) -> tuple[str, str] | HandlerFunc:
    """Where a function was defined: loading the same file again rebinds, it does not clash."""
    code = getattr(func, "__code__", None)
    if code is None:
        return func
    return (code.co_filename, getattr(func, "__qualname__", ""))


class HandlerRegistry:
    """Handlers by name; a name can be bound once (rebinding the same function is fine)."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] = {h.name: h for h in handlers}

    def register(self, name: str, func: HandlerFunc) -> Handler:
        """Bind ``name`` to ``func``; the same function loaded again (same file) rebinds.

        Raises:
            HandlerError: the name is invalid or already bound to another function.
        """
        handler = _make_handler(name, func)
        with self._lock:
            existing = self._handlers.get(name)
            if existing is not None and _origin(existing.func) != _origin(func):
                raise HandlerError(f"handler {name!r} is already registered to {existing.func!r}")
            self._handlers[name] = handler
        return handler

    def get(self, name: str) -> Handler:
        """Return the handler bound to ``name``.

        Raises:
            HandlerError: no handler has that name.
        """
        try:
            return self._handlers[name]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise HandlerError(f"no handler named {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        """Return every registered name, sorted."""
        return sorted(self._handlers)

    def names_of(self, func: HandlerFunc) -> list[str]:
        """Return the names ``func`` is registered under, sorted (the builder's lookup)."""
        with self._lock:
            return sorted(n for n, h in self._handlers.items() if h.func is func)

    def missing(self, names: Iterable[str | None]) -> list[str]:
        """Return the names in ``names`` that no handler is bound to, sorted.

        None (a task that runs a workflow, not a handler) needs no handler.
        """
        return sorted({n for n in names if n is not None and n not in self._handlers})

    def copy(self) -> HandlerRegistry:
        """Return an independent registry with the same handlers."""
        with self._lock:
            return HandlerRegistry(self._handlers.values())

    def load_entry_points(self) -> None:
        """Register every handler published under the ``flowweaver.handlers`` group.

        Raises:
            HandlerError: an entry point fails to load.
        """
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                func = ep.load()
            except Exception as e:
                raise HandlerError(f"entry point {ep.name!r} ({ep.value}) failed: {e}") from e
            self.register(ep.name, func)

    def load(self, module_or_file: str) -> None:
        """Import a module name or a ``.py`` file; its ``@handler`` decorations register here.

        Raises:
            HandlerError: the module or file cannot be imported.
        """
        with _LoadingInto(self):
            _import(module_or_file)


class _LoadingInto:
    """While loading a module for a registry, ``@handler`` also registers into it."""

    _stack: list[HandlerRegistry] = []
    _lock = threading.Lock()

    def __init__(self, registry: HandlerRegistry) -> None:
        self.registry = registry

    def __enter__(self) -> None:
        with self._lock:
            self._stack.append(self.registry)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stack.remove(self.registry)


def _import(module_or_file: str) -> None:
    path = Path(module_or_file)
    try:
        if module_or_file.endswith(".py") or path.is_file():
            if not path.is_file():
                raise HandlerError(f"handler file {module_or_file!r} does not exist")
            name = f"flowweaver_user_handlers_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise HandlerError(f"cannot load handler file {module_or_file!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        elif module_or_file in sys.modules:
            importlib.reload(sys.modules[module_or_file])
        else:
            importlib.import_module(module_or_file)
    except HandlerError:
        raise
    except Exception as e:
        raise HandlerError(f"cannot load handlers from {module_or_file!r}: {e}") from e


# --- built-ins --------------------------------------------------------------------------------


class FailError(Exception):
    """Raised by the ``fail`` built-in on purpose."""


def _noop(inputs: dict[str, Any]) -> dict[str, Any]:
    return {}


def _echo(inputs: dict[str, Any]) -> dict[str, Any]:
    return dict(inputs)


def _sleep(inputs: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    seconds = inputs.get("seconds", 0)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError("sleep needs inputs.seconds, a number >= 0")
    seconds = min(float(seconds), MAX_SLEEP_S)
    began = time.monotonic()
    interrupted = context.cancelled.wait(seconds)
    # Cancelled, it slept less than asked: report what it really slept.
    slept = min(seconds, time.monotonic() - began) if interrupted else seconds
    return {"slept": round(slept, 3), "cancelled": interrupted}


def _fail(inputs: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    times = inputs.get("times")
    message = str(inputs.get("message", "failed on purpose"))
    if times is None or context.attempt <= int(times):
        raise FailError(f"{message} (attempt {context.attempt})")
    return {"attempt": context.attempt}


BUILTINS: dict[str, HandlerFunc] = {"echo": _echo, "fail": _fail, "noop": _noop, "sleep": _sleep}

default_registry = HandlerRegistry(_make_handler(n, f) for n, f in BUILTINS.items())


def handler(name: str) -> Callable[[F], F]:
    """Register the decorated function as the handler ``name``.

    It goes into the default registry, and into any registry loading this module with
    :meth:`HandlerRegistry.load`.
    """

    def decorate(func: F) -> F:
        default_registry.register(name, func)
        with _LoadingInto._lock:
            targets = list(_LoadingInto._stack)
        for registry in targets:
            if registry is not default_registry:
                registry.register(name, func)
        return func

    return decorate


def builtin_registry() -> HandlerRegistry:
    """Return a fresh registry holding only the built-ins."""
    return HandlerRegistry(_make_handler(n, f) for n, f in BUILTINS.items())


def bound_logger(**context: Any) -> Any:
    """Return a structlog logger bound to ``context`` (run_id, task_id, attempt)."""
    return structlog.get_logger("flowweaver.task").bind(**context)
