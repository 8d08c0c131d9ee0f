"""What ``run --wait`` and ``events --follow`` show while a run goes on: on a terminal a live
table of task states and elapsed times (rich), for scripts JSON lines, one event a line.

Both read the API's event JSON (:class:`flowweaver.client.Event`), from a server's stream or
from a store (:func:`store_events`), so the two show the same thing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import msgspec
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flowweaver.api.sse import event_json
from flowweaver.client.calls import Event, event_from
from flowweaver.domain.events import TERMINAL_EVENT_NAMES
from flowweaver.ports import StoreReader

_encoder = msgspec.json.Encoder()
_STYLE = {
    "completed": "green",
    "failed": "bold red",
    "running": "cyan",
    "waiting_retry": "yellow",
    "skipped": "dim",
    "cancelled": "magenta",
    "paused": "yellow",
}


@dataclass
class TaskRow:
    """One task as the events so far tell it."""

    status: str = "pending"
    attempts: int = 0
    started: datetime | None = None
    ended: datetime | None = None
    detail: str = ""


@dataclass
class RunBoard:
    """A run's task states folded from its events, for the live table."""

    run_id: str
    status: str = "pending"
    tasks: dict[str, TaskRow] = field(default_factory=dict)
    started: datetime | None = None
    ended: datetime | None = None
    events: int = 0

    def apply(self, event: Event) -> None:
        """Fold one event into the board."""
        self.events += 1
        data, kind, at = event.data, event.type, event.timestamp
        if kind in ("RunStarted", "RunForked"):
            self.status, self.started = "running", at
            definition = data.get("definition") or {}
            for task in definition.get("tasks", []):
                self.tasks.setdefault(task["id"], TaskRow())
            for task_id in data.get("carried") or {}:
                self.tasks.setdefault(task_id, TaskRow()).status = "completed"
            return
        if kind in TERMINAL_EVENT_NAMES:
            self.status, self.ended = kind.removeprefix("Run").lower(), at
            return
        if kind == "RunPaused":
            self.status = "paused"
            return
        if kind == "RunResumed":
            self.status = "running"
            return
        task_id = data.get("taskId")
        if not isinstance(task_id, str):
            return
        row = self.tasks.setdefault(task_id, TaskRow())
        attempt = data.get("attempt")
        if isinstance(attempt, int) and attempt > row.attempts:
            row.attempts = attempt
        if kind == "TaskScheduled":
            row.status = "scheduled"
        elif kind == "TaskStarted":
            row.status, row.ended, row.detail = "running", None, ""
            row.started = row.started or at
        elif kind == "TaskCompleted":
            row.status, row.ended, row.detail = "completed", at, ""
        elif kind == "TaskFailed":
            error = data.get("error") or {}
            row.status = "waiting_retry" if data.get("retryAt") else "failed"
            row.ended = at
            row.detail = f"{error.get('type', '')}: {error.get('message', '')}"[:80]
        elif kind == "TaskRetried":
            row.status = "scheduled"
        elif kind == "TaskSkipped":
            row.status, row.detail = "skipped", str(data.get("reason", ""))[:80]
        else:
            row.status = kind.removeprefix("Task").lower()

    def table(self, now: datetime | None = None) -> Table:
        """Return the table: a row per task, then the run."""
        now = now or datetime.now(UTC)
        elapsed = _elapsed(self.started, self.ended, now)
        table = Table(
            title=f"run {self.run_id}  {self.status}  {elapsed}  ({self.events} events)",
            title_justify="left",
        )
        for name in ("TASK", "STATUS", "ATTEMPTS", "ELAPSED", "DETAIL"):
            table.add_column(name, no_wrap=name != "DETAIL")
        for task_id, row in self.tasks.items():
            table.add_row(
                task_id,
                Text(row.status, style=_STYLE.get(row.status, "")),
                str(row.attempts),
                _elapsed(row.started, row.ended, now) if row.started else "",
                row.detail,
            )
        return table


def _elapsed(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return ""
    seconds = max(0.0, ((end or now) - start).total_seconds())
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def live_wanted(as_json: bool, out: IO[str] | None = None) -> bool:
    """Say whether to draw the live table: on a terminal, unless JSON lines were asked for."""
    return not as_json and (out or sys.stdout).isatty()


def show_live(run_id: str, events: Iterable[Event], out: IO[str] | None = None) -> RunBoard:
    """Draw the live table while ``events`` come; return the board at the end."""
    board = RunBoard(run_id)
    console = Console(file=out or sys.stdout)
    with Live(get_renderable=board.table, console=console, refresh_per_second=4):
        for event in events:
            board.apply(event)
    return board


def print_json_lines(events: Iterable[Event], out: IO[bytes] | None = None) -> Event | None:
    """Write each event's JSON on a line of its own, flushed; return the last event."""
    out = out or sys.stdout.buffer
    last = None
    for event in events:
        out.write(_encoder.encode(event.data) + b"\n")
        out.flush()
        last = event
    return last


def store_events(
    store: StoreReader, run_id: str, after: int = 0, *, deadline: float | None = None
) -> Iterator[Event]:
    """Yield the run's events from a store as the API sends them, until its terminal event
    (or ``deadline``, a ``time.monotonic()`` value)."""
    last = after
    while deadline is None or time.monotonic() < deadline:
        top = store.max_position()
        page = store.read_run(run_id, after=last, limit=1000)
        for rec in page:
            last = rec.version
            data: dict[str, Any] = msgspec.json.decode(event_json(rec))
            yield event_from(data)
            if rec.name in TERMINAL_EVENT_NAMES:
                return
        if len(page) == 1000:
            continue
        wait = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
        store.wait_for_log(top, wait)
