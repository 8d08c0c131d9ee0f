"""Data passing between tasks: JSONPath inputs and outputs (python-jsonpath, RFC 9535 flavour)."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from jsonpath import JSONPath, JSONPathEnvironment
from jsonpath.exceptions import JSONPathError
from jsonpath.filter import BaseExpression, FilterQuery, walk
from jsonpath.token import TOKEN_DDOT, TOKEN_FUNCTION, TOKEN_RE, TOKEN_RE_FLAGS, TOKEN_RE_PATTERN

from flowweaver.errors import TaskInputError

MAX_PATH_LENGTH = 1024
"""Longest JSONPath a workflow may use, in characters; longer ones are refused unparsed."""

PATH_CACHE_BYTES = 16 * 1024 * 1024
"""Bound on the estimated size of the compiled paths kept by :data:`PATH_CACHE`."""

# A compiled path takes 100 to 450 bytes per character of its text (measured with
# tracemalloc on python-jsonpath 2.2: plain paths ~110, filters up to ~450), plus a
# fixed part; the estimate takes the high end so that the bound holds for any path.
_BYTES_PER_CHAR = 512
_BYTES_PER_ENTRY = 1024

# Regular expressions in filters can backtrack for exponential time while holding the
# GIL (`=~ /(a+)+$/` froze the whole server), so paths may not use them at all.
_REGEX_TOKENS = frozenset({TOKEN_RE, TOKEN_RE_PATTERN, TOKEN_RE_FLAGS})
_REGEX_FUNCTIONS = frozenset({"match", "search"})
_REGEX_REFUSED = (
    "regular expressions are not supported in paths (=~, match(), search()): "
    "they can take exponential time"
)

# Each further descendant segment (`..`) or union (`[*,*]`, `['a','a']`) can select the same
# node again: `$..*..*..*..*` ran 6 s over a 60-deep object of 600 bytes, one more `..*` a
# minute. One descendant segment and a bounded product of union sizes keep the nodes a path
# selects within a small multiple of the document's.
MAX_DESCENDANT_SEGMENTS = 1
MAX_FAN_OUT = 8

_ENV = JSONPathEnvironment()
for _name in _REGEX_FUNCTIONS:  # refused by parse_path; gone from the environment too
    _ENV.function_extensions.pop(_name, None)

_DOTTED = re.compile(r"^\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True, slots=True)
class ParsedPath:
    """A checked path: its compiled form, and its keys when it is a plain ``$.a.b``."""

    compiled: JSONPath
    keys: tuple[str, ...] | None


def parse_path(path: str) -> ParsedPath:
    """Check and compile ``path`` without caching it.

    Raises:
        ValueError: the path is too long, uses a regular expression, could select nodes
            many times over (see :data:`MAX_FAN_OUT`), or does not parse.
    """
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(
            f"a JSONPath may have at most {MAX_PATH_LENGTH} characters, this one has {len(path)}"
        )
    descendants = 0
    try:
        for token in _ENV.lexer.tokenize(path):
            if token.kind in _REGEX_TOKENS or (
                token.kind == TOKEN_FUNCTION and token.value in _REGEX_FUNCTIONS
            ):
                raise ValueError(_REGEX_REFUSED)
            descendants += token.kind == TOKEN_DDOT
        if descendants > MAX_DESCENDANT_SEGMENTS:
            raise ValueError(
                f"a JSONPath may have at most {MAX_DESCENDANT_SEGMENTS} descendant segment (..)"
            )
        compiled = _ENV.compile(path)
    except JSONPathError as e:
        raise ValueError(str(e).splitlines()[0]) from e
    if not isinstance(compiled, JSONPath):
        raise ValueError("compound paths (| and &) are not supported")
    if _fan_out(compiled) > MAX_FAN_OUT:
        raise ValueError(
            f"the unions of a JSONPath may multiply to at most {MAX_FAN_OUT} selectors "
            "(for example [0,1] twice over is 4)"
        )
    keys = tuple(path[2:].split(".")) if _DOTTED.match(path) else None
    return ParsedPath(compiled, keys)


def _fan_out(path: JSONPath) -> int:
    """Return the product of the selector counts of ``path``'s segments, filters' queries in."""
    product = 1
    for segment in path.segments:
        product *= len(segment.selectors)
        for selector in segment.selectors:
            expression = getattr(selector, "expression", None)
            if isinstance(expression, BaseExpression):
                for node in walk(expression):
                    if isinstance(node, FilterQuery):
                        product *= _fan_out(node.path)
            query = getattr(selector, "query", None)  # `$.a[$.b]`, an embedded query
            if isinstance(query, JSONPath):
                product *= _fan_out(query)
        if product > MAX_FAN_OUT:
            break
    return product


class PathCache:
    """Parsed paths, least recently used first, bounded by an estimate of their size.

    Only paths used at run time are kept: validating a workflow parses without caching,
    so a refused request leaves nothing behind.
    """

    def __init__(self, max_bytes: int = PATH_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ParsedPath] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def cost(path: str) -> int:
        """Return the estimated bytes a parsed ``path`` occupies."""
        return _BYTES_PER_ENTRY + _BYTES_PER_CHAR * len(path)

    @property
    def size_bytes(self) -> int:
        """Return the estimated bytes of every cached path."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def get(self, path: str) -> ParsedPath:
        """Return ``path`` parsed, from the cache or parsed now and kept.

        Raises:
            ValueError: as for :func:`parse_path` (failures are not cached).
        """
        with self._lock:
            parsed = self._entries.get(path)
            if parsed is not None:
                self._entries.move_to_end(path)
                return parsed
        parsed = parse_path(path)
        cost = self.cost(path)
        if cost > self.max_bytes:
            return parsed
        with self._lock:
            if path not in self._entries:
                self._entries[path] = parsed
                self._size += cost
            while self._size > self.max_bytes:
                evicted, _ = self._entries.popitem(last=False)
                self._size -= self.cost(evicted)
        return parsed

    def clear(self) -> None:
        """Forget every cached path."""
        with self._lock:
            self._entries.clear()
            self._size = 0


