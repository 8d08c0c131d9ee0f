"""``serve``'s start-up checks of who can reach it: the host and ``--auth``, Host names, TLS.

They run before the store opens, so a server that would be exposed by mistake never starts:

- ``--auth`` unset means ``none`` on a loopback host, and a refusal to start on any other (one
  line, exit 2): a server on a public address without authentication must be asked for with
  ``--auth none``, and then logs ``auth_disabled`` as a warning at start;
- every ``--allowed-host`` must be a host name or address (``*`` for any);
- ``--tls-cert`` and ``--tls-key`` come together, and must be a readable certificate chain and
  its private key (PEM).
"""

from __future__ import annotations

import argparse
import ssl
from types import ModuleType

import structlog

from flowweaver.api.exposure import allowed_host, is_loopback, origin

log = structlog.get_logger("flowweaver.cli")

AUTH_MODES = ("token", "none")


def _cli() -> ModuleType:
    from flowweaver import cli  # noqa: PLC0415 - cli imports this module

    return cli


def auth_mode(text: str) -> str:
    """Parse an ``--auth`` value (``FLOWWEAVER_AUTH`` too, which argparse's choices skip)."""
    if text not in AUTH_MODES:
        raise argparse.ArgumentTypeError(f"not an auth mode: {text[:40]!r} (token or none)")
    return text


def cors_origin(text: str) -> str:
    """Parse a ``--cors-origin`` value into the spelling browsers send in ``Origin``."""
    try:
        return origin(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_exposure(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Check the serve flags that decide who reaches the server; return its TLS context.

    Sets ``args.auth`` to the mode in force (``none`` when unset on a loopback host).

    Raises:
        UsageError: ``--auth`` unset on a host that is not loopback, a bad ``--allowed-host``,
            only one of ``--tls-cert`` and ``--tls-key``.
        CommandError: the certificate or the key cannot be read or do not match.
    """
    cli = _cli()
    for host in args.allowed_host:
        try:
            allowed_host(host)
        except ValueError as e:
            raise cli.UsageError(f"--allowed-host: {e}") from None
    context = tls_context(args.tls_cert, args.tls_key)
    public = not is_loopback(args.host)
    if args.auth is None:
        if public:
            raise cli.UsageError(
                f"--host {args.host or '(every interface)'} is not a loopback address, so "
                "serve needs --auth token (see docs/operations.md#security), or --auth none "
                "to let every client that reaches the port act on every run"
            )
        args.auth = "none"
    elif args.auth == "none" and public:
        log.warning(
            "auth_disabled",
            host=args.host,
            detail="--auth none on an address that is not loopback: every client that "
            "reaches the port may read, start, change and cancel every run",
        )
    return context


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """Return a server TLS context for the PEM certificate chain and key, or None for neither.

    Raises:
        UsageError: only one of the two was given.
        CommandError: a file cannot be read, or it is no certificate or key, or they differ.
    """
    cli = _cli()
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise cli.UsageError(f"{given} needs {missing} too (give both, or neither for HTTP)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise cli.CommandError(f"cannot read {flag} {path}: {e.strerror or e}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # An encrypted key gets an empty password, and fails, rather than a prompt on a terminal.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, OSError) as e:
        reason = getattr(e, "reason", None) or e.strerror or str(e)
        raise cli.CommandError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate chain and "
            f"its unencrypted private key ({reason})"
        ) from None
    return context
