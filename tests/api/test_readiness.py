"""/readyz says whether the store takes writes, not only whether it answers reads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from flowweaver.errors import StoreError
from flowweaver.store import SQLiteEventStore
from flowweaver.testing.runs import task, workflow
from tests.api.conftest import Servers, example_registry, run

BIG = "x" * 50_000  # parameters that need new pages, so a full database refuses the run


class PageLimit:
    """A full disk as SQLite sees it: every connection of the store gets ``max_page_count``
    (the pool's, and the one appends go through)."""

    def __init__(self, store: SQLiteEventStore) -> None:
        self.store = store
        self.pool = store._datastore.pool
        self.pages = 1 << 30
        create = self.pool._create_connection

        def limited() -> Any:  # connections the pool opens later get the limit too
            connection = create()
            connection._sqlite_conn.execute(f"PRAGMA max_page_count = {self.pages}")
            return connection

        self.pool._create_connection = limited  # type: ignore[method-assign]

    def set(self, pages: int) -> None:
        self.pages = pages
        connections = [*self.pool._pool, *self.pool._in_use.values()]
        assert connections
        for connection in connections:
            connection._sqlite_conn.execute(f"PRAGMA max_page_count = {pages}")
        with self.store._writer_lock:
            self.store._writing_connection().execute(f"PRAGMA max_page_count = {pages}")


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as response:
        return response.status, await response.json(content_type=None)


def test_readyz_is_503_while_writes_fail_and_200_once_they_succeed(
    servers: Servers, tmp_path: Path
) -> None:
    """With the database full, POST /runs is 503 and so is /readyz; lifted, both recover."""
    store = SQLiteEventStore(str(tmp_path / "fw.db"))
    limit = PageLimit(store)
    server = servers(store=store, handlers=example_registry())
    url = server.url

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            assert (await _status(s, "POST", f"{url}/workflows", json=EXAMPLE_WORKFLOW))[0] == 201
            assert await _status(s, "GET", f"{url}/readyz") == (200, {"status": "ready"})
            run_request = {"workflowId": "example-workflow", "parameters": {"big": BIG}}

            limit.set(1)  # as small as it can be: the database is full now
            status, body = await _status(s, "POST", f"{url}/runs", json=run_request)
            assert status == 503, body
            assert "database or disk is full" in body["detail"]  # the fault fired
            for _ in range(2):  # reads still work; the probe keeps finding the store full
                status, body = await _status(s, "GET", f"{url}/readyz")
                assert status == 503, body
                assert "refuses writes" in body["detail"]
                assert "database or disk is full" in body["detail"]
            assert (await _status(s, "GET", f"{url}/healthz"))[0] == 200

            limit.set(1 << 30)
            assert await _status(s, "GET", f"{url}/readyz") == (200, {"status": "ready"})
            assert (await _status(s, "POST", f"{url}/runs", json=run_request))[0] == 201

    run(main())


def test_a_write_that_succeeds_clears_the_failure(tmp_path: Path) -> None:
    """After a failed write, ping() probes; the next write that succeeds makes it pass again."""
    store = SQLiteEventStore(str(tmp_path / "fw.db"))
    limit = PageLimit(store)
    now = datetime.now(UTC)
    big = workflow(*(task(f"t{i}", inputs={"pad": "p" * 4000}) for i in range(20)))
    try:
        limit.set(1)
        with pytest.raises(StoreError, match="database or disk is full"):
            store.register_workflow(big, now)
        with pytest.raises(StoreError, match="refuses writes: database or disk is full"):
            store.ping()
        limit.set(1 << 30)
        assert store.register_workflow(big, now) == (1, True)
        store.ping()
    finally:
        store.close()
