"""Hash chains over each run's stored events: link, check, and the wire lines of export.

Each run event is stored as its canonical JSON (what the msgspec mapper writes) with one more
member spliced in last, ``"hash":"<64 hex digits>"``::

    h_0 = SHA-256(run id, in its canonical 36-character form)
    h_n = SHA-256(h_{n-1} || canonical JSON of event n)      (h as 32 raw bytes)

The canonical JSON is the stored bytes with that last member cut off, so a check hashes the
exact bytes a store holds and never re-encodes a value. Changing, removing, inserting or
reordering any stored event breaks the chain at the first version touched. What a chain
alone cannot show is a run cut short at its end: keep the ``head`` that verify answers (the
last hash) where the store cannot change it, and compare.

Events stored before chains existed have no hash member. For chaining they count as if
their whole stored bytes were the canonical JSON, so the events that a run appends after an
upgrade chain on from them; a check reports such a run as not verified (its unhashed
versions prove nothing), naming them.
"""

from __future__ import annotations

import hashlib
import uuid
from binascii import hexlify
from collections.abc import Iterable

import msgspec

HASH_MEMBER = b',"hash":"'
SUFFIX_BYTES = len(HASH_MEMBER) + 64 + 2  # ,"hash":"<64 hex>"}
LEGACY_REASON = "stored before hash chains (no hash)"


class ChainCheck(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """The answer of a chain check: ``ok`` with the last version and its hash, or the first
    version that does not verify and why."""

    ok: bool
    version: int | None = None
    head: str | None = None
    first_bad_version: int | None = None
    reason: str | None = None


class ExportLine(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One line of an export: a stored run event, its bytes exactly as the store keeps them."""

    run_id: str
    version: int
    topic: str
    event: msgspec.Raw


def genesis(run_id: str) -> bytes:
    """Return h_0 of a run: SHA-256 of its id in canonical form.

    Raises:
        ValueError: ``run_id`` is not a UUID.
    """
    return hashlib.sha256(str(uuid.UUID(run_id)).encode()).digest()


def split_stored(data: bytes) -> tuple[bytes, str | None]:
    """Return (canonical JSON, the stored hex hash) of stored bytes; hash None when it has none."""
    if len(data) > SUFFIX_BYTES and data[-SUFFIX_BYTES : -SUFFIX_BYTES + 9] == HASH_MEMBER:
        hex_hash = data[-66:-2]
        if data[-2:] == b'"}':
            return data[:-SUFFIX_BYTES] + b"}", hex_hash.decode("ascii", "replace")
    return data, None


def stored_hash(data: bytes) -> bytes | None:
    """Return the hash stored in an event's bytes, None when it has none or it is not hex."""
    _, hex_hash = split_stored(data)
    if hex_hash is None:
        return None
    try:
        return bytes.fromhex(hex_hash)
    except ValueError:
        return None


def chain_on(previous: bytes, data: bytes) -> bytes:
    """Return the hash of a stored event chained on ``previous``, whatever it stores itself."""
    canonical, _ = split_stored(data)
    return hashlib.sha256(previous + canonical).digest()


class ChainWalk:
    """Checks one run's stored events fed in version order, page by page (bounded memory)."""

    def __init__(self, run_id: str) -> None:
        self.head = genesis(run_id)
        self.version = 0
        self.legacy = 0  # versions 1..legacy have no hash: stored before chains
        self.bad: ChainCheck | None = None

    def feed(self, rows: Iterable[tuple[int, str, bytes]]) -> bool:
        """Check the next events (version, topic, stored bytes); False once one does not verify.

        The loop verify spends its time in: every name it uses is local.
        """
        if self.bad is not None:
            return False
        sha256, member, end, suffix = hashlib.sha256, HASH_MEMBER, b'"}', SUFFIX_BYTES
        head, expected = self.head, self.version + 1
        for version, _, data in rows:
            if version != expected:
                self.head, self.version = head, expected - 1
                return self._fail(expected, f"version {expected} is missing")
            if data[-suffix : -suffix + 9] == member and data[-2:] == end:
                head = sha256(head + data[:-suffix] + b"}").digest()
                if hexlify(head) != data[-66:-2]:
                    self.head, self.version = head, version - 1
                    return self._fail(
                        version, "the stored hash does not match the event and the chain"
                    )
            elif version == self.legacy + 1:
                self.legacy = version
                head = sha256(head + data).digest()
            else:
                self.head, self.version = head, version - 1
                return self._fail(version, "the event has no hash, unlike the events before it")
            expected += 1
        self.head, self.version = head, expected - 1
        return True

    def _fail(self, version: int, reason: str) -> bool:
        self.bad = ChainCheck(ok=False, first_bad_version=version, reason=reason)
        return False

    def result(self) -> ChainCheck:
        """Return the verdict on what was fed."""
        if self.bad is not None:
            if self.legacy:
                bad = self.bad
                return self._legacy(
                    f"; the chain then breaks at version {bad.first_bad_version}: {bad.reason}"
                )
            return self.bad
        if self.legacy:
            return self._legacy("")
        return ChainCheck(ok=True, version=self.version, head=self.head.hex())

    def _legacy(self, then: str) -> ChainCheck:
        versions = "version 1 was" if self.legacy == 1 else f"versions 1-{self.legacy} were"
        return ChainCheck(ok=False, first_bad_version=1, reason=f"{versions} {LEGACY_REASON}{then}")
