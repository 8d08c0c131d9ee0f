"""The one place where the event loop meets the engine's threads.

Every engine or store call blocks (SQL, a pykka reply), so each one runs on a thread of this
bridge's executor through ``loop.run_in_executor``; the loop only awaits asyncio futures. No
pykka future is ever awaited on the loop: pykka's ``__await__`` calls the blocking ``get()``.
The tailer's long waits get their own thread so they never hold a request's thread.

Waiting for a run to end (``POST /runs`` with ``Prefer: wait``) takes no thread at all: the
engine calls :class:`RunWaits` on the run's own thread as the run ends, and that hands the
final state to the waiting requests' futures with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flowweaver.domain.run import RunState
from flowweaver.domain.spec import OnTaskFailure, WorkflowSpec
from flowweaver.domain.workflow import WorkflowRegistered
from flowweaver.engine import Engine, RunHandle
from flowweaver.engine.lineage import Lineage
from flowweaver.errors import NotFoundError, StoreError
from flowweaver.ports import RecordedEvent, RunPage, StoredRuns, StoreReader
from flowweaver.store.audit import export_run, verify_run
from flowweaver.store.chain import ChainCheck

T = TypeVar("T")

Batch = tuple[int | None, list[RecordedEvent]]
RECENT_FINISHED = 4096  # final states kept for waits that register after their run ended


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
        self.waits = RunWaits(self)

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
        on_task_failure: OnTaskFailure | None = None,
        submitted_by: str | None = None,
        priority: int = 0,
        traceparent: str | None = None,
    ) -> RunHandle:
        """Start (or find, for a repeated key) a run."""
        return await self._call(
            self.engine.start_run,
            workflow_id,
            parameters=parameters,
            idempotency_key=idempotency_key,
            version=version,
            on_task_failure=on_task_failure,
            submitted_by=submitted_by,
            priority=priority,
            traceparent=traceparent,
        )

    async def fork_run(self, parent_run_id: str, **options: Any) -> RunHandle:
        """Start (or find, for a repeated key) a fork of a run (see :meth:`Engine.fork_run`)."""
        return await self._call(self.engine.fork_run, parent_run_id, **options)

    async def lineage(self, run_id: str, *, limit: int, cursor: str | None) -> Lineage:
        """Return the run's parent and a page of its forks, from the store."""
        return await self._call(self.engine.lineage, run_id, limit=limit, cursor=cursor)

    async def act(self, action: Callable[..., RunState], *args: Any, **kwargs: Any) -> RunState:
        """Run an operator action of the engine (``engine.pause_run``, ...) off the loop and
        return the run's state once it is stored."""
        return await self._call(action, *args, **kwargs)

    # --- readers (the store, never the actors) ---------------------------------------------

    async def get_run(self, run_id: str, at: int | None = None) -> RunState:
        """Return the run's state (as of version ``at``)."""
        return await self._call(self.engine.get_run, run_id, at=at)

    async def list_runs(
        self,
        *,
        workflow_id: str | None,
        status: str | None,
        limit: int,
        cursor: str | None,
        submitted_by: str | None = None,
    ) -> RunPage:
        """Return a page of runs from the read model."""
        return await self._call(
            self.store.list_runs,
            workflow_id=workflow_id,
            status=status,
            limit=limit,
            cursor=cursor,
            submitted_by=submitted_by,
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

    async def verify_run(self, run_id: str) -> ChainCheck:
        """Walk the run's hash chain.

        Raises:
            NotFoundError: no such run (or a store that keeps no stored records).
        """
        return await self._call(verify_run, self._stored_runs(run_id), run_id)

    async def export_run(self, run_id: str) -> AsyncIterator[bytes]:
        """Verify the run, then return its export lines, a page at a time.

        Raises:
            NotFoundError: no such run.
            ChainBrokenError: its chain is broken; nothing is returned.
        """
        lines = await self._call(export_run, self._stored_runs(run_id), run_id)

        async def pages() -> AsyncIterator[bytes]:
            while (page := await self._call(next, lines, None)) is not None:
                yield page

        return pages()

    def _stored_runs(self, run_id: str) -> StoredRuns:
        if not isinstance(self.store, StoredRuns):
            raise NotFoundError("run", run_id)
        return self.store

    async def max_position(self) -> int:
        """Return the highest global position in the log."""
        return await self._call(self.store.max_position)

    async def read_store(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Return ``func(store, *args, **kwargs)``, a blocking read, run on a request thread."""
        return await self._call(func, self.store, *args, **kwargs)

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


class RunWaits:
    """Requests waiting for runs of this engine to end, one asyncio future each.

    Attached, it listens to the engine: as a run ends, the run's thread records the final
    state and, only when a request waits for that run, wakes the loop with it. A request that
    registers after its run ended finds the state among the recent ones. Runs that another
    process may finish (a store shared by several engines) are also re-read once a second.
    """

    def __init__(self, bridge: EngineBridge, *, limit: int = 1024, poll: float = 1.0) -> None:
        self.bridge = bridge
        self.limit = limit
        self.poll = poll
        self._lock = threading.Lock()  # _recent, _watched, _ended, _wake_due: run threads and loop
        self._recent: OrderedDict[str, RunState] = OrderedDict()
        self._watched: dict[str, int] = {}  # run id -> requests waiting for it
        self._futures: dict[str, list[asyncio.Future[RunState | None]]] = {}
        self._ended: list[tuple[str, RunState]] = []  # for the loop to hand to the futures
        self._wake_due = False
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Return how many requests wait."""
        return self._count

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start listening to the engine; waits are completed on ``loop``."""
        self._loop = loop
        self._closed = False
        self.bridge.engine.add_finish_listener(self._run_finished)

    def close(self) -> None:
        """Stop listening and answer every wait at once (as the run stands)."""
        self._closed = True
        self.bridge.engine.remove_finish_listener(self._run_finished)
        for futures in self._futures.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    def _run_finished(self, run_id: str, state: RunState) -> None:
        # On the run's thread: no waiting, no raising. Runs that end while the loop has not
        # yet taken the last ones join them: one wake-up of the loop for the lot.
        with self._lock:
            self._recent[run_id] = state
            if len(self._recent) > RECENT_FINISHED:
                self._recent.popitem(last=False)
            if run_id not in self._watched:
                return
            self._ended.append((run_id, state))
            if self._wake_due:
                return
            self._wake_due = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._complete)

    def _complete(self) -> None:
        with self._lock:
            ended, self._ended = self._ended, []
            self._wake_due = False
        for run_id, state in ended:
            for future in self._futures.get(run_id, ()):
                if not future.done():
                    future.set_result(state)

    async def wait_finished(self, run_id: str) -> RunState | None:
        """Return the run's final state once it ends; bound the wait with ``asyncio.timeout``.

        None at once when :attr:`limit` requests wait already, and when the API closes.
        """
        if self._closed or self._loop is None:
            return None
        with self._lock:
            state = self._recent.get(run_id)
            if state is not None:
                return state
            if self._count >= self.limit:
                return None
            self._watched[run_id] = self._watched.get(run_id, 0) + 1
            self._count += 1
        future: asyncio.Future[RunState | None] = self._loop.create_future()
        self._futures.setdefault(run_id, []).append(future)
        try:
            return await self._await(run_id, future)
        finally:
            futures = self._futures[run_id]
            futures.remove(future)
            if not futures:
                del self._futures[run_id]
            with self._lock:
                self._count -= 1
                left = self._watched[run_id] - 1
                if left:
                    self._watched[run_id] = left
                else:
                    del self._watched[run_id]

    async def _await(self, run_id: str, future: asyncio.Future[RunState | None]) -> RunState | None:
        if not self.bridge.engine.leases.shared:  # every run of the store ends here
            return await future
        while True:
            try:
                async with asyncio.timeout(self.poll):
                    return await asyncio.shield(future)
            except TimeoutError:
                pass
            # Another process may have ended it: such an end reaches no listener here.
            state = await self.bridge.get_run(run_id)
            if state.is_terminal:
                return state
