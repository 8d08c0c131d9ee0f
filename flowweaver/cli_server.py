"""The command line against a server: ``--server URL`` (FLOWWEAVER_SERVER) and ``--token``
(FLOWWEAVER_TOKEN) on the commands that read or act on runs, and ``runs list`` and
``workflows list|show|register``, which work on a store URL too.

    flowweaver status RUN_ID --server http://127.0.0.1:3000 [--token T] [--json]
    flowweaver events RUN_ID [--after N] [--follow] [--json] --server URL
    flowweaver runs list [--workflow ID] [--status S] [--limit N] [--json] [--server URL]
    flowweaver workflows list | show ID [--version N] | register FILE  [--server URL | --store URL]
    flowweaver run WORKFLOW.json [--params JSON] [--key K] [--wait] [--json] --server URL
    flowweaver signal RUN_ID NAME [--payload JSON] [--json] --server URL
    flowweaver schedules list | show ID | create ID ... | pause|resume ID | trigger ID
        | delete ID  [--server URL | --store URL]

With ``--server`` the command calls the server through :class:`flowweaver.Client`; without,
it opens the store as before. Exit codes are the command line's: 0 done, 1 a failure (a run
that failed or was cancelled, an unknown run, a refused request, a server that cannot be
reached or that is not Flowweaver, a refused token), 2 a usage error, 130 interrupted. Every
error is one line on stderr.

Another command joins by adding its name (``"command subcommand"`` for a subcommand) and
handler to :data:`SERVER_HANDLERS`; :func:`add_server_commands` gives its parser ``--server``
and ``--token``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from flowweaver import cli_live
from flowweaver.api.schemas import RunListItem, RunOut, WorkflowOut, run_list, workflow_out
from flowweaver.cli import (
    _STORE,
    EXIT_FAILURE,
    EXIT_OK,
    CommandError,
    UsageError,
    _add_options,
    _iso,
    _open_existing,
    _Option,
    _positive_int,
    _progress_line,
)
from flowweaver.cli_schedules import (
    SCHEDULE_COMMANDS,
    print_json,
    print_schedule,
    print_schedules,
    schedule_params,
)
from flowweaver.cli_workflows import SourceError, load_workflow
from flowweaver.client import Client, Event
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.errors import NotFoundError
from flowweaver.store import open_store

_encoder = msgspec.json.Encoder()

SERVER_OPTIONS = (
    _Option(
        "--server",
        str,
        None,
        "a Flowweaver server's URL (http://host:3000): ask it instead of opening a store",
        shown="none: the store",
        metavar="URL",
    ),
    _Option(
        "--token",
        str,
        None,
        "the API token sent to --server (Authorization: Bearer)",
        shown="none",
        metavar="TOKEN",
    ),
)

Handler = Callable[[Client, argparse.Namespace], int]
SERVER_HANDLERS: dict[str, Handler] = {}
"""Each command that takes ``--server``, by name, and what it does with a client."""


def add_server_options(command: argparse.ArgumentParser) -> None:
    """Add ``--server`` and ``--token`` to ``command``."""
    _add_options(command, *SERVER_OPTIONS)


def add_server_commands(
    commands: Any, table: dict[str, Callable[[argparse.Namespace], int]]
) -> None:
    """Add ``runs`` and ``workflows``, and ``--server``/``--token`` (and ``--json`` where it
    was missing) to every command of :data:`SERVER_HANDLERS`."""
    runs = commands.add_parser("runs", help="list runs (of a store or a server)")
    runs_actions = runs.add_subparsers(dest="runs_action", required=True)
    listing = runs_actions.add_parser("list", help="runs, newest first")
    listing.add_argument("--workflow", default=None, help="only runs of this workflow")
    listing.add_argument("--status", default=None, help="only runs with this status")
    listing.add_argument("--limit", type=_positive_int, default=50, help="most runs shown")
    listing.add_argument("--cursor", default=None, help="the next page's cursor (from --json)")
    listing.add_argument("--json", action="store_true", help="print a JSON line per run")
    _add_options(listing, *_STORE)
    add_server_options(listing)
    table["runs"] = runs_command

    workflows = commands.add_parser("workflows", help="list, show or register workflows")
    actions = workflows.add_subparsers(dest="workflows_action", required=True)
    wf_list = actions.add_parser("list", help="the latest version of every workflow")
    wf_list.add_argument("--json", action="store_true", help="print a JSON line per workflow")
    show = actions.add_parser("show", help="one workflow's definition (JSON)")
    show.add_argument("workflow_id", metavar="WORKFLOW_ID")
    show.add_argument("--version", type=_positive_int, default=None, help="this version")
    register = actions.add_parser("register", help="record a workflow document's new version")
    register.add_argument(
        "source",
        metavar="SOURCE",
        help="a WORKFLOW.json file, or module:attribute naming a Workflow, spec or dict",
    )
    register.add_argument("--json", action="store_true", help="print {id, version} as JSON")
    for command in (wf_list, show, register):
        _add_options(command, *_STORE)
        add_server_options(command)
    table["workflows"] = workflows_command

    for name in SERVER_HANDLERS:
        command = _parser_of(commands, name)
        if command is None or _has_option(command, "--server"):
            continue
        if not _has_option(command, "--json") and " " not in name:
            command.add_argument(
                "--json", action="store_true", help="print JSON lines, even on a terminal"
            )
        add_server_options(command)


def _parser_of(commands: Any, name: str) -> argparse.ArgumentParser | None:
    """Return the parser of ``name`` (``"schedules list"``: the subcommand's), or None."""
    first, _, rest = name.partition(" ")
    command: argparse.ArgumentParser | None = commands.choices.get(first)
    if command is None or not rest:
        return command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser | None = action.choices.get(rest)
            return found
    return None


def _has_option(command: argparse.ArgumentParser, option: str) -> bool:
    return any(option in action.option_strings for action in command._actions)


SUBCOMMANDS = {
    "runs": "runs_action",
    "workflows": "workflows_action",
    "schedules": "schedules_command",
}
"""The commands whose subcommand names the handler, and the attribute that holds it."""


def server_handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int] | None:
    """Return what runs the command against ``--server``, or None to use the store."""
    server = getattr(args, "server", None)
    if not server:
        return None
    command = args.command
    if command in SUBCOMMANDS:
        command = f"{command} {getattr(args, SUBCOMMANDS[command])}"
    handler = SERVER_HANDLERS.get(command)
    if handler is None:
        return None

    def run(args: argparse.Namespace) -> int:
        with connect(args) as client:
            return handler(client, args)

    return run


