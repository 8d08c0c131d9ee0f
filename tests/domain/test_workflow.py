"""The workflow registry aggregate: versions, and identical definitions recording nothing."""

from __future__ import annotations

from datetime import timedelta

from flowweaver.domain.workflow import WorkflowVersions, apply_registered, register
from flowweaver.testing.runs import T0, task, workflow


def registry() -> WorkflowVersions:
    return WorkflowVersions(workflow_id="wf")


def test_first_registration_is_version_one() -> None:
    """Registering a new workflow records WorkflowRegistered version 1 with the definition."""
    spec = workflow(task("a"))
    [event] = register(registry(), spec, T0)
    assert (event.workflow_id, event.version, event.definition, event.timestamp) == (
        "wf",
        1,
        spec,
        T0,
    )


def test_identical_definition_records_nothing() -> None:
    """Registering a definition equal to the latest version decides no event."""
    state = registry()
    for event in register(state, workflow(task("a", inputs={"x": 1, "y": 2})), T0):
        apply_registered(state, event)
    same_in_other_key_order = workflow(task("a", inputs={"y": 2, "x": 1}))
    assert register(state, same_in_other_key_order, T0 + timedelta(seconds=1)) == []
    assert len(state.versions) == 1


def test_changed_definition_increments_the_version() -> None:
    """Each different definition becomes the next version; older versions stay readable."""
    state = registry()
    specs = [workflow(task("a")), workflow(task("a"), task("b", "a")), workflow(task("a"))]
    for number, spec in enumerate(specs, start=1):
        [event] = register(state, spec, T0)
        assert event.version == number
        apply_registered(state, event)
    latest = state.latest
    assert latest is not None
    assert latest.version == 3
    first = state.get(1)
    assert first is not None
    assert first.definition == specs[0]
    assert state.get(0) is None
    assert state.get(4) is None


def test_empty_registry_has_no_latest() -> None:
    """Before any registration there is no latest version."""
    assert registry().latest is None
