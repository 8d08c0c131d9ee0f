"""The ``flowweaver`` command: the composition root that parses, builds the parts and wires them.

    flowweaver serve [--host 127.0.0.1] [--port 3000] [--store URL] [--workers N] ...
    flowweaver run WORKFLOW.json [--params JSON] [--wait]
    flowweaver status RUN_ID | events RUN_ID [--after N] [--follow]
    flowweaver replay RUN_ID (--at N | --as-of RFC3339) | diff RUN_ID --from N --to M
    flowweaver cancel RUN_ID [--reason TEXT]
    flowweaver pause|resume RUN_ID | retry|skip|complete RUN_ID TASK_ID ...  (cli_actions.py)
    flowweaver signal RUN_ID NAME [--payload JSON]  (cli_signal.py)
    flowweaver fork RUN_ID [--at N] [--reset TASK ...] ... | lineage RUN_ID [--json]  (cli_fork.py)
    flowweaver verify [RUN_ID ... | --all] | export RUN_ID ... | --all [-o FILE] | import FILE
    flowweaver check-replay RUN_ID ... | --all
    flowweaver tokens create --name NAME --role ROLE | list | revoke NAME  (cli_tokens.py)
    flowweaver workflows register WORKFLOW.json | module:attribute  (cli_workflows.py)

Every ``serve`` flag has an environment variable (FLOWWEAVER_PORT, ...). Exit codes: 0 success,
1 a failure (a bad workflow, an unknown run, a run that failed), 2 a usage error. Errors are one
line on stderr. Bad input changes nothing stored: everything is checked before a store opens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import structlog

from flowweaver import cli_check_replay, cli_expose, cli_travel
from flowweaver.api.app import (
    DEFAULT_BODY_LIMIT,
    DEFAULT_SSE_BUFFER,
    ApiConfig,
    create_app,
    set_switch_interval,
)
from flowweaver.api.examples import EXAMPLE_HANDLERS
from flowweaver.api.schemas import run_out
from flowweaver.api.server import GuardedSite, make_runner
from flowweaver.api.sse import event_json
from flowweaver.cli_chain import CHAIN_COMMANDS, add_chain_commands
from flowweaver.cli_detail import print_failure_detail
from flowweaver.cli_schedules import add_schedule_commands, schedules_command
from flowweaver.cli_tokens import add_token_commands, tokens_command
from flowweaver.cli_workflows import SourceError, load_workflow
from flowweaver.domain.events import TERMINAL_EVENT_NAMES
from flowweaver.domain.ids import canonical_run_id
from flowweaver.domain.run import DEFAULT_MAX_TASK_IO_BYTES, RunState
from flowweaver.domain.spec import WorkflowSpec, handler_names
from flowweaver.engine import Engine, RunHandle
from flowweaver.engine.dispatch import DEFAULT_ACTOR_THREADS
from flowweaver.errors import FieldError, FlowweaverError, StoreLockedError, ValidationError
from flowweaver.handlers import HandlerRegistry, default_registry
from flowweaver.observability import configure_logging
from flowweaver.ports import (
    Checkpoints,
    DurabilityReport,
    EventStore,
    RelayProvider,
    StoreReader,
)
from flowweaver.store import DEFAULT_STORE_URL, open_store
from flowweaver.travel import version_at

log = structlog.get_logger("flowweaver.cli")
_encoder = msgspec.json.Encoder()

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


_N = TypeVar("_N", int, float)


class UsageError(Exception):
    """An argument or environment value that cannot be used (exit code 2)."""


class CommandError(Exception):
    """A command that failed (exit code 1); the message is the line printed."""


# --- environment-backed options -------------------------------------------------------------


def _size(text: str) -> int:
    """Parse a byte size: ``1048576``, ``512KiB``, ``1MiB``, ``2M``, ``64k``."""
    match = re.fullmatch(r"\s*(\d+)\s*(b|k|kb|kib|m|mb|mib)?\s*", text, re.IGNORECASE)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1048576, 512KiB or 1MiB)")
    factor = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024}.get(
        (match[2] or "").lower(), 1024 * 1024
    )
    value = int(match[1]) * factor
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1KiB, not {value} bytes")
    return value


def _number(text: str, convert: Callable[[str], _N], what: str) -> _N:
    """Return ``convert(text)``, or raise argparse's error saying ``text`` is not ``what``."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = _number(text, int, "a port")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return value


