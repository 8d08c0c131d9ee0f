"""``flowweaver status``: the failure detail of each failed or retried task, human readable.

For every task whose latest failed attempt is known: its error type and message, the handler's
traceback, and the last lines it logged in its latest attempt with an outcome. What a handler
raised or logged is untrusted text: control characters are shown escaped, never sent to the
terminal as they are.
"""

from __future__ import annotations

import re
from typing import TextIO

import msgspec

from flowweaver.domain.events import LogLine
from flowweaver.domain.run import RunState, TaskState

SHOWN_LOG_LINES = 20
"""How many of a task's last log lines ``status`` prints; ``--json`` has them all."""

_encoder = msgspec.json.Encoder()
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """Escape the control characters of ``text`` (newlines and tabs stay)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _indent(text: str, prefix: str) -> str:
    return "".join(f"{prefix}{line}\n" if line else "\n" for line in _printable(text).splitlines())


def _log_line(line: LogLine) -> str:
    fields = " ".join(f"{k}={_encoder.encode(v).decode()}" for k, v in line.fields.items())
    stamp = line.timestamp.isoformat(timespec="milliseconds")
    text = f"{stamp}  {line.level:<8}  {line.message}"
    return _printable(f"{text}  {fields}" if fields else text).replace("\n", "\\n")


def _task_detail(task: TaskState) -> str:
    error = task.last_error
    assert error is not None
    out = [f"\ntask {task.id}  {task.status}  attempt {task.attempts}\n"]
    out.append(_indent(f"{error.type}: {error.message}", "  "))
    if error.traceback:
        out.append(_indent(error.traceback, "    "))
    if task.logs:
        shown = task.logs[-SHOWN_LOG_LINES:]
        earlier = len(task.logs) - len(shown)
        more = f", the last {len(shown)} shown; --json has all" if earlier else ""
        out.append(f"  logs of its last finished attempt ({len(task.logs)} lines{more}):\n")
        out.extend(f"    {_log_line(line)}\n" for line in shown)
    return "".join(out)


def print_failure_detail(state: RunState, out: TextIO) -> None:
    """Print the error, traceback and last logs of every task that failed or was retried."""
    for task in state.tasks.values():
        if task.last_error is not None:
            out.write(_task_detail(task))
