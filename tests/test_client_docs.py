"""The examples of docs/client.md and the README's Python quick start run as written, against
a real `flowweaver serve` on loopback (its port in place of 3000)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.client import Client
from tests.client.support import serving
from tests.test_cli import _env

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def _readme_client_block() -> str:
    quick = (ROOT / "README.md").read_text().split("\n## Quick start\n", 1)[1].split("\n## ")[0]
    [block] = _blocks(quick, "python")
    return block


def _python(code: str, port: int, cwd: Path) -> str:
    code = code.replace("http://localhost:3000", f"http://127.0.0.1:{port}")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60,
        check=False, env=_env(),
    )  # fmt: skip
    assert done.returncode == 0, (code, done.stdout, done.stderr)
    return done.stdout


def test_the_readme_quick_start_has_a_three_line_python_example() -> None:
    """The README's quick start shows the client in three lines."""
    assert len(_readme_client_block().strip().splitlines()) == 3


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_example_runs_as_written(tmp_path: Path) -> None:
    """The README's block, the client page's Python blocks in order, then its shell block
    (each line must succeed) against one server."""
    page = (ROOT / "docs" / "client.md").read_text()
    python_blocks = _blocks(page, "python")
    [shell] = _blocks(page, "sh")
    assert len(python_blocks) == 2
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    with serving(f"sqlite:///{tmp_path / 'flowweaver.db'}", tmp_path) as server:
        with Client(f"http://127.0.0.1:{server.port}") as client:
            client.register_workflow(EXAMPLE_WORKFLOW)  # the curl session before the block
        printed = _python(_readme_client_block(), server.port, tmp_path)
        assert " completed [" in printed
        printed = _python(python_blocks[0], server.port, tmp_path)
        assert "RunCompleted" in printed
        assert "completed [('t1'" in printed
        assert "run '00000000-0000-4000-8000-000000000000' not found" in printed
        printed = _python(python_blocks[1], server.port, tmp_path)
        assert printed.startswith("completed\n1 RunStarted\n")
        script = shell.replace("http://localhost:3000", f"http://127.0.0.1:{server.port}")
        bin_dir = str(Path(sys.executable).parent)
        env = _env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
            text=True, timeout=180, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout, done.stderr)
    assert "example-workflow" in done.stdout
    assert (tmp_path / "events.jsonl").read_text().count("\n") >= 10
    assert " ok version " in done.stdout
