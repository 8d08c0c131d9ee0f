"""The public Python surface: what `import flowweaver` offers, and every name the docs use."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import flowweaver
from flowweaver import errors
from flowweaver.handlers import bound_logger, builtin_registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FIXTURES = Path(__file__).parent / "fixtures"

# Dotted names in the docs that are not Python: a file name and an entry-point group.
NOT_PYTHON = {"flowweaver.db", "flowweaver.stores"}

_DOTTED = re.compile(r"(?<![\w/.-])flowweaver(?:\.[A-Za-z_]\w*)+")
_FROM_IMPORT = re.compile(r"^\s*from (flowweaver(?:\.\w+)*) import ([\w, ()]+)", re.MULTILINE)


def _resolve(dotted: str) -> Any:
    """Import the longest module prefix of ``dotted`` and look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            value = getattr(value, name)
        return value
    raise ModuleNotFoundError(dotted)


def _documented_names() -> set[str]:
    names: set[str] = set()
    for path in DOCS:
        text = path.read_text()
        names |= {m for m in _DOTTED.findall(text) if m not in NOT_PYTHON}
        for module, imported in _FROM_IMPORT.findall(text):
            names |= {f"{module}.{n.strip()}" for n in imported.strip("()").split(",") if n.strip()}
    return names


def test_all_is_sorted_and_complete() -> None:
    """`flowweaver.__all__` is sorted and holds the contract's names and every error class."""
    assert flowweaver.__all__ == sorted(flowweaver.__all__)
    expected = {"Engine", "HandlerRegistry", "RunHandle", "TaskContext", "handler", "open_store"}
    expected |= {"Workflow"}
    expected |= {"AsyncClient", "Client"}
    expected |= set(errors.__all__)
    assert set(flowweaver.__all__) == expected


@pytest.mark.parametrize("name", flowweaver.__all__)
def test_every_public_name_exists(name: str) -> None:
    """Each name in `__all__` is an attribute of the package (lazy ones load on first use)."""
    assert getattr(flowweaver, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    """A name the package does not have raises AttributeError, as for any module."""
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = flowweaver.nope  # type: ignore[attr-defined]


def test_every_name_the_docs_use_exists() -> None:
    """Every `flowweaver.X` and `from flowweaver... import X` in README.md and docs/ resolves."""
    names = _documented_names()
    assert "flowweaver.handler" in names  # the documented decorator is really scanned
    for name in sorted(names):
        assert _resolve(name) is not None, name


def test_importing_the_package_does_not_load_the_engine() -> None:
    """`import flowweaver` in a handler file loads neither the engine nor the stores."""
    code = (
        "import sys, flowweaver\n"
        "heavy = ('flowweaver.engine', 'flowweaver.store', 'pykka')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == ""


def test_a_handler_file_written_as_the_docs_say_loads() -> None:
    """A file with `import flowweaver` and `@flowweaver.handler("x")` loads via --handlers FILE."""
    registry = builtin_registry()
    registry.load(str(FIXTURES / "docs_handlers.py"))
    ctx = flowweaver.TaskContext(run_id="r", task_id="t", attempt=1, log=bound_logger())
    assert registry.get("shout").call({"text": "hi"}, ctx) == "HI!"


def test_the_decorator_is_the_handlers_one() -> None:
    """`flowweaver.handler` is the decorator of flowweaver.handlers, not a copy."""
    handlers: ModuleType = importlib.import_module("flowweaver.handlers")
    assert flowweaver.handler is handlers.handler
    assert flowweaver.Engine is importlib.import_module("flowweaver.engine").Engine


def test_the_command_line_runs_a_handler_file_written_as_the_docs_say(tmp_path: Path) -> None:
    """`flowweaver run wf.json --handlers FILE` runs a task on a docs-style handler."""
    workflow = tmp_path / "wf.json"
    workflow.write_text('{"id": "shouting", "tasks": [{"id": "t", "handler": "shout"}]}')
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "flowweaver"),
            "run",
            str(workflow),
            "--store",
            "memory://",
            "--handlers",
            str(FIXTURES / "docs_handlers.py"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout


def test_the_version_is_the_installed_distributions() -> None:
    """flowweaver.__version__ is the version the package metadata carries (pyproject's)."""
    assert flowweaver.__version__ == importlib.metadata.version("flowweaver")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert flowweaver.__version__ == pyproject["project"]["version"]


def test_the_testing_extra_installs_what_flowweaver_testing_imports() -> None:
    """Every outside package that flowweaver.testing imports is a dependency or in [testing]."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    declared = {
        re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in [*project["dependencies"], *project["optional-dependencies"]["testing"]]
    }
    imported: set[str] = set()
    for path in (ROOT / "flowweaver" / "testing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    outside = {
        name
        for name in imported
        if name != "flowweaver" and name not in sys.stdlib_module_names and name != "__future__"
    }
    distributions = importlib.metadata.packages_distributions()
    needed = {
        dist.lower().replace("_", "-")
        for name in outside
        for dist in distributions.get(name, [name])
    }
    assert {"pytest", "hypothesis"} <= needed
    assert needed <= declared, sorted(needed - declared)