def connect(args: argparse.Namespace) -> Client:
    """Return a client of ``--server`` with ``--token``.

    Raises:
        UsageError: the URL is not http(s)://...
    """
    try:
        return Client(args.server, token=args.token or None)
    except ValueError as e:
        raise UsageError(f"--server: {e}") from None


def _write_json(value: Any) -> None:
    sys.stdout.buffer.write(_encoder.encode(value) + b"\n")
    sys.stdout.flush()


# --- reading runs -----------------------------------------------------------------------------


def print_run(run: RunOut, *, total: int | None = None) -> None:
    """Print a run's state as ``status`` does for a store."""
    at = f" (as of event {run.version} of {total})" if total is not None else ""
    print(
        f"run {run.id}  {run.status}{at}\n"
        f"workflow {run.workflow_id} v{run.workflow_version}  version {run.version}  "
        f"created {_iso(run.created_at)}  updated {_iso(run.updated_at)}"
    )
    width = max([4, *(len(t.id) for t in run.tasks)])
    print(f"{'TASK':<{width}}  {'STATUS':<13}  ATTEMPTS  DETAIL")
    for task in run.tasks:
        detail = ""
        if task.last_error is not None and task.status != "completed":
            detail = f"{task.last_error.type}: {task.last_error.message}"
        elif task.status == "completed":
            detail = _encoder.encode(task.output).decode()[:80]
        print(f"{task.id:<{width}}  {task.status:<13}  {task.attempts:<8}  {detail}")


def _status(client: Client, args: argparse.Namespace) -> int:
    as_of = args.as_of.isoformat() if getattr(args, "as_of", None) is not None else None
    run = client.get_run(args.run_id, at=getattr(args, "at", None), as_of=as_of)
    if args.json:
        _write_json(run)
        return EXIT_OK
    total = None
    if run.version and (args.command == "replay"):
        total = client.get_run(args.run_id).version
    print_run(run, total=total)
    return EXIT_OK


