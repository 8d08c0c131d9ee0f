"""Run the ``flowweaver`` command inside the test process, as :func:`tests.test_cli.fw` runs
it as a subprocess: same arguments, working directory and environment, same exit code and
output.

A subprocess pays the interpreter's start and the package's imports (about a second on a
loaded 2-core machine) on every call; a test of what a command prints and returns, calling it
twenty times, pays that twenty times. Such tests call the command here and keep one real
subprocess call per command family for what only a process shows (the exit status the shell
sees, the console script itself).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import structlog

from flowweaver.cli import main

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")


@contextmanager
def _as_a_process_would_run(cwd: Path, env: Mapping[str, str]) -> Iterator[None]:
    """Set the working directory and the environment for the block; restore them, and the
    logging and thread switch interval `serve` sets, afterwards."""
    saved_env = dict(os.environ)
    saved_interval = sys.getswitchinterval()
    saved_cwd = os.getcwd()
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        sys.setswitchinterval(saved_interval)


def fw_in_process(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver ARGS`` here to the end and return what it printed and its exit code."""
    # What the command writes as text and as bytes (``sys.stdout.buffer``) lands in order.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    # As tests.test_cli.fw: the tests' own environment, without the FLOWWEAVER_ settings.
    environment = env
    if environment is None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    with _as_a_process_would_run(cwd, environment), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse ends usage errors and --help this way
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    stdout, stderr = (stream.buffer.getvalue().decode() for stream in (out, err))
    return subprocess.CompletedProcess([FLOWWEAVER, *args], code, stdout, stderr)
