"""Running the docs' examples as written: find a page's section, its code blocks, and run them.

One place cuts a section at the next ``## `` heading, so a section that gains a neighbour below
it (as concepts.md does with each feature) still hands its tests only its own blocks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]


def doc_section(page: str, heading: str) -> str:
    """Return the section of ``docs/<page>`` that starts at ``heading`` (``## Name``), up to
    the next ``## `` heading."""
    text = (ROOT / "docs" / page).read_text()
    begin = text.index(heading + "\n")
    end = text.find("\n## ", begin + len(heading))
    return text[begin : end if end != -1 else len(text)]


def code_blocks(section: str, language: str) -> list[str]:
    """Return the fenced ``language`` blocks of ``section``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in ``cwd``; fail the test when it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def run_curl_session(blocks: list[str], server: ServeProcess) -> subprocess.CompletedProcess[str]:
    """Run shell ``blocks`` in order (stopping at the first failure) against ``server``, with
    the docs' ``http://localhost:3000`` pointed at it; fail the test when a command fails."""
    script = "set -e\n" + "\n".join(blocks).replace(
        "http://localhost:3000", f"http://127.0.0.1:{server.port}"
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def curl_session_on_a_new_server(blocks: list[str], database: Path) -> None:
    """Start `flowweaver serve` on a new SQLite store at ``database``, run the shell
    ``blocks`` against it (see :func:`run_curl_session`), and stop it; the store stays."""
    server = ServeProcess(f"sqlite:///{database}", database.parent)
    try:
        server.wait_started()
        run_curl_session(blocks, server)
    finally:
        server.close()