def _events(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        follow(client.events(args.run_id, after=args.after), args.run_id, as_json=args.json)
        return EXIT_OK
    after: int | None = args.after
    while after is not None:
        page = client.history(args.run_id, after=after, limit=1000)
        cli_live.print_json_lines(page.events)
        after = page.next_after
    return EXIT_OK


def follow(
    events: Iterator[Event], run_id: str, *, as_json: bool, lines: bool = False
) -> Event | None:
    """Show the events as they come: the live table on a terminal, else JSON lines (or, with
    ``lines``, the progress lines of ``run --wait``); return the last one."""
    if cli_live.live_wanted(as_json):
        last: Event | None = None

        def seen() -> Iterator[Event]:
            nonlocal last
            for event in events:
                last = event
                yield event

        cli_live.show_live(run_id, seen())
        return last
    if as_json or not lines:
        return cli_live.print_json_lines(events)
    last = None
    for event in events:
        try:
            line = _progress_line(event.decode(), event.type)
        except msgspec.ValidationError:
            line = f"  {event.type}"  # an event type this version does not know
        print(line, flush=True)
        last = event
    return last


def _lineage(client: Client, args: argparse.Namespace) -> int:
    found = client.lineage(args.run_id, limit=args.limit)
    if args.json:
        _write_json(found)
        return EXIT_OK
    parent = found.parent
    print(f"run {found.run_id}")
    print(f"parent {parent.run_id} at version {parent.at_version}" if parent else "parent none")
    for child in found.children:
        print(f"child {child.run_id} at version {child.at_version}  {child.status}")
    return EXIT_OK


def _diff(client: Client, args: argparse.Namespace) -> int:
    found = client.diff_run(args.run_id, args.start, args.end)
    if args.json:
        _write_json(found)
        return EXIT_OK
    count = found.to - found.from_
    print(f"run {found.run_id}  from version {found.from_} to {found.to} ({count} events)")
    rows = [("run", name, pair) for name, pair in found.run.items()]
    for task_id, fields in found.tasks.items():
        rows += [(f"task {task_id}", name, pair) for name, pair in fields.items()]
    if not rows:
        print("no field changed")
    who = max((len(r[0]) for r in rows), default=0)
    what = max((len(r[1]) for r in rows), default=0)
    for owner, name, (old, new) in rows:
        shown = (_encoder.encode(v).decode()[:60] for v in (old, new))
        print(f"{owner:<{who}}  {name:<{what}}  {' -> '.join(shown)}")
    for event in found.events:
        task = f"  {event['taskId']}" if event.get("taskId") else ""
        print(f"  {event['version']:>6}  {event['timestamp']}  {event['type']}{task}")
    return EXIT_OK


def _every_run(client: Client) -> Iterator[str]:
    cursor = None
    while True:
        page = client.list_runs(limit=1000, cursor=cursor)
        yield from (r.id for r in page.runs)
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _verify(client: Client, args: argparse.Namespace) -> int:
    if bool(args.run_ids) == args.all:
        raise UsageError("give RUN_ID ... or --all" + (", not both" if args.all else ""))
    failed = False
    for run_id in _every_run(client) if args.all else args.run_ids:
        try:
            check = client.verify_run(run_id)
        except NotFoundError:
            print(f"{run_id} not found", flush=True)
            failed = True
            continue
        if check.ok:
            print(f"{run_id} ok version {check.version} head {check.head}", flush=True)
        else:
            failed = True
            print(f"{run_id} broken at version {check.first_bad_version}: {check.reason}")
    return EXIT_FAILURE if failed else EXIT_OK


# --- acting on runs ---------------------------------------------------------------------------


def _action(client: Client, args: argparse.Namespace) -> int:
    from flowweaver.cli_actions import action_from  # noqa: PLC0415 - it imports the engine

    action = action_from(args, args.action)
    task_id = action.task_id or ""
    calls = {
        "pause": lambda: client.pause_run(args.run_id, action.reason),
        "resume": lambda: client.resume_run(args.run_id, action.reason),
        "retry": lambda: client.retry_task(args.run_id, task_id, action.reason),
        "skip": lambda: client.skip_task(args.run_id, task_id, action.reason),
        "complete": lambda: client.complete_task(
            args.run_id, task_id, action.output, action.reason
        ),
    }
    run = calls[args.action]()
    if args.json:
        _write_json(run)
        return EXIT_OK
    line = f"run {run.id} {run.status}"
    task = next((t for t in run.tasks if t.id == task_id), None)
    if task is not None:
        line += f"; task {task.id} {task.status}"
    print(line)
    return EXIT_OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    run = client.cancel_run(args.run_id, args.reason)
    if run.status not in ("completed", "failed", "cancelled"):
        deadline = time.monotonic() + args.timeout
        for event in client.events(args.run_id, after=run.version):
            if event.is_terminal:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"run {args.run_id} did not end within {args.timeout:g} s of the request; "
                    "it is cancelled when its running tasks end"
                )
        run = client.get_run(args.run_id)
    if args.json:
        _write_json(run)
    else:
        print(f"run {run.id} {run.status}")
    return EXIT_OK if run.status == "cancelled" else EXIT_FAILURE


