"""The workflow document as msgspec Structs, and its validation.

Wire JSON is camelCase (the original API's convention); Python attributes are snake_case.
Validation reports every problem it finds, each with the JSON path it belongs to.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec

from flowweaver.domain.data import is_path, path_error
from flowweaver.domain.ids import HANDLER_PATTERN, ID_PATTERN, whole_string
from flowweaver.errors import FieldError, ValidationError

if TYPE_CHECKING:
    from flowweaver.domain.dag import Dag

MAX_TASKS = 10_000
MAX_DEPENDENCIES = 10_000
MAX_ATTEMPTS = 100
MAX_DELAY_S = 86_400.0
MAX_TIMEOUT_S = 86_400.0
MAX_CONCURRENCY = 100_000
MAX_NESTING = 64
"""How deep a JSON value in a document (task inputs, run parameters) may nest. Deeper values
would make recursive code (validation, a `$..` path, encoders) run out of stack."""


Ident = Annotated[str, msgspec.Meta(pattern=whole_string(ID_PATTERN), max_length=128)]
"""A workflow or task id, as the wire and the domain both check it."""
HandlerName = Annotated[str, msgspec.Meta(pattern=whole_string(HANDLER_PATTERN), max_length=128)]
ErrorTypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY_S)]
Timeout = Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
OnTaskFailure = Literal["fail", "pause"]
"""What a run does when a task fails for good: fail (skip what depends on it), or pause."""


class _Document(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
):
    """Base of the workflow document's parts: camelCase JSON, unknown fields refused."""


class RetryPolicy(_Document, frozen=True, kw_only=True):
    """How often and how soon a failed task runs again."""

    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS)] = 1
    initial_delay: Seconds = 1.0
    backoff_factor: Annotated[float, msgspec.Meta(ge=1.0, le=100.0)] = 2.0
    max_delay: Seconds = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    non_retryable: tuple[ErrorTypeName, ...] = ()

    def delay_before(self, attempt: int, jitter_sample: float = 0.0) -> float:
        """Return the delay before ``attempt`` (2, 3, ...), jittered by a sample in [-1, 1]."""
        base = self.initial_delay * self.backoff_factor ** max(0, attempt - 2)
        jittered = base * (1.0 + self.jitter * jitter_sample)
        return min(max(0.0, jittered), self.max_delay)


NO_RETRY = RetryPolicy()


class Defaults(_Document, frozen=True, kw_only=True):
    """Settings every task inherits unless it sets its own."""

    retry: RetryPolicy | None = None
    timeout: Timeout | None = None


TriggerRule = Literal[
    "all_success",
    "all_done",
    "all_failed",
    "one_success",
    "one_failed",
    "none_failed",
    "none_failed_min_one_success",
    "always",
]
"""A task's trigger rule, with Airflow's meaning (docs/concepts.md, "Trigger rules")."""


class Concurrency(_Document, frozen=True, kw_only=True):
    """How many runs of a workflow may be under way at once, per value of ``key`` when given.

    Runs over the limit are accepted and queued (docs/concepts.md, "Concurrency and priority").
    """

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONCURRENCY)]
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    """A path into the run's parameters, ``$.params.<name>[.<name>...]``: one limit per value."""


MAX_WAIT_S = 31_536_000.0
"""The longest a ``wait`` task may wait for its signal: one year."""


class WaitSpec(_Document, frozen=True, kw_only=True):
    """What a ``wait`` task waits for: a signal by name, for at most ``timeout`` seconds."""

    signal: Ident
    timeout: Annotated[float, msgspec.Meta(gt=0, le=MAX_WAIT_S)] | None = None
    """None: it waits until the signal comes, or the run is cancelled."""


