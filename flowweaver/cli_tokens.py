"""The token commands: ``flowweaver tokens create|list|revoke``.

    flowweaver tokens create --name NAME --role ROLE [--store URL]
    flowweaver tokens list [--json] [--store URL]
    flowweaver tokens revoke NAME [--store URL]

They drive no runs, so they work beside a live server on the same store (a SQLite file
included: its lock stops a second engine, not these); every server sees a change within a
second. ``create`` prints the token on stdout, once: the store keeps only its hash.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec

from flowweaver.domain.ids import is_ident
from flowweaver.domain.tokens import ROLES, TokenEntry
from flowweaver.errors import FieldError, ValidationError
from flowweaver.ports import EventStore, TokenLog
from flowweaver.store import open_store
from flowweaver.tokens import TokenRegistry, token_out

EXIT_OK = 0


def add_token_commands(
    commands: Any, parser_class: type[argparse.ArgumentParser]
) -> list[argparse.ArgumentParser]:
    """Add ``tokens`` and its subcommands; return the subcommands (each needs --store)."""
    tokens = commands.add_parser("tokens", help="make, list and revoke API tokens")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, parser_class=parser_class)
    create = actions.add_parser("create", help="make a token and print it, once")
    create.add_argument("--name", required=True, help="the token's name, recorded as `by`")
    create.add_argument("--role", required=True, choices=ROLES, help="what the token may do")
    listing = actions.add_parser("list", help="list tokens: name, role, created, revoked")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    revoke = actions.add_parser("revoke", help="revoke a token; servers refuse it within 1 s")
    revoke.add_argument("name", metavar="NAME", help="the token's name")
    return [create, listing, revoke]


def _cli() -> ModuleType:
    """Return the CLI module, for its errors and store opener (it imports this module)."""
    from flowweaver import cli  # noqa: PLC0415

    return cli


def _actor() -> str:
    """Return who runs the command, as ``createdBy``/``by`` records it: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli"


def tokens_command(args: argparse.Namespace) -> int:
    """Run ``tokens create``, ``tokens list`` or ``tokens revoke``."""
    cli = _cli()
    if args.tokens_command == "create" and not is_ident(args.name):
        raise ValidationError(
            [FieldError("--name", "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$ (like an id)")]
        )
    opener: Callable[[str], EventStore] = (
        open_store if args.tokens_command == "create" else cli._open_existing
    )
    store = opener(args.store)
    try:
        if not isinstance(store, TokenLog):
            raise cli.CommandError(f"{type(store).__name__} keeps no tokens")
        registry = TokenRegistry(store)
        if args.tokens_command == "create":
            secret, entry = registry.create(args.name, args.role, by=_actor())
            print(secret, flush=True)
            print(
                f"token {entry.name!r} ({entry.role}) made; it is shown only now",
                file=sys.stderr,
            )
        elif args.tokens_command == "revoke":
            entry = registry.revoke(args.name, by=_actor())
            print(f"token {entry.name!r} revoked")
        else:
            registry.refresh()
            _print_list(registry.entries(), as_json=args.json)
    finally:
        store.close()
    return EXIT_OK


def _print_list(entries: list[TokenEntry], *, as_json: bool) -> None:
    out = sys.stdout
    if as_json:
        encoder = msgspec.json.Encoder()
        for entry in entries:
            out.write(encoder.encode(token_out(entry)).decode() + "\n")
        return
    width = max([4, *(len(e.name) for e in entries)])
    print(f"{'NAME':<{width}}  {'ROLE':<9}  {'CREATED':<24}  REVOKED", file=out)
    for entry in entries:
        created = entry.created_at.isoformat(timespec="seconds")
        revoked = entry.revoked_at.isoformat(timespec="seconds") if entry.revoked_at else "-"
        print(f"{entry.name:<{width}}  {entry.role:<9}  {created:<24}  {revoked}", file=out)
