"""The workflow commands: ``flowweaver workflows register SOURCE``.

    flowweaver workflows register WORKFLOW.json [--store URL]
    flowweaver workflows register pkg.module:attribute [--store URL]

A source is a JSON document, or ``module:attribute`` (a module name, or a ``.py`` file) whose
attribute is a :class:`~flowweaver.Workflow` builder, a definition (``WorkflowSpec``) or a
dict in the document's form. Registering drives no runs, so it works beside a live server on
the same store; registering an identical definition again records nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from flowweaver.builder import Workflow
from flowweaver.domain.spec import WorkflowSpec, decode_workflow, workflow_from_builtins

EXIT_OK = 0


class SourceError(Exception):
    """A workflow source that cannot be read or is not a workflow (the CLI prints one line)."""


def load_workflow(source: str) -> WorkflowSpec:
    """Return the validated definition ``source`` names: a JSON file or ``module:attribute``.

    Raises:
        SourceError: the file, module or attribute is missing, or is not a workflow.
        ValidationError: the definition breaks a rule (the server's errors).
    """
    module_name, colon, attribute = source.rpartition(":")
    if not colon or not module_name or _is_file(source):
        try:
            return decode_workflow(Path(source).read_bytes())
        except OSError as e:
            raise SourceError(f"cannot read {source}: {e.strerror or e}") from e
    if not attribute.isidentifier():
        raise SourceError(f"{source}: {attribute!r} is not an attribute name")
    value = getattr(_import(module_name), attribute, _MISSING)
    if value is _MISSING:
        raise SourceError(f"module {module_name!r} has no attribute {attribute!r}")
    return as_spec(value, f"{module_name}:{attribute}")


_MISSING = object()


def as_spec(value: Any, label: str) -> WorkflowSpec:
    """Return ``value`` (a Workflow builder, a WorkflowSpec or a dict) as a validated spec.

    Raises:
        SourceError: ``value`` is none of those.
        ValidationError: the definition breaks a rule.
    """
    if isinstance(value, Workflow):
        return value.spec()
    if isinstance(value, WorkflowSpec):
        return workflow_from_builtins(_builtins(value))
    if isinstance(value, dict):
        return workflow_from_builtins(value)
    raise SourceError(
        f"{label} is of type {type(value).__name__}, not a Workflow, a WorkflowSpec or a dict"
    )


def _builtins(spec: WorkflowSpec) -> Any:
    import msgspec  # noqa: PLC0415 - only for this rare case

    return msgspec.to_builtins(spec)


def _is_file(source: str) -> bool:
    """Say whether ``source`` is a file name (``C:\\x.json`` or ``a:b.json`` stay files)."""
    return source.endswith(".json") or Path(source).is_file()


def _import(module_name: str) -> ModuleType:
    """Import a module by name (the current directory first, as ``python -m`` does) or file."""
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise SourceError(f"no file {module_name}")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise SourceError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        return importlib.import_module(module_name)
    except SourceError:
        raise
    except ModuleNotFoundError as e:
        if e.name is not None and module_name.startswith(e.name):
            raise SourceError(f"no module named {module_name!r}") from e
        raise SourceError(f"cannot import {module_name!r}: {e}") from e
    except Exception as e:
        raise SourceError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from e
