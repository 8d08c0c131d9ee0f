"""The authentication examples of the docs run as written: the tokens session of
operations.md with the real command, and api.md's curl against a real `serve --auth token`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess
from tests.test_cli import fw

ROOT = Path(__file__).resolve().parents[1]


def _section(page: str, start: str) -> str:
    """Return a ``## `` section of a docs page, up to the next one."""
    text = (ROOT / "docs" / page).read_text()
    begin = text.index(start + "\n")
    end = text.find("\n## ", begin + len(start))
    return text[begin : end if end != -1 else len(text)]


def _shape(line: str) -> tuple[str, int]:
    """What a printed line must keep: its first word (a token only as its prefix), its width
    in words."""
    words = line.split()
    first = "fw_" if words[0].startswith("fw_") else words[0]
    return first, len(words)


def test_the_tokens_session_runs_as_written(tmp_path: Path) -> None:
    """Each `$ flowweaver tokens ...` line of operations.md prints what the page shows."""
    section = _section("operations.md", "## Tokens")
    session = [line.strip() for line in section.splitlines() if line.startswith("    $ ")]
    assert len(session) == 3
    lines = section.splitlines()
    for command in session:
        at = next(i for i, line in enumerate(lines) if line.strip() == command)
        shown = []
        for line in lines[at + 1 :]:
            if not line.startswith("    ") or line.strip().startswith("$"):
                break
            shown.append(line.strip())
        done = fw(*command.split()[2:], cwd=tmp_path)  # the default store, in the cwd
        assert done.returncode == 0, done.stderr
        printed = (done.stdout + done.stderr).splitlines()
        assert [_shape(line) for line in printed] == [_shape(line) for line in shown], command


@pytest.mark.skipif(shutil.which("curl") is None, reason="the example uses curl")
def test_the_api_header_example_runs_as_written(tmp_path: Path) -> None:
    """api.md's curl with $FLOWWEAVER_TOKEN lists runs; without the token it is a 401."""
    section = _section("api.md", "## Authentication")
    [block] = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    store = f"sqlite:///{tmp_path / 'fw.db'}"
    made = fw("tokens", "create", "--name", "docs", "--role", "reader", "--store", store,
              cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    server = ServeProcess(store, tmp_path, args=("--auth", "token"))
    try:
        server.wait_started()
        command = block.strip().replace("http://localhost:3000", f"http://127.0.0.1:{server.port}")
        env = {**os.environ, "FLOWWEAVER_TOKEN": made.stdout.strip()}
        done = subprocess.run(
            ["bash", "-c", f"{command} -sS -w ' %{{http_code}}'"],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
        assert done.stdout.startswith('{"runs":[]') and done.stdout.endswith(" 200"), done.stdout
        env["FLOWWEAVER_TOKEN"] = ""
        done = subprocess.run(
            ["bash", "-c", f"{command} -sS -w ' %{{http_code}}'"],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
        assert done.stdout.endswith(" 401"), done.stdout
    finally:
        server.close()
