"""The ``Prefer`` request header (RFC 7240), of which the API honours ``wait``."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import bad_request

MAX_WAIT = 60  # seconds a POST /runs may ask to be held

# preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] ), one per comma
_PREFERENCE = re.compile(
    r"""\s*(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*
        (?:=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,;\s]*))?\s*
        (?:;(?:[^,"]|"(?:[^"\\]|\\.)*")*)?\s*(?:,|$)""",
    re.VERBOSE,
)


def preferences(fields: Iterable[str]) -> dict[str, str | None]:
    """Return each preference's value (None when it has none); the first of a name counts.

    Elements that do not parse are skipped, as RFC 7240 lets a server ignore what it does not
    understand.
    """
    found: dict[str, str | None] = {}
    for field in fields:
        pos = 0
        while pos < len(field):
            match = _PREFERENCE.match(field, pos)
            if match is None or match.end() == pos:
                skip = field.find(",", pos)  # not a preference: go on after the next comma
                if skip < 0:
                    break
                pos = skip + 1
                continue
            pos = match.end()
            value = match["value"]
            if value is not None and value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.setdefault(match["name"].lower(), value)
    return found


def wait_seconds(fields: Iterable[str]) -> int | None:
    """Return the seconds of a ``wait`` preference, or None without one.

    Raises:
        ApiError: the value is not a whole number of seconds from 0 to :data:`MAX_WAIT` (400).
    """
    prefs = preferences(fields)
    if "wait" not in prefs:
        return None
    raw = prefs["wait"] or ""
    if not raw.isascii() or not raw.isdigit() or int(raw.lstrip("0")[:4] or 0) > MAX_WAIT:
        raise bad_request(
            f"Prefer: wait must be a whole number of seconds from 0 to {MAX_WAIT}",
            path="$.headers.Prefer",
        )
    return int(raw)
