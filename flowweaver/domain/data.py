"""Data passing between tasks: JSONPath inputs and outputs (python-jsonpath, RFC 9535 flavour)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jsonpath
from jsonpath import JSONPath
from jsonpath.exceptions import JSONPathError

from flowweaver.errors import TaskInputError


@lru_cache(maxsize=4096)
def compile_path(path: str) -> JSONPath:
    """Compile a JSONPath once; the cache makes per-task resolution cheap.

    Raises:
        ValueError: the path does not parse.
    """
    try:
        compiled = jsonpath.compile(path)
    except JSONPathError as e:
        raise ValueError(str(e).splitlines()[0]) from e
    if not isinstance(compiled, JSONPath):
        raise ValueError("compound paths (| and &) are not supported")
    return compiled


def path_error(path: str) -> str | None:
    """Return why ``path`` is not a usable JSONPath, or None when it is."""
    try:
        compile_path(path)
    except ValueError as e:
        return str(e)
    return None


def is_path(value: object) -> bool:
    """Say whether an input value is a JSONPath reference rather than a literal."""
    return isinstance(value, str) and value.startswith("$")


_DOTTED = re.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")


@lru_cache(maxsize=4096)
def _dotted_keys(path: str) -> tuple[str, ...] | None:
    """Split ``$.a.b`` into its keys; None for any other kind of path."""
    if not _DOTTED.match(path):
        return None
    return tuple(path[2:].split("."))


def select(path: str, document: Any) -> Any:
    """Evaluate ``path`` over ``document``: a singular path gives its value, others a list.

    Raises:
        TaskInputError: the path matches nothing.
    """
    keys = _dotted_keys(path)
    if keys is not None:
        # `$.a.b` on objects: plain key lookups give what the JSONPath would, much faster.
        node = document
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                raise TaskInputError(f"path {path} matched nothing")
            node = node[key]
        return node
    compiled = compile_path(path)
    matches = compiled.findall(document)
    if compiled.singular_query():
        if not matches:
            raise TaskInputError(f"path {path} matched nothing")
        return matches[0]
    if not matches:
        raise TaskInputError(f"path {path} matched nothing")
    return matches


def resolve_inputs(inputs: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Replace every ``$`` string in ``inputs`` (at any depth) by what it selects in ``context``.

    Raises:
        TaskInputError: a path matches nothing; the message names the input.
    """
    resolved: dict[str, Any] = {}
    for name, value in inputs.items():
        try:
            resolved[name] = _resolve(value, context)
        except TaskInputError as e:
            raise TaskInputError(f"input {name!r}: {e}") from e
    return resolved


def _resolve(value: Any, context: Mapping[str, Any]) -> Any:
    if is_path(value):
        return select(value, context)
    if isinstance(value, dict):
        return {k: _resolve(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, context) for v in value]
    return value


def may_read_tasks(value: Any) -> bool:
    """Say whether any path in ``value`` could reach the ``tasks`` key of the context.

    Building ``tasks`` costs a pass over every task, so it is skipped when no path can see it.
    """
    if is_path(value):
        return "tasks" in value or value == "$" or value.startswith(("$..", "$[", "$.*"))
    if isinstance(value, dict):
        return any(may_read_tasks(v) for v in value.values())
    if isinstance(value, list):
        return any(may_read_tasks(v) for v in value)
    return False


def input_context(
    upstream: Mapping[str, Any], params: Mapping[str, Any], tasks: Mapping[str, Any]
) -> dict[str, Any]:
    """Build what input paths see: merged upstream outputs at the root, plus params and tasks."""
    context: dict[str, Any] = dict(upstream)
    context["params"] = params
    context["tasks"] = tasks
    return context


def publish(result: Any, inputs: Mapping[str, Any], outputs: Mapping[str, str]) -> Any:
    """Return what a task publishes: ``{"result": ...}`` or its ``outputs`` mapping evaluated.

    Raises:
        TaskInputError: an output path matches nothing.
    """
    if not outputs:
        return {"result": result}
    document = {"result": result, "inputs": dict(inputs)}
    published: dict[str, Any] = {}
    for name, path in outputs.items():
        try:
            published[name] = select(path, document)
        except TaskInputError as e:
            raise TaskInputError(f"output {name!r}: {e}") from e
    return published
