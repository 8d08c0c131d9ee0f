"""What both clients share: headers, timeouts, and when to retry or reconnect, how soon."""

from __future__ import annotations

import importlib.metadata
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowweaver.backoff import Backoff
from flowweaver.errors import BadResponseError, FlowweaverError, ServerError

from .calls import EVENT_STREAM, JSON, Call

DEFAULT_BACKOFF = Backoff(base=0.1, cap=5.0, factor=2.0, jitter=0.5)
"""0.1 s, 0.2 s, 0.4 s, ... at most 5 s, each less up to half at random: clients that failed
together (a server restart) do not all come back at the same instant."""


@dataclass(frozen=True, slots=True)
class Settings:
    """One client's address, token and patience."""

    url: str
    headers: Mapping[str, str]
    timeout: float
    retries: int
    backoff: Backoff
    stream_timeout: float
    reconnect_for: float

    @classmethod
    def make(
        cls,
        url: str,
        token: str | None,
        *,
        timeout: float,
        retries: int,
        backoff: Backoff | None,
        stream_timeout: float,
        reconnect_for: float,
    ) -> Settings:
        """Return the settings, checking the URL and the numbers.

        Raises:
            ValueError: a URL that is not http(s)://..., or a number out of range.
        """
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the server URL must start with http:// or https://, not {url!r}")
        if timeout <= 0 or stream_timeout <= 0 or retries < 0 or reconnect_for < 0:
            raise ValueError("timeouts must be above 0; retries and reconnect_for at least 0")
        version = importlib.metadata.version("flowweaver")
        headers = {"User-Agent": f"flowweaver-client/{version}", "Accept": JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return cls(
            url=url,
            headers=headers,
            timeout=timeout,
            retries=retries,
            backoff=backoff or DEFAULT_BACKOFF,
            stream_timeout=stream_timeout,
            reconnect_for=reconnect_for,
        )

    def request_headers(self, call: Call[Any]) -> dict[str, str]:
        """Return the headers of ``call`` beyond the client's own."""
        headers = dict(call.headers)
        if call.method != "GET":
            headers["Content-Type"] = JSON  # every POST says JSON, even without a body
        return headers

    def stream_headers(self, last: int) -> dict[str, str]:
        """Return the headers that open (or resume, after offset ``last``) an event stream."""
        return {"Accept": EVENT_STREAM, "Cache-Control": "no-cache", "Last-Event-ID": str(last)}

    def check_stream(self, headers: Mapping[str, str], url: str) -> None:
        """Check that a 2xx answer to a stream request is an event stream.

        Raises:
            BadResponseError: it is not (an HTML page, JSON, ...).
        """
        media = headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if media != EVENT_STREAM:
            raise BadResponseError(url, f"{media or 'no media type'}, not an event stream")

    def retry_delay(self, call: Call[Any], error: FlowweaverError, attempt: int) -> float | None:
        """Return the seconds to wait before trying ``call`` again, or None to raise ``error``."""
        if not call.idempotent or not error.retryable or attempt >= self.retries:
            return None
        return self._delay(error, attempt)

    def reconnect_delay(self, error: FlowweaverError, failures: int, failing_for: float) -> float:
        """Return the seconds to wait before reopening a stream that failed.

        Raises:
            FlowweaverError: ``error``, once streams have failed for ``reconnect_for`` seconds.
        """
        if failing_for > self.reconnect_for:
            raise error
        return self._delay(error, failures)

    def _delay(self, error: FlowweaverError, attempt: int) -> float:
        delay = self.backoff.delay(attempt, random.random())
        if isinstance(error, ServerError) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.backoff.cap))
        return delay


def transport_reason(error: BaseException) -> str:
    """Return a short reason for a connection-level failure (httpx's or aiohttp's)."""
    text = str(error).strip()
    cause = error.__cause__ or error.__context__
    while not text and cause is not None:
        text = str(cause).strip()
        cause = cause.__cause__ or cause.__context__
    name = type(error).__name__
    if "refused" in text.lower():
        return "connection refused"
    return f"{name}: {text}" if text else name
