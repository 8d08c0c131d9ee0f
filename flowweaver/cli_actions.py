"""``flowweaver pause|resume|retry|skip|complete``: operator actions from the command line.

    flowweaver pause RUN_ID [--reason R] [--json] [--store URL]
    flowweaver resume RUN_ID [--reason R] [--json] [--store URL]
    flowweaver retry RUN_ID TASK_ID [--reason R] [--json] [--store URL]
    flowweaver skip RUN_ID TASK_ID [--reason R] [--json] [--store URL]
    flowweaver complete RUN_ID TASK_ID --output JSON [--reason R] [--json] [--store URL]

Each records the event the API's route records (RunPaused, RunResumed, TaskRetried,
TaskSkipped, TaskCompleted at attempt 0), with ``by`` the user who runs the command
(:func:`principal`) and ``reason``. Where it goes depends on the store:

- A store one engine drives (SQLite, memory): the command takes the store's engine lock, as
  ``flowweaver cancel`` does, so a live server on the store refuses it (one line naming the
  server's route to use instead). It decides the action with the domain command on the stored
  state and appends the events under optimistic concurrency. No task runs in this process:
  what the action makes ready runs when an engine next opens the store (``flowweaver serve``,
  ``flowweaver run``), which resumes the run by replay.
- A cluster's store (PostgreSQL): the action goes to the node that owns the run over the
  store's operator relay and takes effect there, on the live run. A run no node owns (its
  node stopped) is acted on here under the run's lease, as above; the node that takes it over
  next carries on. The command never takes over or resumes a run itself.

It prints one line, the run's new status (and the task's, for a task action), or with
``--json`` the run as GET /runs/{id} answers it. Exit codes: 0 done; 1 refused (the run or
task does not allow it: the same reason as the API's 409, an unknown run or task, a server
that drives the SQLite store); 2 a usage error. Nothing is stored when it exits non-zero.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from flowweaver.api.schemas import run_out
from flowweaver.backoff import Backoff
from flowweaver.cli import (
    _MAX_TASK_DATA,
    _STORE,
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    UsageError,
    _add_options,
    _open_existing,
    _redact,
    _run_command,
    _seconds,
)
from flowweaver.domain.run import DEFAULT_MAX_TASK_IO_BYTES, RunState
from flowweaver.domain.spec import nesting_error
from flowweaver.engine import operator
from flowweaver.engine.actions import DEFAULT_ACTION_TIMEOUT_S, relay_action
from flowweaver.engine.operator import (
    ANONYMOUS,
    MAX_PRINCIPAL_CHARS,
    MAX_REASON_CHARS,
    ActionKind,
    OperatorAction,
)
from flowweaver.engine.stamps import stamp_time
from flowweaver.errors import (
    ConcurrencyError,
    NotFoundError,
    RunUnavailableError,
    StoreLockedError,
    ValidationError,
)
from flowweaver.observability import configure_logging
from flowweaver.ports import (
    Append,
    Clock,
    EventStore,
    LeaseProvider,
    Leases,
    LocalLeases,
    RelayProvider,
    SystemClock,
)

_encoder = msgspec.json.Encoder()

MAX_APPEND_TRIES = 5
"""How often an action is decided again when another writer appended to the run first."""
_AGAIN = Backoff(base=0.025, cap=0.5)
"""Pauses between tries while a cluster's run changes hands: 0.05 s, doubling to 0.5 s."""

_HELP: dict[str, str] = {
    "pause": "pause a running run: no new task starts until it is resumed",
    "resume": "resume a paused run",
    "retry": "start a task's next attempt now (waiting for a retry, or failed in a paused run)",
    "skip": "skip a task that has not completed and is not running, and what depends on it",
    "complete": "complete a task by hand with --output as its output",
}
_TASK_ACTIONS = ("retry", "skip", "complete")


def principal() -> str:
    """Return who runs this command, recorded as ``by`` on the events it stores.

    The operating-system user (``getpass.getuser()``: LOGNAME, USER, LNAME, USERNAME, then the
    password database), at most 256 characters; ``anonymous`` when none is known. The one
    place the CLI learns its principal (tokens will replace it).
    """
    try:
        name = getpass.getuser().strip()
    except (OSError, KeyError, ImportError):  # no such variable and no passwd entry
        return ANONYMOUS
    return name[:MAX_PRINCIPAL_CHARS] or ANONYMOUS