def _outcome(client: Client, run_id: str, started: float, out: TextIO) -> int:
    run = client.get_run(run_id)
    elapsed = time.monotonic() - started
    print(f"run {run_id} {run.status} in {elapsed * 1000:.0f} ms", file=out)
    if run.status != "completed":
        failed = [t.id for t in run.tasks if t.status == "failed"]
        if failed:
            print(f"failed tasks: {', '.join(failed)}", file=out)
        return EXIT_FAILURE
    return EXIT_OK


def _drive_remote(client: Client, args: argparse.Namespace, run: RunOut, label: str) -> int:
    """Follow a run the server started until it ends, as ``run`` does embedded."""
    out = sys.stderr if args.json else sys.stdout  # stdout carries the events' JSON lines
    print(f"run {run.id} ({label})", file=out, flush=True)
    started = time.monotonic()
    deadline = started + args.timeout

    def until_deadline() -> Iterator[Event]:
        for event in client.events(run.id):
            yield event
            if time.monotonic() > deadline:
                raise CommandError(
                    f"run {run.id} did not finish within {args.timeout:g} s; it goes on on "
                    f"the server (flowweaver cancel {run.id} --server {client.url} stops it)"
                )

    events = until_deadline()
    if args.wait:
        follow(events, run.id, as_json=args.json, lines=True)
    else:
        for _ in events:
            pass
    return _outcome(client, run.id, started, out)