class TaskSpec(_Document, frozen=True, kw_only=True):
    """One node of the DAG: which handler runs (or which signal it waits for, or which workflow
    it runs as a child run), after which tasks, with which inputs."""

    id: Ident
    handler: HandlerName | None = None
    """The handler that runs the task; a task names exactly one of a handler, a ``wait`` or a
    ``workflow``."""
    name: Text | None = None
    dependencies: tuple[Ident, ...] = ()
    inputs: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    retry: RetryPolicy | None = None
    timeout: Timeout | None = None
    trigger: TriggerRule | None = None
    """When the task may run, from its dependencies' outcomes; None means ``all_success``."""
    wait: WaitSpec | None = None
    """Instead of a handler: the task completes with a signal's payload (domain/signals.py)."""
    workflow: Ident | None = None
    """A sub-workflow: the task starts a run of this workflow with its inputs as parameters,
    and the child's published outputs are its result (docs/concepts.md, "Sub-workflows")."""
    map: str | None = None
    """A JSONPath into the task's resolved inputs: the handler runs once per element of the
    list it selects (docs/concepts.md, "Map"); see :mod:`flowweaver.domain.mapping`."""


class WorkflowSpec(_Document, frozen=True, kw_only=True, dict=True):
    """A workflow definition: a DAG of tasks with shared defaults.

    ``dict=True`` gives each definition a ``__dict__`` beside its fields, where
    :attr:`dag` keeps the graph it builds once; fields alone are encoded and compared.
    """

    id: Ident
    tasks: tuple[TaskSpec, ...]
    name: Text | None = None
    description: Text | None = None
    defaults: Defaults = Defaults()
    on_task_failure: OnTaskFailure | None = None
    """``pause``: a task failing for good pauses the run for an operator; None means fail."""
    concurrency: Concurrency | None = None
    """At most ``limit`` runs under way at once; the others wait queued (None: no limit)."""

    @functools.cached_property
    def dag(self) -> Dag:
        """Return the task graph, built on first use and kept with the definition.

        Runs of one workflow version share one definition object (the store decodes each
        version once), so they share its graph as well.
        """
        from flowweaver.domain.dag import Dag  # noqa: PLC0415 - dag imports spec

        return Dag(self)

    @functools.cached_property
    def _tasks_by_id(self) -> dict[str, TaskSpec]:
        return {task.id: task for task in self.tasks}

    def task(self, task_id: str) -> TaskSpec:
        """Return the task with this id (a dict lookup: commands ask on every outcome).

        Raises:
            KeyError: no task has this id.
        """
        return self._tasks_by_id[task_id]

    def retry_policy(self, task: TaskSpec) -> RetryPolicy:
        """Return the task's retry policy, else the workflow default, else one attempt."""
        return task.retry or self.defaults.retry or NO_RETRY

    def timeout_of(self, task: TaskSpec) -> float | None:
        """Return the task's timeout in seconds, else the workflow default, else None."""
        return task.timeout if task.timeout is not None else self.defaults.timeout


_decoder = msgspec.json.Decoder(WorkflowSpec)
_encoder = msgspec.json.Encoder(order="deterministic")
_PATH_IN_MESSAGE = re.compile(r"^(?P<message>.*?) - at `(?P<path>\$[^`]*)`$")


def field_error_from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError) -> FieldError:
    """Split msgspec's ``message - at `$.path``` text into a located field error."""
    text = str(exc)
    match = _PATH_IN_MESSAGE.match(text)
    if match is None:
        return FieldError("$", text)
    message = match["message"]
    if match["path"].endswith(".trigger") and message.startswith("Invalid enum value"):
        message += f"; a trigger rule is one of {', '.join(get_args(TriggerRule))}"
    return FieldError(match["path"], message)


def decode_workflow(data: bytes | str) -> WorkflowSpec:
    """Decode a JSON workflow document and validate it completely.

    Raises:
        ValidationError: the document is malformed or breaks a rule; every error names its path.
    """
    try:
        spec = _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ValidationError([field_error_from_msgspec(e)]) from e
    except RecursionError as e:  # msgspec decodes on the C stack, bounded by Python's limit
        raise ValidationError([FieldError("$", TOO_DEEP)]) from e
    validate_workflow(spec)
    return spec


