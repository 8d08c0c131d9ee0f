"""The schedule commands: ``flowweaver schedules list|show|create|pause|resume|trigger|delete``.

    flowweaver schedules create ID --workflow W --cron EXPR [--timezone TZ] [--params JSON]
        [--overlap skip|buffer_one|allow] [--catchup-window S] [--paused] [--store URL]
    flowweaver schedules list|show ID [--json] [--store URL]
    flowweaver schedules pause|resume ID [--reason TEXT] | trigger ID [--json] | delete ID
        [--store URL]

They drive no runs, so they work beside a live server on the same store (a SQLite file
included), and every server sees a change at its next round (a second). ``create`` of an id
that exists replaces its definition. ``trigger`` records the fire; the scheduler of a server
on the store starts its run within a second (or when one starts, whatever the catch-up window).
With ``--server URL`` (and ``--token``) each calls that server's /schedules routes instead
(:mod:`flowweaver.cli_server`); there ``trigger`` starts its run at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from flowweaver.cli_tokens import _actor, _cli
from flowweaver.domain.schedule import DEFAULT_CATCHUP_WINDOW, OVERLAPS, ScheduleSpec
from flowweaver.errors import FieldError, ValidationError
from flowweaver.ports import EventStore, ScheduleLog
from flowweaver.schedules import ScheduleOut, ScheduleRegistry, ScheduleTriggered, schedule_out

EXIT_OK = 0
SCHEDULE_COMMANDS = ("list", "show", "create", "pause", "resume", "trigger", "delete")
_encoder = msgspec.json.Encoder()


def add_schedule_commands(
    commands: Any, parser_class: type[argparse.ArgumentParser]
) -> list[argparse.ArgumentParser]:
    """Add ``schedules`` and its subcommands; return the subcommands (each needs --store)."""
    schedules = commands.add_parser("schedules", help="create, list and drive cron schedules")
    actions = schedules.add_subparsers(
        dest="schedules_command", required=True, parser_class=parser_class
    )
    listing = actions.add_parser("list", help="list schedules: id, workflow, cron, next fire")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    show = actions.add_parser("show", help="show a schedule and its next five fire times")
    show.add_argument("id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the API's JSON")
    create = actions.add_parser("create", help="create a schedule, or replace one's definition")
    create.add_argument("id", metavar="ID")
    create.add_argument("--workflow", required=True, help="the workflow id each fire runs")
    create.add_argument("--cron", required=True, help="5 fields, or 6 with seconds first")
    create.add_argument("--timezone", default="UTC", help="an IANA name (default UTC)")
    create.add_argument("--params", default="{}", help="the runs' parameters, a JSON object")
    create.add_argument("--overlap", default="skip", help=f"one of {', '.join(OVERLAPS)}")
    create.add_argument(
        "--catchup-window",
        type=_number,
        default=DEFAULT_CATCHUP_WINDOW,
        help="seconds a missed fire still runs after its time (default 60)",
    )
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--json", action="store_true", help="print the API's JSON")
    made = [listing, show, create]
    for name, text in (
        ("pause", "stop a schedule firing"),
        ("resume", "fire a paused schedule again, from now"),
        ("trigger", "fire a schedule now (a server on the store starts the run)"),
        ("delete", "delete a schedule (its runs are not touched)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("id", metavar="ID")
        if name in ("pause", "resume"):
            action.add_argument("--reason", default="", help="why, recorded with the event")
        if name != "delete":
            action.add_argument("--json", action="store_true", help="print the API's JSON")
        made.append(action)
    return made


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


def schedule_params(text: str) -> dict[str, Any]:
    """Return ``--params`` as a JSON object.

    Raises:
        ValidationError: not JSON, or not an object.
    """
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as e:
        raise ValidationError([FieldError("--params", f"not JSON: {e}")]) from None
    if not isinstance(value, dict):
        raise ValidationError([FieldError("--params", "must be a JSON object")])
    return value


def schedules_command(args: argparse.Namespace) -> int:
    """Run one ``schedules`` subcommand."""
    cli = _cli()
    command = args.schedules_command
    spec = None
    if command == "create":
        spec = ScheduleSpec(
            id=args.id,
            workflow_id=args.workflow,
            cron=args.cron,
            timezone=args.timezone,
            parameters=schedule_params(args.params),
            overlap=args.overlap,
            catchup_window=args.catchup_window,
        )
    opener: Callable[[str], EventStore] = cli._open_existing
    store = opener(args.store)
    try:
        if not isinstance(store, ScheduleLog):
            raise cli.CommandError(f"{type(store).__name__} keeps no schedules")
        registry = ScheduleRegistry(store, check_workflow=store.get_workflow)
        registry.refresh()
        by = _actor()
        if spec is not None:
            entry, created = registry.put(spec, paused=True if args.paused else None, by=by)
            if args.json:
                print(_encoder.encode(schedule_out(entry, registry.now())).decode())
            else:
                print(f"schedule {spec.id!r} {'created' if created else 'saved'}")
        elif command == "list":
            now = registry.now()
            print_schedules([schedule_out(e, now, count=1) for e in registry.entries()], args.json)
        elif command == "show":
            print_schedule(schedule_out(registry.get(args.id), registry.now()), args.json)
        elif command in ("pause", "resume"):
            change = registry.pause if command == "pause" else registry.resume
            change(args.id, by=by, reason=args.reason)
            if args.json:
                print_schedule(schedule_out(registry.get(args.id), registry.now()), True)
            else:
                print(f"schedule {args.id!r} {command}d")
        elif command == "trigger":
            fired = registry.trigger(args.id, by=by)
            if args.json:
                print_json(
                    ScheduleTriggered(
                        schedule_id=args.id,
                        fire_time=fired.fire_time,
                        run_id=fired.run_id,
                        idempotency_key=fired.idempotency_key,
                    )
                )
            else:
                print(
                    f"schedule {args.id!r} fired: run {fired.run_id} "
                    f"(key {fired.idempotency_key}); a server on this store starts it"
                )
        else:
            registry.delete(args.id, by=by)
            print(f"schedule {args.id!r} deleted")
    finally:
        store.close()
    return EXIT_OK


def print_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    print(_encoder.encode(value).decode(), flush=True)


def print_schedules(shown: Sequence[ScheduleOut], as_json: bool) -> None:
    """Print ``schedules list``: a table (the next fire of each), or a JSON line each."""
    if as_json:
        for item in shown:
            print_json(item)
        return
    width = max([2, *(len(s.id) for s in shown)])
    print(f"{'ID':<{width}}  {'WORKFLOW':<20}  {'CRON':<20}  {'STATE':<7}  NEXT FIRE (UTC)")
    for s in shown:
        state = "paused" if s.paused else "active"
        upcoming = s.next_fire_times[0].utc if s.next_fire_times else "-"
        print(f"{s.id:<{width}}  {s.workflow_id:<20}  {s.cron:<20}  {state:<7}  {upcoming}")
    sys.stdout.flush()


def print_schedule(shown: ScheduleOut, as_json: bool) -> None:
    """Print ``schedules show``: the schedule and its next fire times, or its API JSON."""
    if as_json:
        print_json(shown)
        return
    print(
        f"schedule  {shown.id} (version {shown.version}, {'paused' if shown.paused else 'active'})"
    )
    print(f"workflow  {shown.workflow_id}")
    print(f"cron      {shown.cron} in {shown.timezone}")
    print(f"overlap   {shown.overlap}, catch-up window {shown.catchup_window:g} s")
    print(f"fired     {shown.fired}, skipped {shown.skipped}, last run {shown.last_run_id or '-'}")
    print("next fires:")
    for fire in shown.next_fire_times:
        print(f"  {fire.local}  ({fire.utc})")
    sys.stdout.flush()
