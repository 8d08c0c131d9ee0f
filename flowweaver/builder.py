"""Workflows in Python: a builder that produces the JSON workflow document.

    wf = Workflow("etl")
    a = wf.task("t1", "fetch_data")
    wf.task("t2", "process", after=[a], inputs={"source": a.output("data")})
    wf.to_dict()  # the document, exactly as POST /workflows stores it

A handler is named by its registered name or by the function ``@flowweaver.handler``
decorated. Nothing is checked until :meth:`Workflow.spec` (or ``to_dict``/``to_json``), which
validates the document with the server's own rules, so a mistake raises the same
:class:`~flowweaver.errors.ValidationError`, with the same JSON paths, as a POST would answer.

Every field of the document has a keyword; a field this module does not know yet goes
through ``**fields`` (snake_case keywords become the document's camelCase keys), so a new
task or workflow field needs no change here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from flowweaver.domain.spec import (
    RetryPolicy,
    TriggerRule,
    WorkflowSpec,
    encode_workflow,
    workflow_from_builtins,
)
from flowweaver.errors import HandlerError

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _camel(name: str) -> str:
    """Return the document's key for a Python keyword (msgspec's ``rename="camel"``)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _path(root: str, keys: Iterable[str | int]) -> str:
    """Return ``root`` extended by ``keys``: ``.name``, ``["odd-name"]`` or ``[index]``."""
    path = root
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"a path key is a str or an int, not {type(key).__name__}")
        if isinstance(key, int):
            path += f"[{key}]"
        elif _PLAIN_KEY.match(key):
            path += f".{key}"
        else:
            path += "[" + msgspec.json.encode(key).decode() + "]"
    return path


class Ref(str):
    """A JSONPath input (a ``str``) that may also say which task it reads from."""

    __slots__ = ("task_id",)
    task_id: str | None

    def __new__(cls, path: str, task_id: str | None = None) -> Ref:
        ref = super().__new__(cls, path)
        ref.task_id = task_id
        return ref


class TaskRef:
    """A task added to a :class:`Workflow`: pass it to ``after=``, read its outputs."""

    __slots__ = ("id",)

    def __init__(self, task_id: str) -> None:
        self.id = task_id

    def output(self, *keys: str | int) -> Ref:
        """Return the JSONPath of this task's published output, or of a key inside it.

        ``a.output("data")`` is ``$.tasks.t1.data``. A task whose inputs use it depends on
        this task (it is added to its dependencies when ``after`` does not list it).
        """
        return Ref(_path(_path("$.tasks", [self.id]), keys), self.id)

    @property
    def result(self) -> Ref:
        """Return the JSONPath of the handler's result (a task without ``outputs``)."""
        return self.output("result")

    def __repr__(self) -> str:
        return f"TaskRef({self.id!r})"


def _handler_name(handler: str | Callable[..., Any]) -> str:
    if isinstance(handler, str):
        return handler
    if not callable(handler):
        raise TypeError(f"a handler is a name or a function, not {type(handler).__name__}")
    from flowweaver.handlers import default_registry  # noqa: PLC0415 - only for functions

    names = default_registry.names_of(handler)
    label = getattr(handler, "__qualname__", repr(handler))
    if not names:
        raise HandlerError(
            f"{label} is not a registered handler: decorate it with "
            '@flowweaver.handler("name") or give the handler\'s name'
        )
    if len(names) > 1:
        raise HandlerError(f"{label} is registered as {', '.join(names)}: give the name")
    return names[0]


def _document_value(value: Any) -> Any:
    """Return ``value`` as JSON builtins: Structs encoded, refs as their path text."""
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, TaskRef):
        return value.id
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    if isinstance(value, Mapping):
        return {key: _document_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_document_value(item) for item in value]
    return value


def _refs_in(value: Any) -> list[str]:
    """Return the ids of the tasks whose outputs ``value`` reads, in order of appearance."""
    if isinstance(value, Ref):
        return [value.task_id] if value.task_id is not None else []
    if isinstance(value, Mapping):
        return [task_id for item in value.values() for task_id in _refs_in(item)]
    if isinstance(value, list | tuple):
        return [task_id for item in value for task_id in _refs_in(item)]
    return []