def workflow_from_builtins(obj: Any) -> WorkflowSpec:
    """Convert an already-parsed JSON value into a validated workflow.

    Raises:
        ValidationError: as for :func:`decode_workflow`.
    """
    try:
        spec = msgspec.convert(obj, WorkflowSpec)
    except msgspec.ValidationError as e:
        raise ValidationError([field_error_from_msgspec(e)]) from e
    except RecursionError as e:
        raise ValidationError([FieldError("$", TOO_DEEP)]) from e
    validate_workflow(spec)
    return spec


def encode_workflow(spec: WorkflowSpec) -> bytes:
    """Return the canonical JSON of a workflow: equal definitions give equal bytes."""
    return _encoder.encode(spec)


def validate_workflow(spec: WorkflowSpec) -> None:
    """Check the rules the types alone cannot express.

    Raises:
        ValidationError: with one entry per problem found.
    """
    from flowweaver.domain.dag import cycle_in  # noqa: PLC0415 - dag imports spec

    errors: list[FieldError] = []
    if not spec.tasks:
        errors.append(FieldError("$.tasks", "a workflow needs at least one task"))
    if len(spec.tasks) > MAX_TASKS:
        errors.append(FieldError("$.tasks", f"at most {MAX_TASKS} tasks are allowed"))
    seen: dict[str, int] = {}
    for index, task in enumerate(spec.tasks):
        if task.id in seen:
            errors.append(
                FieldError(
                    f"$.tasks[{index}].id",
                    f"duplicate task id {task.id!r} (first at $.tasks[{seen[task.id]}])",
                )
            )
        else:
            seen[task.id] = index
    for index, task in enumerate(spec.tasks):
        if len(task.dependencies) > MAX_DEPENDENCIES:
            errors.append(FieldError(f"$.tasks[{index}].dependencies", "too many dependencies"))
        if len(set(task.dependencies)) != len(task.dependencies):
            errors.append(
                FieldError(f"$.tasks[{index}].dependencies", "a dependency is listed twice")
            )
        for dep_index, dep in enumerate(task.dependencies):
            if dep == task.id:
                errors.append(
                    FieldError(
                        f"$.tasks[{index}].dependencies[{dep_index}]",
                        f"task {task.id!r} depends on itself",
                    )
                )
            elif dep not in seen:
                errors.append(
                    FieldError(
                        f"$.tasks[{index}].dependencies[{dep_index}]",
                        f"unknown task {dep!r}",
                    )
                )
        for name, path in task.outputs.items():
            problem = (
                path_error(path) if path.startswith("$") else "must be a JSONPath starting with '$'"
            )
            if problem:
                errors.append(FieldError(f"$.tasks[{index}].outputs.{name}", problem))
        deep = nesting_error(task.inputs, f"$.tasks[{index}].inputs")
        if deep is not None:
            errors.append(deep)
        else:
            errors.extend(_check_input_paths(task.inputs, f"$.tasks[{index}].inputs"))
        if task.retry is not None:
            errors.extend(_check_retry(task.retry, f"$.tasks[{index}].retry"))
        errors.extend(_check_kind(task, f"$.tasks[{index}]"))
        if task.map is not None:
            from flowweaver.domain.mapping import map_errors  # noqa: PLC0415 - mapping imports spec

            errors.extend(map_errors(task, f"$.tasks[{index}]"))
    if spec.defaults.retry is not None:
        errors.extend(_check_retry(spec.defaults.retry, "$.defaults.retry"))
    if spec.concurrency is not None and spec.concurrency.key is not None:
        problem = key_path_error(spec.concurrency.key)
        if problem:
            errors.append(FieldError("$.concurrency.key", problem))
    # Cycles are reported with the other errors, on the graph of the edges that are otherwise
    # valid (a self-dependency and an unknown task are reported above).
    graph: dict[str, list[str]] = {}
    for task in spec.tasks:
        edges = graph.setdefault(task.id, [])
        edges.extend(d for d in task.dependencies if d != task.id and d in seen)
    cycle = cycle_in(graph)
    if cycle:
        errors.append(FieldError("$.tasks", "dependency cycle: " + " -> ".join(cycle)))
    if errors:
        raise ValidationError(errors)


