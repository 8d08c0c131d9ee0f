"""Safe exposure: which Host names are answered, JSON bodies only, CORS, no versions on the wire.

Three attacks from a browser page are refused here, before any route runs:

- **Cross-site simple requests.** A page on any origin may send a POST without asking first
  (no CORS preflight) when its Content-Type is ``text/plain``, a form's, or absent. So every
  POST must say ``Content-Type: application/json`` (or ``application/...+json``), even one with
  an empty body such as ``POST /runs/{id}/pause``: else 415. A browser sends that type across
  origins only after a preflight, which only the listed origins pass. PUT, PATCH and DELETE are
  never sent across origins without a preflight, so for them only a body, when present, must
  be JSON. The charset, when given, must be UTF-8 (the body is read as UTF-8, RFC 8259).
- **DNS rebinding.** A page at ``http://evil.example`` whose name is re-pointed at this server
  sends ``Host: evil.example``. Without ``--allowed-host`` only ``localhost`` and IP addresses
  are answered, which no rebinding page can send (its Host is its own DNS name); every other
  name gets 421 until it is listed. ``*`` answers any Host (a proxy in front checks it).
- **Reading across origins.** CORS headers go only to the origins listed with
  ``--cors-origin`` (exact match); a preflight from any other origin is a 403.

The ``Server`` header says ``flowweaver``, without the versions aiohttp would name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import hdrs, web, web_response
from aiohttp.web_urldispatcher import MatchInfoError

from .errors import ApiError, Handler

SERVER_NAME = "flowweaver"
JSON = "application/json"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY_HOST = "*"
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "Prefer",
)
CORS_EXPOSED_HEADERS = (
    "Content-Disposition",
    "Location",
    "Preference-Applied",
    "Retry-After",
    "WWW-Authenticate",
)
CORS_MAX_AGE = 3600  # seconds a browser may keep a preflight's answer (Chromium caps it at 7200)
MAX_HOST_CHARS = 100  # of a refused Host quoted back in the answer

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_ORIGIN = re.compile(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:\d{1,5})?")
_PORT = re.compile(r"\d{1,5}")


def is_loopback(host: str) -> bool:
    """Return whether ``host`` (a ``--host`` value) is a loopback address or ``localhost``."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> tuple[str, int | None] | None:
    """Split a Host header (or an ``--allowed-host`` value) into a lowercase name and a port.

    IPv6 addresses keep their brackets; a trailing dot is dropped (``localhost.`` is
    ``localhost``). Return None for text that is no host.
    """
    text = value.strip().lower()
    if text.startswith("["):
        name, bracket, rest = text.partition("]")
        if not bracket:
            return None
        name += bracket
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
        name = name.removesuffix(".")
        if not _NAME.fullmatch(name):
            return None
    if not rest:
        return name, None
    if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]):
        return None
    return name, int(rest[1:])


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def origin(value: str) -> str:
    """Return a ``--cors-origin`` value as browsers send it in ``Origin``.

    Raises:
        ValueError: it is no ``scheme://host[:port]`` origin.
    """
    text = value.strip().lower().removesuffix("/")
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"not an origin: {value[:80]!r} (write it as the browser sends it: "
            "https://app.example.com or http://localhost:8080)"
        )
    default = {"http": ":80", "https": ":443"}[match[1]]
    return text.removesuffix(default) if match[3] == default else text


def allowed_host(value: str) -> str:
    """Check an ``--allowed-host`` value: a name or address, with or without a port, or ``*``.

    Raises:
        ValueError: it is no host.
    """
    text = value.strip().lower()
    if text == ANY_HOST:
        return text
    if split_host(text) is None:
        raise ValueError(f"not a host name: {value[:80]!r} (try api.example.com or 10.0.0.5:3000)")
    return text


