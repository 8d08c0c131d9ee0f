"""PostgreSQL for Flowweaver: the event store, tailed across processes by LISTEN/NOTIFY.

Found by the store URL scheme ``postgresql://`` through the ``flowweaver.stores`` entry
point; nothing in the core imports it.
"""

from flowweaver_postgres.leases import PostgresLeases
from flowweaver_postgres.store import (
    PostgresEventStore,
    PostgresLogListener,
    PostgresSettings,
    open_store,
    parse_url,
)

__all__ = [
    "PostgresEventStore",
    "PostgresLeases",
    "PostgresLogListener",
    "PostgresSettings",
    "open_store",
    "parse_url",
]
