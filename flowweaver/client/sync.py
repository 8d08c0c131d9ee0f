"""The blocking client, on httpx: one connection pool, typed methods, resumable event streams."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Concatenate, ParamSpec, TypeVar

import httpx

from flowweaver.backoff import Backoff
from flowweaver.errors import FlowweaverError, ServerUnreachableError

from . import calls
from .calls import Call, Event
from .problems import MAX_ERROR_BODY, problem_error, read_answer
from .settings import Settings, transport_reason
from .sse import Resume, SseParser

P = ParamSpec("P")
T = TypeVar("T")


def _method(builder: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """Return the client method that sends what ``builder`` builds (its docstring too)."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.send(builder(*args, **kwargs))

    method.__name__ = builder.__name__
    method.__qualname__ = f"Client.{builder.__name__}"
    method.__doc__ = builder.__doc__
    return method


class Client:
    """A blocking client of a Flowweaver server: ``Client("http://127.0.0.1:3000", token=...)``.

    Every route is a method answering the Struct the server encodes; an error answer raises
    the engine's own exception class (``NotFoundError``, ``ValidationError``, ...), a refused
    token :class:`~flowweaver.errors.AuthError`, a server that does not answer
    :class:`~flowweaver.errors.ServerUnreachableError`. Idempotent calls (GETs, and a run
    started with an idempotency key) are retried with backoff. Use it as a context manager,
    or call :meth:`close`.
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
        verify: bool | str = True,
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
        self._http = httpx.Client(
            base_url=self.url,
            headers=self.settings.headers,
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------------

    def send(self, call: Call[T]) -> T:
        """Send ``call``; retry it while it is idempotent and the failure may pass.

        Raises:
            FlowweaverError: the answer's problem as our class, or ServerUnreachableError,
                BadResponseError.
        """
        attempt = 0
        while True:
            try:
                return self._send_once(call)
            except FlowweaverError as error:
                delay = self.settings.retry_delay(call, error, attempt)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _send_once(self, call: Call[T]) -> T:
        url = self.url + call.path
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=dict(call.params),
                content=call.body,
                headers=self.settings.request_headers(call),
                timeout=self.settings.timeout + call.extra_time,
            )
        except httpx.TransportError as e:
            raise ServerUnreachableError(self.url, transport_reason(e)) from None
        body = response.content
        if response.status_code >= 400:
            raise problem_error(
                response.status_code, body[:MAX_ERROR_BODY], response.headers, url, call.path
            )
        return read_answer(call.read, body, response.headers, url)

    # --- event streams ------------------------------------------------------------------------

    def events(
        self, run_id: str, after: int = 0, *, types: Sequence[str] | None = None
    ) -> Iterator[Event]:
        """Yield the run's events after version ``after``, then its live ones, until it ends.

        A dropped connection or a restarted server is reconnected with ``Last-Event-ID``:
        each event is yielded exactly once, in order. After ``reconnect_for`` seconds without
        a connection the last error is raised.

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
    ) -> Iterator[Event]:
        """Yield every run's events after log position ``after``, then live ones, for ever.

        ``Event.offset`` is the log position; resumed like :meth:`events`.
        """
        return self._stream("/events", after, None, calls._query(types=types, runId=run_id))

    def _stream(
        self, path: str, after: int, run_id: str | None, params: Mapping[str, str]
    ) -> Iterator[Event]:
        url = self.url + path
        resume = Resume(url, after)
        failures = 0
        failing_since: float | None = None
        timeout = httpx.Timeout(self.settings.timeout, read=self.settings.stream_timeout)
        while True:
            try:
                with self._http.stream(
                    "GET",
                    path,
                    params=dict(params),
                    headers=self.settings.stream_headers(resume.last),
                    timeout=timeout,
                ) as response:
                    if response.status_code >= 400:
                        body = response.read()[:MAX_ERROR_BODY]
                        raise problem_error(response.status_code, body, response.headers, url, path)
                    self.settings.check_stream(response.headers, url)
                    parser = SseParser(url)
                    for chunk in response.iter_bytes():
                        for message in parser.feed(chunk):
                            event = resume.take(message)
                            if event is None:
                                continue
                            failures, failing_since = 0, None
                            yield event
                            if run_id is not None and event.is_terminal:
                                return
                if run_id is not None and self._ended(run_id, resume.last):
                    return
                error: FlowweaverError = ServerUnreachableError(
                    self.url, "the event stream closed before the run ended"
                )
            except httpx.TransportError as e:
                error = ServerUnreachableError(self.url, transport_reason(e))
            except FlowweaverError as e:
                if not e.retryable:
                    raise
                error = e
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            delay = self.settings.reconnect_delay(error, failures, now - failing_since)
            time.sleep(delay)
            failures += 1

    def _ended(self, run_id: str, last: int) -> bool:
        """Say whether the run ended at or before version ``last`` (a stream that closed)."""
        state = self.get_run(run_id)
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


__all__ = ["Client", "Event"]
