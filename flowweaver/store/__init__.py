"""The embedded stores and :func:`open_store`, which finds any store by its URL."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

from flowweaver.errors import StoreConfigError
from flowweaver.ports import EventStore
from flowweaver.store.memory import MemoryEventStore
from flowweaver.store.sqlite import SQLiteEventStore, Synchronous

DEFAULT_STORE_URL = "sqlite:///flowweaver.db"
ENTRY_POINT_GROUP = "flowweaver.stores"
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_store(url: str = DEFAULT_STORE_URL) -> EventStore:
    """Open the store a URL names: ``memory://``, ``sqlite:///path``, or an adapter's scheme.

    ``sqlite:///flowweaver.db`` is relative to the working directory, ``sqlite:////abs/x.db``
    absolute. Adapters register a callable ``open_store(url)`` under the entry-point group
    ``flowweaver.stores``, named by scheme.

    Raises:
        StoreConfigError: the URL names no known store or has bad options.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryEventStore()
    if scheme == "sqlite":
        return _open_sqlite(url)
    if scheme == "postgres":
        scheme = "postgresql"
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
    if not found:
        known = sorted(
            {"memory", "sqlite", *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))}
        )
        raise StoreConfigError(
            f"unknown store URL scheme {scheme!r} in {url!r}; known: {', '.join(known)}"
        )
    try:
        opener = found[0].load()
    except ImportError as e:
        extra = "postgres" if scheme == "postgresql" else scheme
        raise StoreConfigError(
            f"the {scheme} store needs an extra: pip install 'flowweaver[{extra}]' ({e})"
        ) from e
    return cast(EventStore, opener(url))


def _open_sqlite(url: str) -> SQLiteEventStore:
    if not url.startswith("sqlite:///"):
        raise StoreConfigError(f"a SQLite URL looks like sqlite:///path/to/file.db, not {url!r}")
    rest = url[len("sqlite:///") :]
    path, _, query = rest.partition("?")
    if not path:
        raise StoreConfigError(f"no database file in {url!r}")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    synchronous = options.pop("synchronous", "NORMAL").upper()
    if synchronous not in _SYNCHRONOUS:
        raise StoreConfigError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
    if options:
        raise StoreConfigError(f"unknown SQLite option(s): {', '.join(sorted(options))}")
    parent = Path(path).parent
    if not parent.exists():
        raise StoreConfigError(f"directory {str(parent)!r} for {url!r} does not exist")
    return SQLiteEventStore(path, synchronous=cast(Synchronous, synchronous))


__all__ = ["DEFAULT_STORE_URL", "MemoryEventStore", "SQLiteEventStore", "open_store"]