_KEY_PATH = re.compile(r"^\$\.params(\.[A-Za-z_][A-Za-z0-9_-]{0,127}){1,8}$")


def key_path_error(path: str) -> str | None:
    """Return why ``path`` is no concurrency key path, or None when it is one."""
    if _KEY_PATH.match(path):
        return None
    return "a concurrency key is a path into the run's parameters, like $.params.customer"


def key_path_names(path: str) -> list[str]:
    """Return the parameter names a valid key path walks: ``$.params.a.b`` -> [a, b]."""
    return path.split(".")[2:]


_key_encoder = msgspec.json.Encoder(order="deterministic")
MAX_KEY_CHARS = 256


def concurrency_group(spec: WorkflowSpec, parameters: dict[str, Any]) -> str | None:
    """Return the value a run's concurrency limit counts it under, as canonical JSON.

    None when the workflow has no keyed limit. A parameter the path does not reach counts
    as ``null``; a value longer than MAX_KEY_CHARS as JSON is named by its SHA-256.
    """
    limit = spec.concurrency
    if limit is None or limit.key is None:
        return None
    value: Any = parameters
    for name in key_path_names(limit.key):
        value = value.get(name) if isinstance(value, dict) else None
    text = _key_encoder.encode(value).decode()
    if len(text) > MAX_KEY_CHARS:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


TOO_DEEP = f"nested more than {MAX_NESTING} levels deep"


def nesting_error(value: Any, path: str, limit: int = MAX_NESTING) -> FieldError | None:
    """Return an error at the first object or array nested deeper than ``limit``, else None.

    ``value`` itself is level 1 when it is an object or array. Walks without recursion.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > limit:
            return FieldError(_path_to_depth(value, path, limit + 1), TOO_DEEP)
        stack.extend((child, depth + 1) for child in children)
    return None


def _path_to_depth(value: Any, path: str, depth: int) -> str:
    """Return the path of the first object or array found at ``depth`` (1 is ``value``)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, path)]
    while stack:
        node, level, where = stack.pop()
        if not isinstance(node, dict | list | tuple):
            continue
        if level >= depth:
            return where
        if isinstance(node, dict):
            stack.extend((v, level + 1, f"{where}.{k}") for k, v in reversed(node.items()))
        else:
            stack.extend(
                (v, level + 1, f"{where}[{i}]") for i, v in reversed(list(enumerate(node)))
            )
    return path


def _check_input_paths(value: Any, path: str) -> list[FieldError]:
    if is_path(value):
        problem = path_error(value)
        return [FieldError(path, f"invalid JSONPath: {problem}")] if problem else []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _check_input_paths(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _check_input_paths(v, f"{path}[{i}]")]
    return []


def _check_kind(task: TaskSpec, path: str) -> list[FieldError]:
    """A task runs one thing: a handler, a wait for a signal, or a workflow as a child run."""
    if task.wait is not None and task.handler is not None:
        return [FieldError(path, "a task has a handler or a wait, not both")]
    if task.wait is not None and task.workflow is not None:
        return [FieldError(path, "a task has a wait or a workflow, not both")]
    if task.handler is not None and task.workflow is not None:
        return [FieldError(f"{path}.workflow", "a task names a handler or a workflow, not both")]
    if task.map is not None and task.handler is None:
        return [FieldError(f"{path}.map", "a map task runs a handler once per element")]
    if task.handler is None and task.wait is None and task.workflow is None:
        return [FieldError(f"{path}.handler", "a task needs a handler (or a wait or a workflow)")]
    return []


def handler_names(spec: WorkflowSpec, task_ids: Iterable[str] | None = None) -> list[str]:
    """Return the handlers the workflow's tasks (or those of ``task_ids``) run."""
    wanted = None if task_ids is None else set(task_ids)
    return [
        t.handler
        for t in spec.tasks
        if t.handler is not None and (wanted is None or t.id in wanted)
    ]


def _check_retry(policy: RetryPolicy, path: str) -> list[FieldError]:
    if policy.max_delay < policy.initial_delay:
        return [FieldError(f"{path}.maxDelay", "maxDelay must be at least initialDelay")]
    return []
