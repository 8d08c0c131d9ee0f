"""Ids: the one pattern workflow, task and handler names follow, run ids, deterministic ids."""

from __future__ import annotations

import hashlib
import re
import uuid
from functools import lru_cache
from typing import Any

import msgspec

NAMESPACE = uuid.UUID("5f2d7b0e-3c1a-4e8f-9a57-6b1d2c9e4f30")

_canonical = msgspec.json.Encoder(order="sorted")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Workflow and task ids (DESIGN.md). The wire, the domain and the docs all use this one."""
HANDLER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$"
"""Handler names: like ids, but not starting with a digit."""


def whole_string(pattern: str) -> str:
    """Return ``^...$`` with its ``$`` closed to a final newline, for msgspec's ``Meta(pattern=)``.

    msgspec matches with ``re.search``, where ``$`` also matches before a final newline, so
    ``"a\\n"`` would pass as an id; the lookahead closes that and reads the same in JSON Schema.
    """
    return pattern.removesuffix("$") + r"(?!\n)$"


_ID = re.compile(whole_string(ID_PATTERN))
_HANDLER = re.compile(whole_string(HANDLER_PATTERN))


def is_ident(text: str) -> bool:
    """Say whether ``text`` is a valid workflow or task id (the whole string, no newline)."""
    return _ID.search(text) is not None


def is_handler_name(text: str) -> bool:
    """Say whether ``text`` is a valid handler name (the whole string, no newline)."""
    return _HANDLER.search(text) is not None


def canonical_run_id(text: str) -> str | None:
    """Return the canonical spelling of a run id, or None when ``text`` is no UUID.

    ``uuid.UUID`` also reads upper case, no hyphens, braces and ``urn:uuid:``; every such
    spelling names the same run, and only the canonical one (lower case, hyphenated) is used
    as a key anywhere (the store, the SSE fan-out, answers).
    """
    if len(text) > 64:  # the longest spelling uuid.UUID reads is 45 characters
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def run_id_for_key(workflow_id: str, idempotency_key: str) -> str:
    """Return the run id an idempotency key stands for: uuid5 of workflow id and key.

    A newline separates the two: it can appear in neither a workflow id nor (by the API's
    rules) a key, so no two (workflow, key) pairs share an id.
    """
    return str(uuid.uuid5(NAMESPACE, f"{workflow_id}\n{idempotency_key}"))


FORK_NAMESPACE = uuid.uuid5(NAMESPACE, "fork")
"""Namespace of run ids derived from a fork's idempotency key: apart from POST /runs keys'."""


def run_id_for_fork_key(parent_run_id: str, idempotency_key: str) -> str:
    """Return the id of the fork of ``parent_run_id`` an idempotency key stands for.

    uuid5 of the parent's id and the key in :data:`FORK_NAMESPACE`, a namespace of its own:
    uuid5 hashes the namespace before the name, so no fork key gives the id of a POST /runs
    key (:func:`run_id_for_key`, in :data:`NAMESPACE`), whatever the workflow id and key. A
    key is scoped to its parent, as a run's key is to its workflow.
    """
    return str(uuid.uuid5(FORK_NAMESPACE, f"{parent_run_id}\n{idempotency_key}"))


@lru_cache(maxsize=4096)
def workflow_aggregate_id(workflow_id: str) -> uuid.UUID:
    """Return the aggregate id under which a workflow's versions are recorded."""
    return uuid.uuid5(NAMESPACE, f"workflow\n{workflow_id}")


TOKENS_AGGREGATE = uuid.uuid5(NAMESPACE, "tokens")
"""The aggregate id under which every token event of a store is recorded."""

SCHEDULES_AGGREGATE = uuid.uuid5(NAMESPACE, "schedules")
"""The aggregate id under which every schedule event of a store is recorded."""


def request_hash(
    workflow_id: str,
    workflow_version: int | None,
    parameters: Any,
    *,
    on_task_failure: str | None = None,
    priority: int = 0,
) -> str:
    """Return a digest of what a run request asks for, to tell a repeat from a conflict.

    ``on_task_failure`` counts only when given, and ``priority`` only when not 0, so requests
    without them hash as they always did.
    """
    request: dict[str, Any] = {
        "workflowId": workflow_id,
        "version": workflow_version,
        "parameters": parameters,
    }
    if on_task_failure is not None:
        request["onTaskFailure"] = on_task_failure
    if priority:
        request["priority"] = priority
    body = _canonical.encode(request)
    return hashlib.sha256(body).hexdigest()


def fork_request_hash(
    parent_run_id: str,
    at_version: int | None,
    reset: Any,
    parameters: Any,
    outputs: Any,
    on_task_failure: str | None,
) -> str:
    """Return a digest of what a fork request asks for, to tell a repeat from a conflict.

    The request as given, not as resolved: a repeat that leaves ``at_version`` to default
    names the same fork even when the parent has moved on since. ``reason`` and the caller
    are not part of it, as the submitter is not part of a run request's digest.
    """
    body = _canonical.encode(
        {
            "parentRunId": parent_run_id,
            "atVersion": at_version,
            "reset": reset,
            "parameters": parameters,
            "outputs": outputs,
            "onTaskFailure": on_task_failure,
        }
    )
    return hashlib.sha256(body).hexdigest()