@dataclass(frozen=True)
class Exposure:
    """Which Host headers are answered, and which origins get CORS headers."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    any_host: bool = False
    origins: frozenset[str] = frozenset()

    @classmethod
    def build(cls, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> Exposure:
        """Return the exposure for the ``--allowed-host`` and ``--cors-origin`` values.

        Raises:
            ValueError: a value is no host or no origin.
        """
        listed = [allowed_host(h) for h in allowed_hosts]
        hosts = frozenset(split_host(h) for h in listed if h != ANY_HOST)
        return cls(
            hosts=frozenset(h for h in hosts if h is not None),
            any_host=ANY_HOST in listed,
            origins=frozenset(origin(o) for o in cors_origins),
        )

    def allows_host(self, header: str) -> bool:
        """Return whether a request with this Host header is answered."""
        if self.any_host:
            return True
        found = split_host(header)
        if found is None:
            return False
        name, port = found
        if name in LOOPBACK_NAMES or _is_ip(name):
            return True  # a rebinding page cannot send these: its Host is its own DNS name
        return (name, None) in self.hosts or (name, port) in self.hosts


EXPOSURE: web.AppKey[Exposure] = web.AppKey("exposure", Exposure)


def add_exposure(app: web.Application, exposure: Exposure) -> None:
    """Check Host, media type and CORS on every request of ``app``; name no versions."""
    # aiohttp names itself and Python with versions in every answer, its own parser's 400s
    # included, which never reach an app's signals; its module default is the one place for all.
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]
    app[EXPOSURE] = exposure
    app.middlewares.append(exposure_middleware)
    app.on_response_prepare.append(_response_headers)


@web.middleware
async def exposure_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse other Hosts (421), answer CORS preflights, and refuse non-JSON bodies (415)."""
    exposure = request.app[EXPOSURE]
    check_host(request, exposure)
    if (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    ):
        return _preflight(request, exposure)
    if not isinstance(request.match_info, MatchInfoError):  # else 404 or 405 as before
        check_media_type(request)
    return await handler(request)


def check_before_body(request: web.Request) -> None:
    """Check Host and media type of a request that waits for ``100 Continue`` to send its body.

    Raises:
        ApiError: 400, 421 or 415, as the middleware would answer after the upload.
    """
    check_host(request, request.app[EXPOSURE])
    check_media_type(request)


def check_host(request: web.Request, exposure: Exposure) -> None:
    """Refuse a request whose Host this server does not answer for.

    Raises:
        ApiError: two Host headers (400), a Host not allowed (421).
    """
    hosts = request.headers.getall(hdrs.HOST, ())
    if len(hosts) > 1:
        raise ApiError(400, "bad-request", "the request has more than one Host header")
    if hosts and not exposure.allows_host(hosts[0]):
        raise ApiError(
            421,
            "misdirected-request",
            f"this server does not answer for host {hosts[0][:MAX_HOST_CHARS]!r}; "
            "its operator lists the names it answers for with --allowed-host",
        )


def check_media_type(request: web.Request) -> None:
    """Refuse a POST that does not say it sends UTF-8 JSON, or another body that is not JSON.

    Raises:
        ApiError: 415 with ``Accept-Post: application/json``.
    """
    method = request.method
    if method == hdrs.METH_POST or (
        method in (hdrs.METH_PUT, hdrs.METH_PATCH, hdrs.METH_DELETE) and request.body_exists
    ):
        mime = request.content_type if hdrs.CONTENT_TYPE in request.headers else ""
        if mime != JSON and not (mime.startswith("application/") and mime.endswith("+json")):
            sent = f"not {mime!r}" if mime else "with no Content-Type"
            raise ApiError(
                415,
                "unsupported-media-type",
                f"send Content-Type: {JSON} on every {method}, even without a body ({sent})",
                headers={"Accept-Post": JSON},
            )
        charset = (request.charset or "utf-8").lower()
        if charset not in ("utf-8", "utf8"):
            raise ApiError(
                415,
                "unsupported-media-type",
                f"send the body as UTF-8 JSON, not charset={charset[:40]!r}",
                headers={"Accept-Post": JSON},
            )


def _preflight(request: web.Request, exposure: Exposure) -> web.StreamResponse:
    """Answer a CORS preflight: 204 for a listed origin, 403 problem for any other."""
    sent = request.headers.get(hdrs.ORIGIN, "")
    if sent not in exposure.origins:
        raise ApiError(
            403,
            "origin-not-allowed",
            f"origin {sent[:MAX_HOST_CHARS]!r} may not call this API from a browser; "
            "its operator lists the origins that may with --cors-origin",
        )
    match_info = request.match_info
    error = match_info.http_exception if isinstance(match_info, MatchInfoError) else None
    if isinstance(error, web.HTTPNotFound):
        raise error
    methods = sorted(error.allowed_methods) if isinstance(error, web.HTTPMethodNotAllowed) else []
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(CORS_REQUEST_HEADERS),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(CORS_MAX_AGE),
            hdrs.VARY: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        },
    )


async def _response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add CORS headers to every answer (SSE streams included) for a listed origin."""
    exposure = request.app[EXPOSURE]
    if not exposure.origins:
        return
    sent = request.headers.get(hdrs.ORIGIN)
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = "Origin"
    elif "origin" not in vary.lower():
        response.headers[hdrs.VARY] = vary + ", Origin"
    if sent is None or sent not in exposure.origins:
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = sent
    if request.method != hdrs.METH_OPTIONS:
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(CORS_EXPOSED_HEADERS)