def _seconds(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, not {value}")
    return value


def _offset(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return int(text)


def _run_id(text: str) -> str:
    """Any spelling of a run's UUID, as the canonical one runs are stored under.

    Text that is no UUID stays as it is: the command then says no such run is in the store.
    """
    return canonical_run_id(text) or text


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (use 1 or 0)")


def _from_env(env: str, convert: Callable[[str], Any], default: Any, *, many: bool = False) -> Any:
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        if many:
            return [convert(item) for item in re.split(r"[,\s]+", raw) if item]
        return convert(raw)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"{env}: {e}") from None


class _Repeatable(argparse.Action):
    """A flag of several values that may be repeated: each use adds to the list.

    The first use replaces the default (the environment variable's list).
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is self.default or current is None else list(current)
        items.extend(values)
        setattr(namespace, self.dest, items)


@dataclass(frozen=True, slots=True)
class _Option:
    """A flag whose default the environment variable FLOWWEAVER_<FLAG> can set.

    ``convert`` parses the flag's text and the variable's alike; ``shown`` is the default as the
    help states it. A ``many`` flag takes several values, and its variable a comma- or
    space-separated list.
    """

    flag: str
    convert: Callable[[str], Any]
    default: Any
    help: str = ""
    shown: str = "%(default)s"
    choices: tuple[str, ...] | None = None
    many: bool = False
    metavar: str | None = None

    @property
    def env(self) -> str:
        """Return the option's environment variable."""
        return "FLOWWEAVER_" + self.flag.removeprefix("--").replace("-", "_").upper()

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add the flag to ``parser`` with its default from the environment."""
        default = _from_env(self.env, self.convert, self.default, many=self.many)
        if self.many:
            suffix = f"({self.env}, comma-separated)"
            extra: dict[str, Any] = {"nargs": "+", "action": _Repeatable}
        else:
            suffix = f"({self.env}; default {self.shown})"
            extra = {"choices": self.choices} if self.choices else {}
        if self.metavar:
            extra["metavar"] = self.metavar
        help_text = f"{self.help} {suffix}" if self.help else suffix
        parser.add_argument(self.flag, type=self.convert, default=default, help=help_text, **extra)


_STORE = (_Option("--store", str, DEFAULT_STORE_URL, "event store URL"),)
_HANDLERS = (
    _Option(
        "--handlers",
        str,
        [],
        "modules or .py files whose @handler functions to load",
        many=True,
        metavar="MODULE_OR_FILE",
    ),
    _Option("--workers", _positive_int, 8, "handler worker threads"),
    _Option(
        "--actor-threads",
        _positive_int,
        DEFAULT_ACTOR_THREADS,
        "threads the run actors take turns on (each run is an actor, none owns a thread)",
    ),
    _Option(
        "--example-handlers",
        _flag,
        True,
        "register the original README's fetch_data, process_data and save_result "
        "where no loaded handler has the name",
        shown="1",
    ),
)
_SERVE = (
    _Option("--host", str, "127.0.0.1"),
    _Option("--port", _port, 3000),
    *_STORE,
    *_HANDLERS,
    _Option(
        "--log-format",
        str,
        "auto",
        shown="auto: console on a terminal, JSON otherwise",
        choices=("json", "console", "auto"),
    ),
    _Option("--log-level", str.upper, "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    _Option("--body-limit", _size, DEFAULT_BODY_LIMIT, "largest request body", shown="1MiB"),
    _Option("--heartbeat", _seconds, 15.0, "SSE keep-alive comment interval, s"),
    _Option(
        "--sse-buffer",
        _size,
        DEFAULT_SSE_BUFFER,
        "bytes an SSE client may leave unread before it is dropped",
        shown="4MiB",
    ),
    _Option(
        "--sse-drain-timeout",
        _seconds,
        5.0,
        "seconds an ended SSE stream's client has to take its last bytes",
    ),
    _Option(
        "--header-timeout",
        _seconds,
        10.0,
        "seconds a request has to send its headers, from the connection's opening or "
        "the request's first byte",
    ),
    _Option("--body-timeout", _seconds, 30.0, "seconds a request has to send its whole body"),
    _Option(
        "--keepalive-timeout", _seconds, 15.0, "seconds an idle kept-alive connection stays open"
    ),
    _Option("--max-connections", _positive_int, 1024, "open connections at most; more get 503"),
    _Option(
        "--max-connections-per-client",
        _positive_int,
        128,
        "open connections at most from one client address; more get 503",
    ),
    _Option(
        "--health-connections",
        _positive_int,
        8,
        "connections kept beyond --max-connections for /healthz and /readyz",
    ),
    _Option(
        "--rate-limit",
        _offset,
        0,
        "requests per second per principal (per client address without auth), as a burst "
        "refilled at that rate; more get 429; 0: no limit",
    ),
    _Option(
        "--sse-per-client",
        _offset,
        0,
        "SSE streams at once per principal (per client address without auth); more get "
        "429; 0: no cap beyond --max-connections-per-client",
    ),
    _Option("--grace", _seconds, 30.0, "on SIGTERM, seconds running handlers get to finish"),
    _Option(
        "--scheduler",
        _flag,
        True,
        "fire the store's schedules from this server (in a cluster one node fires each "
        "at a time, whichever holds the scheduler lease); 0 to only serve their routes",
        shown="1",
    ),
    _Option(
        "--max-task-data",
        _size,
        DEFAULT_MAX_TASK_IO_BYTES,
        "largest resolved inputs, and largest published output, of one task as JSON; "
        "more fails the task",
        shown="1MiB",
    ),
    _Option(
        "--auth",
        cli_expose.auth_mode,
        None,
        "how requests are authenticated: token (Authorization: Bearer) or none",
        shown="none on a loopback host; required on any other",
        choices=cli_expose.AUTH_MODES,
    ),
    _Option(
        "--allowed-host",
        str,
        [],
        "a DNS name (or name:port) the Host header may carry, beside localhost and IP "
        "addresses; * for any (repeatable)",
        many=True,
        metavar="HOST",
    ),
    _Option(
        "--cors-origin",
        cli_expose.cors_origin,
        [],
        "a browser origin (https://app.example.com) allowed to call the API (repeatable)",
        many=True,
        metavar="ORIGIN",
    ),
    _Option(
        "--tls-cert",
        str,
        None,
        "PEM certificate chain: serve HTTPS",
        shown="none: HTTP",
        metavar="FILE",
    ),
    _Option("--tls-key", str, None, "PEM private key of --tls-cert", shown="none", metavar="FILE"),
)
"""Every ``serve`` flag; those named as a field of :class:`ApiConfig` set that field."""
_MAX_TASK_DATA = next(option for option in _SERVE if option.flag == "--max-task-data")
_API_FIELDS = frozenset(f.name for f in fields(ApiConfig))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"flowweaver: error: {message}\n")


def _add_options(parser: argparse.ArgumentParser, *options: _Option) -> argparse.ArgumentParser:
    for option in options:
        option.add_to(parser)
    return parser


def _add_driving_options(command: argparse.ArgumentParser) -> None:
    """Add the options of a command that drives a run embedded (``run``, ``fork``)."""
    command.add_argument("--key", default=None, help="idempotency key")
    command.add_argument(
        "--wait", action="store_true", help="show every event as a progress line while it runs"
    )
    command.add_argument(
        "--timeout", type=_seconds, default=3600.0, help="give up after this many seconds"
    )
    _add_options(command, *_STORE, *_HANDLERS)


def _run_command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add a command about one run of a store (its --store comes last, see build_parser)."""
    command: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    command.add_argument("run_id", metavar="RUN_ID", type=_run_id)
    return command


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser; defaults come from FLOWWEAVER_* environment variables."""
    parser = _Parser(
        prog="flowweaver",
        description="Event-sourced workflow engine.",
        epilog="Every serve flag has an environment variable: FLOWWEAVER_<FLAG>.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_options(commands.add_parser("serve", help="serve the HTTP API"), *_SERVE)

    run = commands.add_parser("run", help="run a workflow embedded, or on --server")
    run.add_argument(
        "workflow",
        metavar="WORKFLOW.json",
        help="the workflow document, or module:attribute naming a Workflow built in Python",
    )
    run.add_argument("--params", default="{}", help="run parameters, a JSON object")
    _add_driving_options(run)

    status = _run_command(commands, "status", "show a run's state")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(at=None, as_of=None)

    events = _run_command(commands, "events", "print a run's events as JSON lines")
    events.add_argument("--after", type=_offset, default=0, help="only events after this version")
    events.add_argument("--follow", action="store_true", help="keep printing until the run ends")

    cancel = _run_command(commands, "cancel", "cancel a run (SQLite: of a store no server drives)")
    cancel.add_argument("--reason", default="", help="why, recorded with the request")
    cancel.add_argument(
        "--timeout", type=_seconds, default=30.0, help="wait this long for RunCancelled"
    )

    replay = _run_command(commands, "replay", "show a run's state as of event N or an instant")
    when = replay.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", type=_positive_int, help="run version N")
    when.add_argument(
        "--as-of",
        type=cli_travel.instant_arg,
        metavar="RFC3339",
        help="an instant such as 2026-01-31T09:30:00Z: the state after the last event "
        "stamped at or before it",
    )
    replay.add_argument("--json", action="store_true", help="print the API's JSON")
    for command in (status, events, cancel, replay):
        _add_options(command, *_STORE)
    from flowweaver.cli_fork import add_fork_commands  # noqa: PLC0415 - it builds on this module

    add_fork_commands(commands, _COMMANDS)
    from flowweaver.cli_actions import add_action_commands  # noqa: PLC0415 - likewise

    add_action_commands(commands, _COMMANDS)
    from flowweaver.cli_signal import add_signal_command  # noqa: PLC0415 - likewise

    add_signal_command(commands, _COMMANDS)
    for command in add_chain_commands(commands, _run_id):
        _add_options(command, *_STORE)

    check_replay = commands.add_parser(
        "check-replay", help="re-derive every decision of stored runs with this code"
    )
    cli_check_replay.add_arguments(check_replay)
    _add_options(check_replay, _MAX_TASK_DATA, *_STORE)

    diff = _run_command(commands, "diff", "show what changed in a run between two versions")
    diff.add_argument("--from", dest="start", type=_offset, required=True, help="version N")
    diff.add_argument("--to", dest="end", type=_offset, required=True, help="version M >= N")
    diff.add_argument("--json", action="store_true", help="print the API's JSON")
    _add_options(diff, *_STORE)
    for command in add_token_commands(commands, _Parser):
        _add_options(command, *_STORE)
    for command in add_schedule_commands(commands, _Parser):
        _add_options(command, *_STORE)
    from flowweaver import cli_server  # noqa: PLC0415 - it builds on this module

    cli_server.add_server_commands(commands, _COMMANDS)  # --server URL on the commands above
    return parser


# --- shared -----------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """Return ``url`` with its password masked, in the user part or a ``password=`` parameter.

    libpq URLs take ``?password=`` (and ``sslpassword=``) as well as ``user:password@``.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = re.sub(r"(?i)((?:^|&)[^&=]*password=)[^&]*", r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _open_existing(url: str) -> EventStore:
    """Open a store that must already exist (the read commands never create one)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].partition("?")[0]
        if path and not Path(path).is_file():
            raise CommandError(f"no store at {path} (set --store or FLOWWEAVER_STORE)")
    return open_store(url)


def _registry(modules: Sequence[str], *, examples: bool) -> HandlerRegistry:
    registry = default_registry.copy()
    registry.load_entry_points()
    for module in modules:
        registry.load(module)
    if examples:
        for name, func in EXAMPLE_HANDLERS.items():
            if not registry.missing([name]):
                continue
            registry.register(name, func)
    return registry


def _print_state(state: RunState, out: TextIO, *, total: int | None = None) -> None:
    at = f" (as of event {state.version} of {total})" if total is not None else ""
    print(
        f"run {state.id}  {state.status}{at}\n"
        f"workflow {state.workflow_id} v{state.workflow_version}  version {state.version}  "
        f"created {_iso(state.created_at)}  updated {_iso(state.updated_at)}",
        file=out,
    )
    width = max([4, *(len(t) for t in state.tasks)])
    print(f"{'TASK':<{width}}  {'STATUS':<13}  ATTEMPTS  DETAIL", file=out)
    for task in state.tasks.values():
        detail = ""
        if task.last_error is not None and task.status != "completed":
            detail = f"{task.last_error.type}: {task.last_error.message}"
        elif task.status == "completed":
            detail = _encoder.encode(task.output).decode()[:80]
        print(f"{task.id:<{width}}  {task.status:<13}  {task.attempts:<8}  {detail}", file=out)
    print_failure_detail(state, out)


def _iso(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else "-"


# --- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    set_switch_interval()
    json_logs = {"json": True, "console": False}.get(args.log_format)
    configure_logging(json=json_logs, level=args.log_level)
    tls = cli_expose.check_exposure(args)
    registry = _registry(args.handlers, examples=args.example_handlers)
    config = ApiConfig(**{k: v for k, v in vars(args).items() if k in _API_FIELDS})
    store = open_store(args.store)
    # Stores whose server settings can lose acknowledged events say so (Redis, see docs/redis.md).
    if isinstance(store, DurabilityReport):
        for warning in store.durability_warnings():
            log.warning("store_durability", detail=warning)
    engine = Engine(
        store,
        handlers=registry,
        workers=args.workers,
        actor_threads=args.actor_threads,
        owns_store=True,
        max_task_io_bytes=args.max_task_data,
    )
    try:
        return asyncio.run(_serve_async(engine, config, args, tls))
    finally:
        engine.close(args.grace)


async def _serve_async(
    engine: Engine, config: ApiConfig, args: argparse.Namespace, tls: ssl.SSLContext | None = None
) -> int:
    app = create_app(engine, config=config)
    runner = make_runner(
        app, keepalive_timeout=config.keepalive_timeout, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    site = GuardedSite(
        runner,
        args.host,
        args.port,
        header_timeout=config.header_timeout,
        max_connections=config.max_connections,
        max_connections_per_client=config.max_connections_per_client,
        health_connections=config.health_connections,
        ssl_context=tls,
    )
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from e
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "server_started",
        url=f"{'https' if tls else 'http'}://{args.host}:{site.port}",
        port=site.port,
        store=_redact(args.store),
        workers=args.workers,
        actor_threads=args.actor_threads,
        handlers=engine.handlers.names(),
        auth=config.auth,
    )
    checkpoints = asyncio.create_task(_checkpoint_when_quiet(engine.store))
    # What start-up made (modules, the app, the engine) lives as long as the process: keep it
    # out of the collector's full passes. Those passes come every few requests that fold a
    # large run (a fork of a 1,000-task run makes about 8,000 objects) and, scanning every
    # object, set its p95 latency: 49 ms before, 15 ms after (benchmarks/fork_bench.py).
    gc.freeze()
    await stop.wait()
    checkpoints.cancel()
    log.info("server_draining", grace=args.grace)
    # Stop accepting, end SSE streams, let in-flight requests answer; then the engine.
    await runner.cleanup()
    await asyncio.to_thread(engine.close, args.grace)
    log.info("server_stopped")
    return EXIT_OK


CHECKPOINT_QUIET_S = 1.0


async def _checkpoint_when_quiet(store: EventStore, quiet: float = CHECKPOINT_QUIET_S) -> None:
    """Checkpoint a SQLite store once its log has been still for ``quiet`` seconds.

    SQLite copies its WAL into the database file only every 1000 pages, so on a quiet server
    the file held none of the events (a copy of it alone, say a backup, missed them all).
    """
    if not isinstance(store, Checkpoints):
        return
    seen = done = -1
    while True:
        await asyncio.sleep(quiet)
        try:
            top = await asyncio.to_thread(store.max_position)
            if top == seen and top != done:
                await asyncio.to_thread(store.checkpoint)
                done = top
            seen = top
        except FlowweaverError as e:
            log.warning("checkpoint_failed", error=str(e))


# --- run --------------------------------------------------------------------------------------


def _run_request(args: argparse.Namespace) -> tuple[WorkflowSpec, dict[str, Any], HandlerRegistry]:
    """Check everything ``run`` was given before any store opens."""
    try:
        params = msgspec.json.decode(args.params)
    except msgspec.DecodeError as e:
        raise UsageError(f"--params is not JSON: {e}") from e
    if not isinstance(params, dict):
        raise UsageError("--params must be a JSON object")
    try:  # a JSON file, or module:attribute (a Workflow built in Python; its handlers load)
        spec = load_workflow(args.workflow)
    except SourceError as e:
        raise CommandError(str(e)) from e
    registry = _registry(args.handlers, examples=args.example_handlers)
    missing = registry.missing(handler_names(spec))
    if missing:
        raise ValidationError(
            [FieldError("$.tasks", "handler(s) not registered: " + ", ".join(missing))]
        )
    return spec, params, registry


def _run(args: argparse.Namespace) -> int:
    configure_logging(json=False, level="WARNING")
    spec, params, registry = _run_request(args)
    engine = Engine(
        open_store(args.store),
        handlers=registry,
        workers=args.workers,
        actor_threads=args.actor_threads,
        owns_store=True,
        recover=False,
    )

    def start() -> tuple[RunHandle, str]:
        version, _ = engine.register_workflow(spec)
        handle = engine.start_run(spec.id, parameters=params, idempotency_key=args.key)
        return handle, f"{spec.id} v{version}"

    return _drive(engine, start, args)


def _drive(
    engine: Engine, start: Callable[[], tuple[RunHandle, str]], args: argparse.Namespace
) -> int:
    """Start a run with ``start`` on an embedded engine and drive it to its end, then close.

    Prints the run's id and ``start``'s label, with ``--wait`` a line per event, and the
    outcome. Exit 0 when the run completed, 1 when it failed or was cancelled or when it did
    not end within ``--timeout`` (it stays in the store), 130 on Ctrl-C.
    """
    as_json = getattr(args, "json", False)
    out = sys.stderr if as_json else sys.stdout  # stdout carries the events' JSON lines
    run_id = None
    grace = 10.0
    try:
        handle, label = start()
        run_id = handle.run_id
        if not handle.created and not handle.state.is_terminal:
            engine.recover()  # a repeated key whose run was interrupted: resume it here
        print(f"run {run_id} ({label})", file=out, flush=True)
        started = time.monotonic()
        deadline = started + args.timeout
        if args.wait and (as_json or out.isatty()):  # the live table, or JSON lines
            from flowweaver import cli_live, cli_server  # noqa: PLC0415 - they import this module

            events = cli_live.store_events(engine.store, run_id, deadline=deadline)
            cli_server.follow(events, run_id, as_json=as_json)
        elif args.wait:
            _progress(engine.store, run_id, out, deadline=deadline)
        try:
            state = engine.wait_run_finished(run_id, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            grace = 0.0  # the run stays in the store: no reason to wait for its handlers
            raise CommandError(
                f"run {run_id} did not finish within {args.timeout:g} s; it "
                + _left_running(run_id, args)
            ) from None
    except KeyboardInterrupt:
        grace = 0.0
        if run_id is None:
            raise
        print(
            f"flowweaver: interrupted; run {run_id} {_left_running(run_id, args)}", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    finally:
        if grace == 0.0:
            # A handler still running is left to the process's exit; the next engine records
            # its attempt as interrupted. Its "still busy" warning would only repeat that.
            configure_logging(json=False, level="ERROR")
        engine.close(grace)
    elapsed = time.monotonic() - started
    print(f"run {run_id} {state.status} in {elapsed * 1000:.0f} ms", file=out)
    if state.status != "completed":
        failed = [t.id for t in state.tasks.values() if t.status == "failed"]
        if failed:
            print(f"failed tasks: {', '.join(failed)}", file=out)
        return EXIT_FAILURE
    return EXIT_OK


def _left_running(run_id: str, args: argparse.Namespace) -> str:
    """Say what becomes of a run this process stops driving, and how to end it."""
    store = "" if args.store == DEFAULT_STORE_URL else f" --store {_redact(args.store)}"
    again = f" or with `flowweaver {args.command}` and --key {args.key}" if args.key else ""
    return (
        f"stays in the store unfinished and resumes when an engine next opens "
        f"it (`flowweaver serve`{again}); to stop it: flowweaver cancel {run_id}{store}"
    )


def _progress(store: StoreReader, run_id: str, out: TextIO, *, deadline: float) -> None:
    """Print one line per event of the run as it is stored, until the terminal event."""
    last = 0
    while time.monotonic() < deadline:
        top = store.max_position()
        for rec in store.read_run(run_id, after=last):
            last = rec.version
            print(_progress_line(rec.event, rec.name), file=out, flush=True)
            if rec.name in TERMINAL_EVENT_NAMES:
                return
        store.wait_for_log(top, min(1.0, max(0.0, deadline - time.monotonic())))


def _progress_line(event: Any, name: str) -> str:
    task = getattr(event, "task_id", None)
    if task is None:
        return f"  {name}"
    index = getattr(event, "index", None)
    if index is not None:  # a map element: shown as its key, fan[3], like a task
        task, name = f"{task}[{index}]", "Task" + name.removeprefix("MapElement")
    attempt = getattr(event, "attempt", None)
    detail = f"attempt {attempt}" if attempt is not None else ""
    if name == "TaskCompleted":
        detail += f"  {event.duration_ms:.1f} ms"
    elif name == "TaskFailed":
        retry = "retry at " + _iso(event.retry_at) if event.retry_at else "no retry left"
        detail += f"  {event.error.type}: {event.error.message}  ({retry})"
    elif name == "TaskSkipped":
        detail = event.reason
    return f"  {task:<20} {name[4:].lower():<10} {detail}"


# --- readers ----------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    """Print a run's state (``status``), or its state as of event ``--at`` (``replay``)."""
    store = _open_existing(args.store)
    try:
        state = store.run_state(args.run_id)
        if state is None:
            raise CommandError(f"no run {args.run_id} in {_redact(args.store)}")
        total = None
        if args.as_of is not None:
            args.at = version_at(store, args.run_id, args.as_of)
            if args.at == 0:
                began = state.created_at.isoformat() if state.created_at else "later"
                raise CommandError(f"run {args.run_id} began at {began}, after --as-of")
        if args.at is not None:
            if args.at > state.version:
                raise CommandError(
                    f"run {args.run_id} has {state.version} events; --at is {args.at}"
                )
            total = state.version
            state = store.run_state(args.run_id, at=args.at)
            assert state is not None
        if args.json:
            sys.stdout.buffer.write(_encoder.encode(run_out(state)) + b"\n")
        else:
            _print_state(state, sys.stdout, total=total)
    finally:
        store.close()
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    store = _open_existing(args.store)
    out = sys.stdout.buffer
    try:
        # One read checks the run and the offset (like the API: version N must exist).
        first = store.read_run(args.run_id, after=max(args.after - 1, 0), limit=1)
        if not first:
            if args.after <= 1 or not store.read_run(args.run_id, upto=1):
                raise CommandError(f"no run {args.run_id} in {_redact(args.store)}")
            latest = store.run_state(args.run_id)
            count = latest.version if latest is not None else 0
            raise CommandError(f"run {args.run_id} has {count} events; --after is {args.after}")
        if args.after > 0 and first[0].name in TERMINAL_EVENT_NAMES:
            return EXIT_OK  # it ended at that very event: nothing follows, ever
        from flowweaver import cli_live  # noqa: PLC0415 - it imports this module

        if args.follow and cli_live.live_wanted(args.json):  # a terminal: the live table
            cli_live.show_live(args.run_id, cli_live.store_events(store, args.run_id, args.after))
            return EXIT_OK
        last = args.after
        while True:
            top = store.max_position()
            page = store.read_run(args.run_id, after=last, limit=1000)
            for rec in page:
                out.write(event_json(rec) + b"\n")
                last = rec.version
                if args.follow and rec.name in TERMINAL_EVENT_NAMES:
                    out.flush()
                    return EXIT_OK
            out.flush()
            if len(page) == 1000:
                continue
            if not args.follow:
                return EXIT_OK
            store.wait_for_log(top, 1.0)
    finally:
        store.close()


def _cancel(args: argparse.Namespace) -> int:
    from flowweaver import cli_actions  # noqa: PLC0415 - it builds on this module

    configure_logging(json=False, level="WARNING")
    by = cli_actions.principal()
    store = _open_existing(args.store)
    if isinstance(store, RelayProvider):  # a cluster's: the run's owner cancels it
        return cli_actions.cancel_in_cluster(store, args)
    try:
        state = store.run_state(args.run_id)
        if state is None:
            raise CommandError(f"no run {args.run_id} in {_redact(args.store)}")
        if state.is_terminal:
            raise CommandError(f"run {args.run_id} already ended ({state.status})")
        # Driving the run takes the store: refused while a server (or a `run`) drives it.
        engine = Engine(store, workers=1, recover=False)
    except StoreLockedError as e:
        store.close()
        holder = f"pid {e.pid}" if e.pid is not None else "another process"
        raise CommandError(
            f"run {args.run_id} is driven by another engine on this store ({holder}); "
            f"cancel it through that server: POST /runs/{args.run_id}/cancel"
        ) from None
    except BaseException:
        store.close()
        raise
    try:
        # Recovery resumes the run here with the request already in its mailbox, so no task
        # of it starts in this process.
        engine.cancel_run(args.run_id, args.reason, by=by)
        try:
            state = engine.wait_run_finished(args.run_id, timeout=args.timeout)
        except TimeoutError as e:
            raise CommandError(
                f"run {args.run_id} did not end within {args.timeout:g} s of the request; "
                "it is cancelled when its running tasks end"
            ) from e
    finally:
        engine.close(1.0)
        store.close()
    print(f"run {args.run_id} {state.status}")
    return EXIT_OK if state.status == "cancelled" else EXIT_FAILURE


def _check_replay(args: argparse.Namespace) -> int:
    """Re-derive every decision of the runs asked for (see :mod:`flowweaver.cli_check_replay`)."""
    if bool(args.run_ids) == args.every:
        raise UsageError("give RUN_ID ... or --all" + (", not both" if args.every else ""))
    run_ids = [_run_id(text) for text in args.run_ids]
    store = _open_existing(args.store)
    try:
        for run_id in run_ids:
            if not store.read_run(run_id, upto=1):
                raise CommandError(f"no run {run_id} in {_redact(args.store)}")
        chosen = cli_check_replay.every_run_id(store) if args.every else run_ids
        return cli_check_replay.check_replay(
            store, chosen, sys.stdout, max_io_bytes=args.max_task_data
        )
    finally:
        store.close()


# --- entry point ------------------------------------------------------------------------------

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "run": _run,
    "status": _show,
    "events": _events,
    "replay": _show,
    "cancel": _cancel,
    **CHAIN_COMMANDS,
    "check-replay": _check_replay,
    "diff": lambda args: cli_travel.diff_command(args, _open_existing(args.store)),
    "tokens": tokens_command,
    "schedules": schedules_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowweaver`` command; return the exit code."""
    try:
        args = build_parser().parse_args(argv)
        from flowweaver.cli_server import server_handler  # noqa: PLC0415 - see build_parser

        return (server_handler(args) or _COMMANDS[args.command])(args)
    except UsageError as e:
        print(f"flowweaver: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as e:
        first = e.errors[0] if e.errors else FieldError("$", str(e))
        more = f" (and {len(e.errors) - 1} more)" if len(e.errors) > 1 else ""
        print(f"flowweaver: error: {first.path}: {first.message}{more}", file=sys.stderr)
        return EXIT_FAILURE
    except (CommandError, FlowweaverError) as e:
        # One line, even when a driver's message has several (psycopg adds a hint line).
        print("flowweaver: error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("flowweaver: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