PATH_CACHE = PathCache()
"""The process's cache of paths used by runs."""


def compile_path(path: str) -> JSONPath:
    """Return the compiled ``path``, cached for the next run that uses it.

    Raises:
        ValueError: as for :func:`parse_path`.
    """
    return PATH_CACHE.get(path).compiled


def path_error(path: str) -> str | None:
    """Return why ``path`` is not a usable JSONPath, or None when it is (nothing is cached)."""
    try:
        parse_path(path)
    except ValueError as e:
        return str(e)
    return None


def is_path(value: object) -> bool:
    """Say whether an input value is a JSONPath reference rather than a literal."""
    return isinstance(value, str) and value.startswith("$")


def select(path: str, document: Any, *, cache: PathCache = PATH_CACHE) -> Any:
    """Evaluate ``path`` over ``document``: a singular path gives its value, others a list.

    Raises:
        TaskInputError: the path matches nothing, or is not usable (a definition stored
            before a rule that refuses it now).
    """
    try:
        parsed = cache.get(path)
    except ValueError as e:
        raise TaskInputError(f"path {path[:100]} is not usable: {e}") from e
    if parsed.keys is not None:
        # `$.a.b` on objects: plain key lookups give what the JSONPath would, much faster.
        node = document
        for key in parsed.keys:
            if not isinstance(node, Mapping) or key not in node:
                raise TaskInputError(f"path {path} matched nothing")
            node = node[key]
        return node
    compiled = parsed.compiled
    matches = compiled.findall(document)
    if not matches:
        raise TaskInputError(f"path {path} matched nothing")
    if compiled.singular_query():
        return matches[0]
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


_encoder = msgspec.json.Encoder()


def json_size(value: Any, stop_above: int | None = None) -> int:
    """Return the length of ``value`` as compact JSON, the way events store it.

    With ``stop_above``, counting stops as soon as the size passes it and the count so far
    is returned: a value that refers to one large object many times is never encoded whole.
    """
    size = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            size += 2 * len(node) + 1 if node else 2  # braces, colons and commas
            for key, item in node.items():
                size += len(_encoder.encode(key if isinstance(key, str) else str(key)))
                stack.append(item)
        elif isinstance(node, list | tuple):
            size += len(node) + 1 if node else 2  # brackets and commas
            stack.extend(node)
        else:
            size += len(_encoder.encode(node))
        if stop_above is not None and size > stop_above:
            break
    return size
