"""Deterministic ids: idempotent run ids and workflow aggregate ids."""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache
from typing import Any

import msgspec

NAMESPACE = uuid.UUID("5f2d7b0e-3c1a-4e8f-9a57-6b1d2c9e4f30")

_canonical = msgspec.json.Encoder(order="sorted")


def run_id_for_key(workflow_id: str, idempotency_key: str) -> str:
    """Return the run id an idempotency key stands for: uuid5 of workflow id and key.

    A newline separates the two: it can appear in neither a workflow id nor (by the API's
    rules) a key, so no two (workflow, key) pairs share an id.
    """
    return str(uuid.uuid5(NAMESPACE, f"{workflow_id}\n{idempotency_key}"))


@lru_cache(maxsize=4096)
def workflow_aggregate_id(workflow_id: str) -> uuid.UUID:
    """Return the aggregate id under which a workflow's versions are recorded."""
    return uuid.uuid5(NAMESPACE, f"workflow\n{workflow_id}")


def request_hash(workflow_id: str, workflow_version: int | None, parameters: Any) -> str:
    """Return a digest of what a run request asks for, to tell a repeat from a conflict."""
    body = _canonical.encode(
        {"workflowId": workflow_id, "version": workflow_version, "parameters": parameters}
    )
    return hashlib.sha256(body).hexdigest()
