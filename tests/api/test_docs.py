"""The user docs against the code: every route, flag, variable and metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

from flowweaver.api.openapi import build_document
from flowweaver.cli import _SERVE, build_parser
from flowweaver.observability import metrics

ROOT = Path(__file__).resolve().parents[2]


def test_every_operation_has_a_section_in_api_md() -> None:
    """docs/api.md has a `### METHOD /path` section for each operation of the OpenAPI document."""
    text = (ROOT / "docs" / "api.md").read_text()
    sections = set(re.findall(r"^### ([A-Z]+ /\S*)$", text, re.MULTILINE))
    operations = {
        f"{method.upper()} {path}"
        for path, methods in build_document()["paths"].items()
        for method in methods
    }
    assert operations == sections


def test_every_serve_flag_and_variable_is_in_operations_md() -> None:
    """docs/operations.md lists each `serve` flag and FLOWWEAVER_* variable the code reads."""
    text = (ROOT / "docs" / "operations.md").read_text()
    parser = build_parser()
    serve = next(
        action.choices["serve"]
        for action in parser._actions  # argparse keeps subparsers only here
        if isinstance(action.choices, dict) and "serve" in action.choices
    )
    flags = {
        option
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    for flag in flags:
        assert f"`{flag}`" in text, flag
    # The serve flags' variables come from cli.py's option table; a few more are read
    # elsewhere in the package (FLOWWEAVER_SWITCH_INTERVAL). FLOWWEAVER_FAULTS arms crash tests
    # and is documented with them in concepts.md.
    names = {option.env for option in _SERVE}
    for module in (ROOT / "flowweaver").rglob("*.py"):
        names |= set(re.findall(r"FLOWWEAVER_[A-Z_]+", module.read_text()))
    names -= {"FLOWWEAVER_FAULTS"}
    assert "FLOWWEAVER_SWITCH_INTERVAL" in names
    for name in names:
        assert f"`{name}`" in text, name


def test_every_metric_is_in_operations_md() -> None:
    """docs/operations.md describes every metric the process exports."""
    text = (ROOT / "docs" / "operations.md").read_text()
    for metric in metrics.registry.collect():
        assert f"`{metric.name}`" in text, metric.name
