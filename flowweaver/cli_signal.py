"""``flowweaver signal RUN_ID NAME [--payload JSON]``: send a run a signal from the command line.

    flowweaver signal RUN_ID NAME [--payload JSON] [--json] [--timeout S] [--store URL]

Records what POST /runs/{id}/signals/{name} records (SignalReceived, with ``by`` the user who
runs the command, and the TaskCompleted of every task waiting for the signal), the same way the
operator action commands do (:mod:`flowweaver.cli_actions`): on a cluster's store the node that
owns the run decides it; on a SQLite store only while no server drives the store (the next
engine on the store carries the run on). No ``--payload``: the payload is null. It prints the
run's new status, or with ``--json`` the run as GET /runs/{id} answers it. Exit codes: 0 done;
1 refused (an unknown run, a signal no task waits for, one already received, a run that ended);
2 a usage error (a bad name, a payload that is not JSON). Nothing is stored when it exits
non-zero.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from flowweaver.cli import (
    _MAX_TASK_DATA,
    _STORE,
    EXIT_OK,
    UsageError,
    _add_options,
    _open_existing,
    _redact,
    _run_command,
    _seconds,
)
from flowweaver.cli_actions import act, principal, print_outcome
from flowweaver.domain.ids import is_ident
from flowweaver.domain.spec import nesting_error
from flowweaver.engine.actions import DEFAULT_ACTION_TIMEOUT_S
from flowweaver.engine.operator import OperatorAction
from flowweaver.errors import ValidationError
from flowweaver.observability import configure_logging


def add_signal_command(
    commands: Any, table: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add ``signal`` to the subcommands and to ``table``."""
    command = _run_command(
        commands, "signal", "send a run a signal: the tasks waiting for it complete"
    )
    command.add_argument("name", metavar="NAME", help="the signal's name (a task's wait.signal)")
    command.add_argument("--payload", default=None, metavar="JSON", help="the payload, JSON")
    command.add_argument("--json", action="store_true", help="print the API's run JSON")
    command.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_ACTION_TIMEOUT_S,
        help="in a cluster, wait this long for the node that owns the run",
    )
    _add_options(command, _MAX_TASK_DATA, *_STORE)
    table["signal"] = signal_command


def signal_action(args: argparse.Namespace) -> OperatorAction:
    """Return the signal the arguments ask for, by :func:`principal`.

    Raises:
        UsageError: a name that is no valid id, a payload that is not JSON.
        ValidationError: a payload nested too deeply.
    """
    if not is_ident(args.name):
        raise UsageError(f"{args.name!r} is not a valid signal name (the pattern of task ids)")
    payload = None
    if args.payload is not None:
        try:
            payload = msgspec.json.decode(args.payload)
        except msgspec.DecodeError as e:
            raise UsageError(f"--payload is not JSON: {e}") from e
        deep = nesting_error(payload, "$.payload")
        if deep is not None:
            raise ValidationError([deep])
    return OperatorAction(
        kind="signal", run_id=args.run_id, by=principal(), output=payload, signal=args.name
    )


def signal_command(args: argparse.Namespace) -> int:
    """Record the signal; print the run's new state."""
    configure_logging(json=False, level="WARNING")
    action = signal_action(args)
    store = _open_existing(args.store)
    try:
        state = act(
            store,
            action,
            max_io_bytes=args.max_task_data,
            timeout=args.timeout,
            store_label=_redact(args.store),
        )
    finally:
        store.close()
    print_outcome(state, action, as_json=args.json)
    return EXIT_OK
