"""The examples of docs/builder.md run as written.

The first Python block is the page's `flows.py`; it is written to a fresh directory, where each
later Python block runs as a script and each `flowweaver` line of the `sh` block as a command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.test_cli import FLOWWEAVER

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "builder.md").read_text()
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")  # the engine's own log lines


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_every_example_runs_as_written(tmp_path: Path) -> None:
    """Each script exits 0 printing what its comments say; the commands print what the page says."""
    flows, *scripts = re.findall(r"```python\n(.*?)```", PAGE, re.DOTALL)
    (tmp_path / "flows.py").write_text(flows)
    assert len(scripts) == 3
    for script in scripts:
        done = _run([sys.executable, "-c", script], tmp_path)
        assert done.returncode == 0, done.stderr
        # A trailing comment `# shown` after a print, or a comment line after the script.
        expected = [c.strip() for c in re.findall(r"print\(.*\)[ \t]+#(.*)$", script, re.M)]
        expected += [c.strip() for c in re.findall(r"^# (\$.*)$", script, re.M)]
        printed = [line for line in done.stdout.splitlines() if not LOG_LINE.match(line)]
        assert printed == expected
    [block] = re.findall(r"```sh\n(.*?)```", PAGE, re.DOTALL)
    said = []
    for line in block.splitlines():
        args = shlex.split(line)
        assert args[0] == "flowweaver"
        done = _run([FLOWWEAVER, *args[1:]], tmp_path)
        assert done.returncode == 0, done.stderr
        said.append(done.stdout.strip())
    assert said == ["workflow etl v1 registered", "workflow etl v1 unchanged"]
    assert "prints `workflow etl v1 registered`, then `workflow etl v1 unchanged`" in PAGE
