"""Handlers the cluster tests load into `flowweaver serve` with ``--handlers``.

``step`` writes one line per invocation to the file named by ``FWTEST_INVOCATIONS`` before it
sleeps ``inputs.seconds``, so a test can count how often each attempt really ran, and where.
With ``inputs.gate`` (a directory), it returns as soon as the test creates the file
``<gate>/<run id>``, or after ``inputs.seconds`` at most: the test decides when the task ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import flowweaver.handlers as fw


@fw.handler("step")
def step(inputs: dict[str, Any], context: fw.TaskContext) -> dict[str, Any]:
    """Record this invocation (run, task, attempt, pid), then sleep ``inputs.seconds`` (or
    until the run's gate file appears)."""
    path = os.environ.get("FWTEST_INVOCATIONS")
    if path:
        line = f"{context.run_id} {context.task_id} {context.attempt} {os.getpid()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one short O_APPEND write: lines never interleave
        finally:
            os.close(fd)
    seconds = float(inputs.get("seconds", 0.1))
    if "gate" in inputs:
        opened = Path(inputs["gate"]) / context.run_id
        deadline = time.monotonic() + seconds
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # another process opens it: a file is what both can see
    else:
        time.sleep(seconds)
    return {"pid": os.getpid()}