def _params(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        params = msgspec.json.decode(text)
    except msgspec.DecodeError as e:
        raise UsageError(f"--params is not JSON: {e}") from e
    if not isinstance(params, dict):
        raise UsageError("--params must be a JSON object")
    return params


def _run(client: Client, args: argparse.Namespace) -> int:
    params = _params(args.params) or {}
    spec = _load(args.workflow)  # a bad document is refused before anything is sent
    created = client.register_workflow(spec)
    run = client.start_run(spec.id, params, idempotency_key=args.key)
    return _drive_remote(client, args, run, f"{spec.id} v{created.version}")


def _fork(client: Client, args: argparse.Namespace) -> int:
    from flowweaver.cli_fork import _fork_request  # noqa: PLC0415 - it imports the engine

    params, outputs = _fork_request(args)
    run = client.fork_run(
        args.run_id,
        at_version=args.at,
        reset=args.reset,
        parameters=params,
        outputs=outputs or None,
        reason=args.reason,
        idempotency_key=args.key,
    )
    return _drive_remote(
        client, args, run, f"fork of {args.run_id} at version {run.parent_version}"
    )


# --- runs list and workflows, on a server or a store -----------------------------------------


def _print_runs(runs: list[RunListItem], next_cursor: str | None, as_json: bool) -> None:
    if as_json:
        for item in runs:
            sys.stdout.buffer.write(_encoder.encode(item) + b"\n")
    else:
        print(f"{'RUN':<36}  {'STATUS':<9}  {'WORKFLOW':<20}  CREATED")
        for item in runs:
            workflow = f"{item.workflow_id} v{item.workflow_version}"
            print(f"{item.id:<36}  {item.status:<9}  {workflow:<20}  {_iso(item.created_at)}")
    sys.stdout.flush()
    if next_cursor is not None:
        print(f"more: --cursor {next_cursor}", file=sys.stderr)


def _runs_list(client: Client, args: argparse.Namespace) -> int:
    page = client.list_runs(
        workflow_id=args.workflow, status=args.status, limit=args.limit, cursor=args.cursor
    )
    _print_runs(page.runs, page.next_cursor, args.json)
    return EXIT_OK


def runs_command(args: argparse.Namespace) -> int:
    """``runs list`` on a store."""
    store = _open_existing(args.store)
    try:
        page = store.list_runs(
            workflow_id=args.workflow, status=args.status, limit=args.limit, cursor=args.cursor
        )
    finally:
        store.close()
    wire = run_list(page)
    _print_runs(wire.runs, wire.next_cursor, args.json)
    return EXIT_OK


def _print_workflows(found: list[WorkflowOut], as_json: bool) -> None:
    for workflow in found:
        if as_json:
            sys.stdout.buffer.write(_encoder.encode(workflow) + b"\n")
        else:
            tasks = len(workflow.definition.tasks)
            print(
                f"{workflow.id}  v{workflow.version}  {tasks} tasks  {_iso(workflow.registered_at)}"
            )
    sys.stdout.flush()


def _print_registered(workflow_id: str, version: int, created: bool, as_json: bool) -> None:
    if as_json:
        _write_json({"id": workflow_id, "version": version})
    else:
        print(f"workflow {workflow_id} v{version} {'registered' if created else 'unchanged'}")


def _workflows(client: Client, args: argparse.Namespace) -> int:
    action = args.workflows_action
    if action == "list":
        _print_workflows(client.list_workflows().workflows, args.json)
    elif action == "show":
        _write_json(client.get_workflow(args.workflow_id, version=args.version))
    else:
        spec = _load(args.source)
        before = _latest_version(client, spec.id)
        created = client.register_workflow(spec)
        _print_registered(created.id, created.version, created.version != before, args.json)
    return EXIT_OK


def _latest_version(client: Client, workflow_id: str) -> int | None:
    try:
        return client.get_workflow(workflow_id).version
    except NotFoundError:
        return None


def _load(source: str) -> WorkflowSpec:
    """The definition a JSON file or ``module:attribute`` names (cli_workflows.load_workflow)."""
    try:
        return load_workflow(source)
    except SourceError as e:
        raise CommandError(str(e)) from e


def workflows_command(args: argparse.Namespace) -> int:
    """``workflows list|show|register`` on a store (registering drives no run: it works
    beside a live server on the same store)."""
    action = args.workflows_action
    spec = _load(args.source) if action == "register" else None
    # Registering may create the store (as `run` does); reading never does.
    store = open_store(args.store) if spec is not None else _open_existing(args.store)
    try:
        if action == "list":
            _print_workflows([workflow_out(w) for w in store.list_workflows()], args.json)
        elif action == "show":
            _write_json(workflow_out(store.get_workflow(args.workflow_id, args.version)))
        else:
            assert spec is not None
            version, created = store.register_workflow(spec, datetime.now(UTC))
            _print_registered(spec.id, version, created, args.json)
    finally:
        store.close()
    return EXIT_OK


# --- signals and schedules --------------------------------------------------------------------


def _signal(client: Client, args: argparse.Namespace) -> int:
    from flowweaver.cli_signal import signal_action  # noqa: PLC0415 - it imports the engine

    action = signal_action(args)  # a bad name or payload is refused before anything is sent
    run = client.send_signal(args.run_id, args.name, action.output)
    if args.json:
        _write_json(run)
    else:
        print(f"run {run.id} {run.status}")
    return EXIT_OK


def _schedules(client: Client, args: argparse.Namespace) -> int:
    command = args.schedules_command
    if command == "list":
        print_schedules(client.list_schedules().schedules, args.json)
    elif command == "show":
        print_schedule(client.get_schedule(args.id), args.json)
    elif command == "create":
        params = schedule_params(args.params)
        try:
            client.get_schedule(args.id)
            existed = True
        except NotFoundError:
            existed = False
        made = client.create_schedule(
            args.id,
            args.workflow,
            args.cron,
            timezone=args.timezone,
            parameters=params,
            overlap=args.overlap,
            catchup_window=args.catchup_window,
            paused=True if args.paused else None,
        )
        if args.json:
            print_json(made)
        else:
            print(f"schedule {made.id!r} {'saved' if existed else 'created'}")
    elif command in ("pause", "resume"):
        change = client.pause_schedule if command == "pause" else client.resume_schedule
        changed = change(args.id, args.reason)
        if args.json:
            print_json(changed)
        else:
            print(f"schedule {changed.id!r} {command}d")
    elif command == "trigger":
        fired = client.trigger_schedule(args.id)
        if args.json:
            print_json(fired)
        else:
            print(
                f"schedule {fired.schedule_id!r} fired: run {fired.run_id} "
                f"(key {fired.idempotency_key})"
            )
    else:
        client.delete_schedule(args.id)
        print(f"schedule {args.id!r} deleted")
    return EXIT_OK


SERVER_HANDLERS.update(
    {
        "status": _status,
        "replay": _status,
        "events": _events,
        "lineage": _lineage,
        "diff": _diff,
        "verify": _verify,
        "cancel": _cancel,
        "pause": _action,
        "resume": _action,
        "retry": _action,
        "skip": _action,
        "complete": _action,
        "run": _run,
        "fork": _fork,
        "runs list": _runs_list,
        "workflows list": _workflows,
        "workflows show": _workflows,
        "workflows register": _workflows,
        "signal": _signal,
        **{f"schedules {name}": _schedules for name in SCHEDULE_COMMANDS},
    }
)

__all__ = [
    "SERVER_HANDLERS",
    "SERVER_OPTIONS",
    "add_server_commands",
    "add_server_options",
    "follow",
    "server_handler",
]
