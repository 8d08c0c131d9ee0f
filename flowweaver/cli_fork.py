"""``flowweaver fork`` and ``flowweaver lineage``: rerun a run from one of its versions, embedded
like ``flowweaver run``, and show where a run came from and which runs came from it.

    flowweaver fork RUN_ID [--at N] [--reset TASK ...] [--params JSON] [--output TASK=JSON ...]
                    [--reason TEXT] [--key KEY] [--wait] [--timeout S] [--store URL]
    flowweaver lineage RUN_ID [--json] [--limit N] [--store URL]

``fork`` drives the new run with an engine of its own until it ends (a SQLite store that a
server drives is refused with one line: fork through that server's POST /runs/{id}/fork).
Exit codes: 0 the fork completed, 1 it failed or was cancelled or the request was refused
(an unknown run, a version past its end, a reset task the workflow lacks, ...), 2 a malformed
argument, 130 interrupted. ``lineage`` only reads, beside a live server too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from flowweaver.api.schemas import MAX_PAGE, lineage_out
from flowweaver.cli import (
    _STORE,
    EXIT_OK,
    CommandError,
    UsageError,
    _add_driving_options,
    _add_options,
    _drive,
    _iso,
    _open_existing,
    _positive_int,
    _redact,
    _registry,
    _run_command,
)
from flowweaver.engine import Engine, RunHandle
from flowweaver.engine.lineage import read_lineage
from flowweaver.errors import NotFoundError
from flowweaver.observability import configure_logging

_encoder = msgspec.json.Encoder()


def add_fork_commands(commands: Any, table: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``fork`` and ``lineage`` to the ``flowweaver`` subcommands and to ``table``."""
    fork = _run_command(commands, "fork", "rerun a run from one of its versions, embedded")
    fork.add_argument("--at", type=_positive_int, default=None, help="the run's version N")
    fork.add_argument(
        "--reset",
        nargs="+",
        default=None,
        metavar="TASK",
        help="tasks to run again, with everything downstream (default: every task not "
        "completed as of --at)",
    )
    fork.add_argument("--params", default=None, help="new run parameters, a JSON object")
    fork.add_argument(
        "--output",
        action="append",
        default=[],
        metavar="TASK=JSON",
        help="override a carried task's output (repeatable)",
    )
    fork.add_argument("--reason", default="", help="why, recorded on RunForked")
    _add_driving_options(fork)

    lineage = _run_command(commands, "lineage", "show a run's parent and the runs forked from it")
    lineage.add_argument("--json", action="store_true", help="print the API's JSON")
    lineage.add_argument(
        "--limit", type=_positive_int, default=100, help=f"most children shown (up to {MAX_PAGE})"
    )
    _add_options(lineage, *_STORE)
    table["fork"] = fork_command
    table["lineage"] = lineage_command


def _fork_request(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Check ``--params`` and ``--output`` before any store opens.

    Raises:
        UsageError: either is malformed.
    """
    params = None
    if args.params is not None:
        try:
            params = msgspec.json.decode(args.params)
        except msgspec.DecodeError as e:
            raise UsageError(f"--params is not JSON: {e}") from e
        if not isinstance(params, dict):
            raise UsageError("--params must be a JSON object")
    outputs: dict[str, Any] = {}
    for item in args.output:
        task_id, sep, text = item.partition("=")
        if not sep or not task_id:
            raise UsageError(f"--output must be TASK=JSON, not {item[:60]!r}")
        try:
            outputs[task_id] = msgspec.json.decode(text)
        except msgspec.DecodeError as e:
            raise UsageError(f"--output {task_id}: not JSON: {e}") from e
    return params, outputs


def fork_command(args: argparse.Namespace) -> int:
    """Fork a run and drive the fork to its end on an embedded engine."""
    configure_logging(json=False, level="WARNING")
    params, outputs = _fork_request(args)
    registry = _registry(args.handlers, examples=args.example_handlers)
    # Driving the fork takes the store: a SQLite store a server drives refuses (StoreLockedError).
    engine = Engine(
        _open_existing(args.store),
        handlers=registry,
        workers=args.workers,
        owns_store=True,
        recover=False,
    )

    def start() -> tuple[RunHandle, str]:
        try:
            handle = engine.fork_run(
                args.run_id,
                at_version=args.at,
                reset=args.reset,
                parameters=params,
                outputs=outputs or None,
                reason=args.reason,
                idempotency_key=args.key,
            )
        except NotFoundError:
            raise CommandError(f"no run {args.run_id} in {_redact(args.store)}") from None
        return handle, f"fork of {args.run_id} at version {handle.state.parent_version}"

    return _drive(engine, start, args)


def lineage_command(args: argparse.Namespace) -> int:
    """Print a run's parent and its forks, newest first."""
    if args.limit > MAX_PAGE:
        raise UsageError(f"--limit is at most {MAX_PAGE}")
    store = _open_existing(args.store)
    try:
        try:
            lineage = read_lineage(store, args.run_id, limit=args.limit)
        except NotFoundError:
            raise CommandError(f"no run {args.run_id} in {_redact(args.store)}") from None
    finally:
        store.close()
    out = sys.stdout
    if args.json:
        out.buffer.write(_encoder.encode(lineage_out(lineage)) + b"\n")
        return EXIT_OK
    print(f"run {lineage.run_id}", file=out)
    parent = lineage.parent
    print(
        f"parent {parent.run_id} at version {parent.at_version}" if parent else "parent -",
        file=out,
    )
    more = "" if lineage.next_cursor is None else f" (the newest {len(lineage.children)})"
    print(f"children {len(lineage.children)}{more}", file=out)
    for child in lineage.children:
        print(
            f"  {child.id}  at version {child.parent_version}  {child.status:<9}  "
            f"created {_iso(child.created_at)}",
            file=out,
        )
    return EXIT_OK