def _retry(value: RetryPolicy | Mapping[str, Any]) -> Any:
    """Return a retry policy as the document writes it; snake_case keys become camelCase."""
    if isinstance(value, Mapping):
        return {_camel(key): _document_value(item) for key, item in value.items()}
    return _document_value(value)


def _fields(document: dict[str, Any], fields: Mapping[str, Any]) -> None:
    for key, value in fields.items():
        if value is not None:
            document[_camel(key)] = _document_value(value)


class Workflow:
    """Build a workflow document task by task; ``spec()`` validates it as the server does."""

    def __init__(
        self,
        id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        on_task_failure: str | None = None,
        **fields: Any,
    ) -> None:
        """Start a workflow; ``retry`` and ``timeout`` are the defaults every task inherits.

        ``fields`` are further document fields by their snake_case names, written as given.
        """
        self.id = id
        self._document: dict[str, Any] = {"id": id}
        _fields(self._document, {"name": name, "description": description})
        defaults: dict[str, Any] = {}
        if retry is not None:
            defaults["retry"] = _retry(retry)
        if timeout is not None:
            defaults["timeout"] = timeout
        if defaults:
            self._document["defaults"] = defaults
        _fields(self._document, {"on_task_failure": on_task_failure, **fields})
        self._tasks: list[dict[str, Any]] = []

    def task(
        self,
        id: str,
        handler: str | Callable[..., Any] | None = None,
        *,
        after: Iterable[TaskRef | str] = (),
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, str] | None = None,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        trigger: TriggerRule | None = None,
        name: str | None = None,
        wait: Mapping[str, Any] | None = None,
        workflow: str | None = None,
        map: str | None = None,
        **fields: Any,
    ) -> TaskRef:
        """Add a task that runs ``handler`` (a name, or a function ``@handler`` registered).

        Instead of a handler a task may ``wait`` for a signal (``{"signal": "approval",
        "timeout": 3600}``) or run a ``workflow`` as a child run; ``map`` (a JSONPath into the
        task's inputs) runs the handler once per element of a list.

        ``after`` lists the tasks it depends on; a task whose output ``inputs`` reads is a
        dependency too. ``fields`` are further task fields by their snake_case names.

        Raises:
            HandlerError: ``handler`` is a function no ``@flowweaver.handler`` registered.
        """
        task: dict[str, Any] = {"id": id}
        if handler is not None:
            task["handler"] = _handler_name(handler)
        if name is not None:
            task["name"] = name
        dependencies = [dep.id if isinstance(dep, TaskRef) else dep for dep in after]
        for task_id in _refs_in(inputs or {}):
            if task_id not in dependencies and task_id != id:
                dependencies.append(task_id)
        if dependencies:
            task["dependencies"] = dependencies
        if inputs:
            task["inputs"] = _document_value(inputs)
        if outputs:
            task["outputs"] = _document_value(outputs)
        if retry is not None:
            task["retry"] = _retry(retry)
        _fields(
            task,
            {
                "timeout": timeout,
                "trigger": trigger,
                "wait": wait,
                "workflow": workflow,
                "map": map,
                **fields,
            },
        )
        self._tasks.append(task)
        return TaskRef(id)

    @staticmethod
    def param(*keys: str | int) -> Ref:
        """Return the JSONPath of a run parameter: ``Workflow.param("url")`` is ``$.params.url``."""
        return Ref(_path("$.params", keys))

    def spec(self) -> WorkflowSpec:
        """Return the validated definition, the object the engine registers.

        Raises:
            ValidationError: the document breaks a rule; the errors are the server's.
        """
        return workflow_from_builtins({**self._document, "tasks": self._tasks})

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document (camelCase, defaults left out), as the server stores it.

        Raises:
            ValidationError: as for :meth:`spec`.
        """
        document: dict[str, Any] = msgspec.json.decode(encode_workflow(self.spec()))
        return document

    def to_json(self) -> str:
        """Return the document as canonical JSON text: equal workflows give equal text.

        Raises:
            ValidationError: as for :meth:`spec`.
        """
        return encode_workflow(self.spec()).decode()

    def __repr__(self) -> str:
        return f"Workflow({self.id!r}, tasks={[t['id'] for t in self._tasks]})"
