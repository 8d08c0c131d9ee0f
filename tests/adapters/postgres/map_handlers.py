"""The handler the map cluster test loads into `flowweaver serve` with ``--handlers``.

``square_step`` writes one line per invocation (run, element key, attempt, pid) to the file
named by ``FWTEST_INVOCATIONS``, sleeps ``inputs.seconds``, and returns the square of its item.
"""

from __future__ import annotations

import os
import time
from typing import Any

import flowweaver.handlers as fw


@fw.handler("square_step")
def square_step(inputs: dict[str, Any], context: fw.TaskContext) -> dict[str, Any]:
    """Record this invocation, sleep, and return ``{"square": item * item}``."""
    path = os.environ["FWTEST_INVOCATIONS"]
    line = f"{context.run_id} {context.task_id} {context.attempt} {os.getpid()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one short O_APPEND write: lines never interleave
    finally:
        os.close(fd)
    time.sleep(float(inputs.get("seconds", 0.1)))
    item = int(inputs["item"])
    return {"square": item * item}
