"""The one place where the event loop meets the engine's threads.

Every engine or store call blocks (SQL, a pykka reply), so each one runs on a thread of this
bridge's executor through ``loop.run_in_executor``; the loop only awaits asyncio futures. No
pykka future is ever awaited on the loop: pykka's ``__await__`` calls the blocking ``get()``.
The tailer's long waits get their own thread so they never hold a request's thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flowweaver.domain.run import RunState
from flowweaver.domain.spec import WorkflowSpec
from flowweaver.domain.workflow import WorkflowRegistered
from flowweaver.engine import Engine, RunHandle
from flowweaver.errors import StoreError
from flowweaver.ports import RecordedEvent, RunPage, StoreReader

T = TypeVar("T")

Batch = tuple[int | None, list[RecordedEvent]]


class EngineBridge:
    """Async facade over an :class:`Engine` and its store, for the aiohttp app."""

    def __init__(self, engine: Engine, *, threads: int = 16) -> None:
        self.engine = engine
        self.store: StoreReader = engine.store
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="flowweaver-api")
        self._tail_executor = ThreadPoolExecutor(1, thread_name_prefix="flowweaver-tailer")
        # Readiness probes get their own thread, one probe at a time: a store that hangs
        # must not take the request threads with it, one probe after another.
        self._ping_executor = ThreadPoolExecutor(1, thread_name_prefix="flowweaver-ping")
        self._ping: asyncio.Future[None] | None = None

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    # --- engine (writes go through the engine, which validates before it stores) -----------

    async def register_workflow(self, spec: WorkflowSpec) -> tuple[int, bool]:
        """Validate and record a workflow: (version, created)."""
        return await self._call(self.engine.register_workflow, spec)

    async def start_run(
        self,
        workflow_id: str,
        *,
        parameters: dict[str, Any] | None,
        idempotency_key: str | None,
        version: int | None,
    ) -> RunHandle:
        """Start (or find, for a repeated key) a run."""
        return await self._call(
            self.engine.start_run,
            workflow_id,
            parameters=parameters,
            idempotency_key=idempotency_key,
            version=version,
        )

    async def cancel_run(self, run_id: str, reason: str) -> RunState:
        """Record a cancel request and return the run's state right after it."""

        def cancel() -> RunState:
            self.engine.cancel_run(run_id, reason)
            return self.engine.get_run(run_id)

        return await self._call(cancel)

    # --- readers (the store, never the actors) ---------------------------------------------

    async def get_run(self, run_id: str, at: int | None = None) -> RunState:
        """Return the run's state (as of version ``at``)."""
        return await self._call(self.engine.get_run, run_id, at=at)

    async def list_runs(
        self, *, workflow_id: str | None, status: str | None, limit: int, cursor: str | None
    ) -> RunPage:
        """Return a page of runs from the read model."""
        return await self._call(
            self.store.list_runs,
            workflow_id=workflow_id,
            status=status,
            limit=limit,
            cursor=cursor,
        )

    async def get_workflow(self, workflow_id: str, version: int | None) -> WorkflowRegistered:
        """Return one version of a workflow (latest when None)."""
        return await self._call(self.store.get_workflow, workflow_id, version)

    async def list_workflows(self) -> list[WorkflowRegistered]:
        """Return the latest version of every workflow."""
        return await self._call(self.store.list_workflows)

    async def read_run(
        self, run_id: str, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return stored events of one run with ``after < version <= upto``."""
        return await self._call(self.store.read_run, run_id, after=after, upto=upto, limit=limit)

    async def read_log(self, *, after: int, limit: int) -> list[RecordedEvent]:
        """Return stored run events of every run after global position ``after``."""
        return await self._call(self.store.read_log, after=after, limit=limit)

    async def max_position(self) -> int:
        """Return the highest global position in the log."""
        return await self._call(self.store.max_position)

    async def ping(self) -> None:
        """Return when the store answers.

        Raises:
            StoreError: it does not, or an earlier ping is still waiting for it.
        """
        if self._ping is not None and not self._ping.done():
            raise StoreError("the previous ping of the store has not returned")
        loop = asyncio.get_running_loop()
        self._ping = loop.run_in_executor(self._ping_executor, self.store.ping)
        await asyncio.shield(self._ping)

    # --- the tailer's thread ---------------------------------------------------------------

    async def next_batch(self, after: int, *, wait: float, limit: int) -> Batch | None:
        """Wait up to ``wait`` s for the log to pass ``after``, then read the run events after it.

        Returns None when nothing came, else ``(top, events)``. ``top`` is None when events
        were found at the first read. When none were (the new rows are not run events, say
        workflow registrations), ``top`` is the end of the log read *before* a second read,
        so every run event up to ``top`` is in that second read unless its page is full.
        """

        def wait_and_read() -> Batch | None:
            store = self.store
            if not store.wait_for_log(after, wait):
                return None
            page = store.read_log(after=after, limit=limit)
            if page:
                return None, page
            top = store.max_position()
            return top, store.read_log(after=after, limit=limit)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tail_executor, wait_and_read)

    def close(self) -> None:
        """Stop the threads once their current calls return."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._tail_executor.shutdown(wait=True, cancel_futures=True)
        self._ping_executor.shutdown(wait=False, cancel_futures=True)