def add_action_commands(
    commands: Any, table: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add pause, resume, retry, skip and complete to the subcommands and to ``table``."""
    for kind, help_text in _HELP.items():
        command = _run_command(commands, kind, help_text)
        if kind in _TASK_ACTIONS:
            command.add_argument("task_id", metavar="TASK_ID", help="the task of the run")
        if kind == "complete":
            command.add_argument(
                "--output", required=True, metavar="JSON", help="the task's output, JSON"
            )
        command.add_argument("--reason", default="", help="why, recorded with the event")
        command.add_argument("--json", action="store_true", help="print the API's run JSON")
        command.add_argument(
            "--timeout",
            type=_seconds,
            default=DEFAULT_ACTION_TIMEOUT_S,
            help="in a cluster, wait this long for the node that owns the run",
        )
        command.set_defaults(action=kind)
        _add_options(command, _MAX_TASK_DATA, *_STORE)
        table[kind] = action_command


def action_from(args: argparse.Namespace, kind: ActionKind) -> OperatorAction:
    """Return the action the arguments ask for, by :func:`principal`.

    Raises:
        UsageError: a reason over 4,096 characters, an output that is not JSON.
        ValidationError: an output nested too deeply.
    """
    if len(args.reason) > MAX_REASON_CHARS:
        raise UsageError(f"--reason: at most {MAX_REASON_CHARS} characters")
    output = None
    if kind == "complete":
        try:
            output = msgspec.json.decode(args.output)
        except msgspec.DecodeError as e:
            raise UsageError(f"--output is not JSON: {e}") from e
        deep = nesting_error(output, "$.output")
        if deep is not None:
            raise ValidationError([deep])
    return OperatorAction(
        kind=kind,
        run_id=args.run_id,
        by=principal(),
        reason=args.reason,
        task_id=getattr(args, "task_id", None),
        output=output,
    )


def action_command(args: argparse.Namespace) -> int:
    """Run one action command: record it, print the run's new state."""
    configure_logging(json=False, level="WARNING")
    action = action_from(args, args.action)
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


def print_outcome(state: RunState, action: OperatorAction, *, as_json: bool) -> None:
    """Print the run's state: its API JSON, or one line with its status (and the task's)."""
    if as_json:
        sys.stdout.buffer.write(_encoder.encode(run_out(state)) + b"\n")
        sys.stdout.flush()
        return
    line = f"run {state.id} {state.status}"
    task = state.tasks.get(action.task_id) if action.task_id is not None else None
    if task is not None:
        line += f"; task {task.id} {task.status}"
    print(line)


def act(
    store: EventStore,
    action: OperatorAction,
    *,
    max_io_bytes: int,
    timeout: float = DEFAULT_ACTION_TIMEOUT_S,
    store_label: str = "the store",
    clock: Clock | None = None,
) -> RunState:
    """Record ``action`` without running any task here; return the run's state after it.

    On a store with an operator relay (a cluster's), the node that owns the run decides it;
    on any other store, or for a run no node owns, it is decided here on the stored state
    under the run's lease (a SQLite store's engine lock).

    Raises:
        CommandError: no such run; another engine drives this SQLite store.
        NotFoundError: no such task.
        InvalidCommandError: the run or the task is not in a state that allows it.
        ValidationError: a hand-given output over ``max_io_bytes``.
        RunUnavailableError: in a cluster, no node that owns the run answered in time.
    """
    clock = clock or SystemClock()
    node = f"cli:{socket.gethostname()}:{os.getpid()}"
    state = store.run_state(action.run_id)
    if state is None:
        raise CommandError(f"no run {action.run_id} in {store_label}")
    operator.decide(action, state, clock.now(), max_io_bytes=max_io_bytes)  # refuse early
    if isinstance(store, RelayProvider) and isinstance(store, LeaseProvider):
        return _through_owner(store, action, node, clock, max_io_bytes, timeout)
    try:
        leases = store.open_leases(node) if isinstance(store, LeaseProvider) else LocalLeases()
    except StoreLockedError as e:
        holder = f"pid {e.pid}" if e.pid is not None else "another process"
        raise CommandError(
            f"run {action.run_id} is driven by another engine on this store ({holder}); "
            f"{action.kind} it through that server: POST {route(action)}"
        ) from None
    try:
        if not leases.acquire(action.run_id):  # a shared store without a relay: a live owner
            raise CommandError(
                f"run {action.run_id} is driven by another engine; {action.kind} it through "
                f"that server: POST {route(action)}"
            )
        state = _decide_and_append(store, action, clock, max_io_bytes)
    finally:
        leases.close()
    if state is None:  # only where no lock keeps other writers out (memory, Redis)
        raise CommandError(
            f"run {action.run_id} kept changing while the action was decided; try again"
        )
    return state


def route(action: OperatorAction) -> str:
    """Return the path of the API route that takes ``action``."""
    if action.kind == "signal":
        return f"/runs/{action.run_id}/signals/{action.signal}"
    if action.task_id is None:
        return f"/runs/{action.run_id}/{action.kind}"
    return f"/runs/{action.run_id}/tasks/{action.task_id}/{action.kind}"


def _decide_and_append(
    store: EventStore, action: OperatorAction, clock: Clock, max_io_bytes: int
) -> RunState | None:
    """Decide ``action`` on the stored state and append its events right after it.

    Another writer first (a ConcurrencyError) means deciding again on what it stored. Return
    the stored state after the action, or None when every try lost to another writer.
    """
    for _ in range(MAX_APPEND_TRIES):
        state = store.run_state(action.run_id)
        if state is None:
            raise NotFoundError("run", action.run_id)
        version = state.version
        events = operator.decide(action, state, stamp_time(clock, state), max_io_bytes=max_io_bytes)
        if not events:  # a second cancel of a run being cancelled: nothing more to record
            return state
        try:
            store.append([Append(action.run_id, version, events)])
        except ConcurrencyError:
            continue
        stored = store.run_state(action.run_id)
        assert stored is not None
        return stored
    return None


def _through_owner(
    store: EventStore,
    action: OperatorAction,
    node: str,
    clock: Clock,
    max_io_bytes: int,
    timeout: float,
) -> RunState:
    """Have the node that owns the run decide ``action``; act here on a run nobody owns.

    This process owns nothing: its relay never answers, and it holds a run's lease only for
    the moment it appends to that run.
    """
    run_id = action.run_id
    assert isinstance(store, RelayProvider)
    assert isinstance(store, LeaseProvider)
    relay = store.open_operator_relay(
        node, owns=lambda _run_id: False, handle=lambda _run_id, _body: b""
    )
    leases: Leases | None = None
    deadline = time.monotonic() + timeout
    try:
        leases = store.open_leases(node)
        assert leases is not None
        tries = 0
        while True:
            if tries:  # the run is changing hands: give it a moment
                time.sleep(min(_AGAIN.delay(tries), max(0.0, deadline - time.monotonic())))
            tries += 1
            if leases.acquire(run_id):  # no node owns it
                try:
                    state = _decide_and_append(store, action, clock, max_io_bytes)
                finally:
                    leases.release(run_id)
                if state is not None:
                    return state
            elif relay_action(relay, action, deadline):
                state = store.run_state(run_id)
                if state is None:
                    raise NotFoundError("run", run_id)
                return state
            if time.monotonic() >= deadline:
                raise RunUnavailableError(
                    run_id,
                    f"no node that owns the run answered within {timeout:g} s (its owner may "
                    "be stopping or another node taking it over); try again in a moment",
                )
            # It may have ended meanwhile: then say why not.
            state = store.run_state(run_id)
            if state is None:
                raise NotFoundError("run", run_id)
            operator.decide(action, state, clock.now(), max_io_bytes=max_io_bytes)
    finally:
        if leases is not None:
            leases.close()
        relay.close()


def cancel_in_cluster(store: EventStore, args: argparse.Namespace) -> int:
    """``flowweaver cancel`` on a cluster's store: the run's owner records the request
    (as :func:`act` does), then wait up to ``--timeout`` for the run to end.

    Exit 0 once it is cancelled, 1 when it ended otherwise or did not end in time.
    """
    try:
        action = action_from(args, "cancel")
        run_id = action.run_id
        act(
            store,
            action,
            max_io_bytes=DEFAULT_MAX_TASK_IO_BYTES,
            timeout=min(args.timeout, DEFAULT_ACTION_TIMEOUT_S),
            store_label=_redact(args.store),
        )
        deadline = time.monotonic() + args.timeout
        while True:
            top = store.max_position()
            state = store.run_state(run_id)
            assert state is not None
            if state.is_terminal:
                break
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"run {run_id} did not end within {args.timeout:g} s of the request; "
                    "it is cancelled when its running tasks end"
                )
            store.wait_for_log(top, min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        store.close()
    print(f"run {run_id} {state.status}")
    return EXIT_OK if state.status == "cancelled" else EXIT_FAILURE
