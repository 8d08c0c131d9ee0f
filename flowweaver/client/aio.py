"""The asyncio client, on aiohttp: the same methods as :class:`~flowweaver.client.Client`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiohttp

from flowweaver.backoff import Backoff
from flowweaver.errors import FlowweaverError, ServerUnreachableError

from . import calls
from .calls import Call, Event
from .problems import MAX_ERROR_BODY, problem_error, read_answer
from .settings import Settings, transport_reason
from .sse import Resume, SseParser

P = ParamSpec("P")
T = TypeVar("T")

_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)


def _method(
    builder: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """Return the coroutine method that sends what ``builder`` builds (its docstring too)."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.send(builder(*args, **kwargs))

    method.__name__ = builder.__name__
    method.__qualname__ = f"AsyncClient.{builder.__name__}"
    method.__doc__ = builder.__doc__
    return method


class AsyncClient:
    """An asyncio client of a Flowweaver server; ``async with AsyncClient(url) as client:``.

    The same methods, errors, retries and resumable streams as
    :class:`~flowweaver.client.Client`, each a coroutine (streams: async iterators).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:3000",
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        stream_timeout: float = 60.0,
        reconnect_for: float = 60.0,
    ) -> None:
        self.settings = Settings.make(
            url,
            token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            stream_timeout=stream_timeout,
            reconnect_for=reconnect_for,
        )
        self.url = self.settings.url
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that is running then.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.settings.headers,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending ------------------------------------------------------------------------------

    async def send(self, call: Call[T]) -> T:
        """Send ``call``; retry it while it is idempotent and the failure may pass.

        Raises:
            FlowweaverError: the answer's problem as our class, or ServerUnreachableError,
                BadResponseError.
        """
        attempt = 0
        while True:
            try:
                return await self._send_once(call)
            except FlowweaverError as error:
                delay = self.settings.retry_delay(call, error, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _send_once(self, call: Call[T]) -> T:
        url = self.url + call.path
        try:
            async with self._http().request(
                call.method,
                url,
                params=dict(call.params),
                data=call.body,
                headers=self.settings.request_headers(call),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout + call.extra_time),
            ) as response:
                if response.status >= 400:
                    body = await response.content.read(MAX_ERROR_BODY)
                    raise problem_error(response.status, body, response.headers, url, call.path)
                body = await response.read()
        except _TRANSPORT_ERRORS as e:
            raise ServerUnreachableError(self.url, transport_reason(e)) from None
        return read_answer(call.read, body, response.headers, url)

    # --- event streams ------------------------------------------------------------------------

    def events(
        self, run_id: str, after: int = 0, *, types: Sequence[str] | None = None
    ) -> AsyncIterator[Event]:
        """Yield the run's events after version ``after``, then live ones, until it ends.

        Resumed with ``Last-Event-ID`` after a dropped connection: each event exactly once.

        Raises:
            NotFoundError: no such run.
            ServerUnreachableError: no server for ``reconnect_for`` seconds.
        """
        path = f"/events/{calls._id(run_id)}"
        return self._stream(path, after, run_id, calls._query(types=types))

    def log_events(
        self,
        after: int = 0,
        *,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Yield every run's events after log position ``after``, then live ones, for ever."""
        return self._stream("/events", after, None, calls._query(types=types, runId=run_id))

    async def _stream(
        self, path: str, after: int, run_id: str | None, params: Mapping[str, str]
    ) -> AsyncIterator[Event]:
        url = self.url + path
        resume = Resume(url, after)
        failures = 0
        failing_since: float | None = None
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.timeout,
            sock_read=self.settings.stream_timeout,
        )
        while True:
            try:
                async with self._http().get(
                    url,
                    params=dict(params),
                    headers=self.settings.stream_headers(resume.last),
                    timeout=timeout,
                ) as response:
                    if response.status >= 400:
                        body = await response.content.read(MAX_ERROR_BODY)
                        raise problem_error(response.status, body, response.headers, url, path)
                    self.settings.check_stream(response.headers, url)
                    parser = SseParser(url)
                    async for chunk in response.content.iter_any():
                        for message in parser.feed(chunk):
                            event = resume.take(message)
                            if event is None:
                                continue
                            failures, failing_since = 0, None
                            yield event
                            if run_id is not None and event.is_terminal:
                                return
                if run_id is not None and await self._ended(run_id, resume.last):
                    return
                error: FlowweaverError = ServerUnreachableError(
                    self.url, "the event stream closed before the run ended"
                )
            except _TRANSPORT_ERRORS as e:
                error = ServerUnreachableError(self.url, transport_reason(e))
            except FlowweaverError as e:
                if not e.retryable:
                    raise
                error = e
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            delay = self.settings.reconnect_delay(error, failures, now - failing_since)
            await asyncio.sleep(delay)
            failures += 1

    async def _ended(self, run_id: str, last: int) -> bool:
        state = await self.get_run(run_id)
        return state.status in ("completed", "failed", "cancelled") and state.version <= last

    # --- the routes (calls.ROUTES maps each to its name) -------------------------------------

    register_workflow = _method(calls.register_workflow)
    list_workflows = _method(calls.list_workflows)
    get_workflow = _method(calls.get_workflow)
    start_run = _method(calls.start_run)
    list_runs = _method(calls.list_runs)
    get_run = _method(calls.get_run)
    history = _method(calls.history)
    log_page = _method(calls.log_page)
    fork_run = _method(calls.fork_run)
    lineage = _method(calls.lineage)
    diff_run = _method(calls.diff_run)
    verify_run = _method(calls.verify_run)
    export_run = _method(calls.export_run)
    pause_run = _method(calls.pause_run)
    resume_run = _method(calls.resume_run)
    cancel_run = _method(calls.cancel_run)
    retry_task = _method(calls.retry_task)
    skip_task = _method(calls.skip_task)
    complete_task = _method(calls.complete_task)
    send_signal = _method(calls.send_signal)
    create_schedule = _method(calls.create_schedule)
    list_schedules = _method(calls.list_schedules)
    get_schedule = _method(calls.get_schedule)
    delete_schedule = _method(calls.delete_schedule)
    pause_schedule = _method(calls.pause_schedule)
    resume_schedule = _method(calls.resume_schedule)
    trigger_schedule = _method(calls.trigger_schedule)
    openapi = _method(calls.openapi)
    metrics = _method(calls.metrics)
    health = _method(calls.health)
    ready = _method(calls.ready)
    create_ticket = _method(calls.create_ticket)
    sign_in = _method(calls.sign_in)
    sign_out = _method(calls.sign_out)
    list_tokens = _method(calls.list_tokens)
    create_token = _method(calls.create_token)
    revoke_token = _method(calls.revoke_token)
    whoami = _method(calls.whoami)


__all__ = ["AsyncClient"]
