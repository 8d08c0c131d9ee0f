"""The shipped examples: the files the README names exist and its commands run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from flowweaver.api.examples import EXAMPLE_WORKFLOW

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _readme_commands(program: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith(f".venv/bin/{program} "):
                words = shlex.split(line, comments=True)
                found.append([str(BIN / program), *words[1:]])
    return found


def test_the_example_workflow_file_is_the_servers_example() -> None:
    """examples/example.json is the original README's workflow the server's demo handlers run."""
    document = json.loads((ROOT / "examples" / "example.json").read_text())
    assert document == EXAMPLE_WORKFLOW


def test_every_file_the_docs_link_is_in_the_repository() -> None:
    """Relative links in README.md and docs/ point at files of the repository, none outside."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    targets = {}
    for page in pages:
        text = page.read_text()
        assert "shared/DESIGN.md" not in text, page.name  # the contract file is not shipped
        for target in re.findall(r"\]\((?!https?:)([^)#]+)\)", text):
            targets[(page.parent / target).resolve()] = f"{page.name}: {target}"
    assert ROOT / "examples" / "example.json" in targets
    for path, where in targets.items():
        assert path.is_relative_to(ROOT), where
        assert path.exists(), where


def test_the_readmes_embedded_run_command_runs_as_written(tmp_path: Path) -> None:
    """`flowweaver run examples/example.json --wait` from the README completes the example."""
    [command] = _readme_commands("flowweaver")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["FLOWWEAVER_STORE"] = f"sqlite:///{tmp_path / 'flowweaver.db'}"
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"run \S+ completed", done.stdout), done.stdout
    assert "task3" in done.stdout
