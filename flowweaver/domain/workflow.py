"""Workflow definitions as an event-sourced, versioned aggregate."""

from __future__ import annotations

from datetime import datetime

import msgspec

from flowweaver.domain.spec import WorkflowSpec, encode_workflow


class WorkflowRegistered(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type", tag=True
):
    """A new version of a workflow definition was recorded."""

    timestamp: datetime
    workflow_id: str
    version: int
    definition: WorkflowSpec


class WorkflowVersions(msgspec.Struct, kw_only=True):
    """Every recorded version of one workflow, oldest first (version i is at index i - 1)."""

    workflow_id: str
    versions: list[WorkflowRegistered] = []

    @property
    def latest(self) -> WorkflowRegistered | None:
        """Return the newest version, or None before the first registration."""
        return self.versions[-1] if self.versions else None

    def get(self, version: int) -> WorkflowRegistered | None:
        """Return one version, or None when it does not exist."""
        if 1 <= version <= len(self.versions):
            return self.versions[version - 1]
        return None


def apply_registered(state: WorkflowVersions, event: WorkflowRegistered) -> WorkflowVersions:
    """Fold one registration into the versions list."""
    state.versions.append(event)
    return state


def register(
    state: WorkflowVersions, spec: WorkflowSpec, now: datetime
) -> list[WorkflowRegistered]:
    """Decide a new version, or nothing when ``spec`` equals the latest version exactly."""
    latest = state.latest
    if latest is not None and encode_workflow(latest.definition) == encode_workflow(spec):
        return []
    version = len(state.versions) + 1
    return [
        WorkflowRegistered(timestamp=now, workflow_id=spec.id, version=version, definition=spec)
    ]
