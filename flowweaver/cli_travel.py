"""``flowweaver diff RUN --from N --to M`` and the instant of ``flowweaver replay --as-of``.

Both read a store, never drive a run, and so work beside a live server. The diff is the API's
(:func:`flowweaver.travel.diff_run`): ``--json`` prints exactly what
``GET /runs/{id}/diff`` answers, otherwise one line per changed field, then the events.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any, BinaryIO

import msgspec

from flowweaver.api.travel_routes import diff_json
from flowweaver.errors import FieldError, ValidationError
from flowweaver.ports import StoreReader
from flowweaver.travel import RunDiff, diff_run, event_time, parse_instant

_encoder = msgspec.json.Encoder()
VALUE_WIDTH = 60
"""The most characters of a value a text line shows (JSON, cut with an ellipsis)."""


def instant_arg(text: str) -> datetime:
    """Parse ``--as-of``: an RFC 3339 instant with its offset (argparse type)."""
    try:
        return parse_instant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shown(value: Any) -> str:
    text = _encoder.encode(value).decode()
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def diff_lines(found: RunDiff) -> list[str]:
    """Return the diff as text: a heading, one line per changed field, then the events."""
    count = found.end - found.start
    lines = [f"run {found.run_id}  from version {found.start} to {found.end} ({count} events)"]
    rows = [("run", name, old, new) for name, (old, new) in found.changes.run.items()]
    for task_id, fields in found.changes.tasks.items():
        rows += [(f"task {task_id}", name, old, new) for name, (old, new) in fields.items()]
    if not rows:
        lines.append("no field changed")
    who = max((len(r[0]) for r in rows), default=0)
    what = max((len(r[1]) for r in rows), default=0)
    lines += [
        f"{owner:<{who}}  {name:<{what}}  {_shown(old)} -> {_shown(new)}"
        for owner, name, old, new in rows
    ]
    if found.events:
        lines.append(f"events {found.start + 1}..{found.events[-1].version}:")
    for rec in found.events:
        task = getattr(rec.event, "task_id", None)
        stamp = event_time(rec).isoformat(timespec="milliseconds")
        lines.append(f"  {rec.version:>6}  {stamp}  {rec.name}{'  ' + task if task else ''}")
    if found.truncated:
        lines.append(
            f"({len(found.events)} of {count} events shown; for the rest: "
            f"flowweaver events {found.run_id} --after {found.next_after})"
        )
    return lines


def diff_command(args: argparse.Namespace, store: StoreReader, out: BinaryIO | None = None) -> int:
    """Print the diff of ``args.run_id`` from ``--from`` to ``--to``; close ``store``.

    Raises:
        NotFoundError: no such run.
        ValidationError: a bad range (the error names ``--from`` or ``--to``).
    """
    out = out or sys.stdout.buffer
    try:
        try:
            found = diff_run(store, args.run_id, args.start, args.end)
        except ValidationError as e:
            raise ValidationError(
                [FieldError(err.path.replace("$.query.", "--"), err.message) for err in e.errors]
            ) from None
    finally:
        store.close()
    if args.json:
        out.write(diff_json(found) + b"\n")
    else:
        out.write("\n".join(diff_lines(found)).encode() + b"\n")
    out.flush()
    return 0
