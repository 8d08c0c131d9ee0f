"""What changed in a run between two of its versions: the fields of the run and of each task.

Pure: two folded states in, a :class:`StateDiff` out, its values already JSON builtins
(datetimes as RFC 3339 text, nested Structs as objects) and its field names camelCase, as the
API shows a run. Used by ``GET /runs/{id}/diff`` and ``flowweaver diff`` alike.

Compared are the fields a reader of a run sees; the fold's bookkeeping (counts of unfinished
and running tasks, a task's unmet dependencies, whether an operator ordered its attempt) and
the pinned definition and the request's hash (set once by the first event; ``workflowId`` and
``workflowVersion`` show the definition) are left out. A task the older state does not have
yet (``from`` 0) is compared against a task that has not begun.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import to_builtins
from msgspec.structs import astuple

from flowweaver.domain.run import RunState, TaskState

RUN_FIELDS_LEFT_OUT = frozenset(
    {"id", "tasks", "definition", "request_hash", "unfinished", "running"}
)
TASK_FIELDS_LEFT_OUT = frozenset({"id", "waiting_for", "ordered", "elements"})
# ``elements``: a map task's elements change with the MapElement* events the diff lists; as
# a field, 10,000 of them twice over would not fit an answer.

Change = tuple[Any, Any]
"""A field's value at the older version and at the newer, as JSON builtins."""
Field = tuple[int, str]  # (index among the struct's fields, camelCase name)


class StateDiff(msgspec.Struct, frozen=True, kw_only=True):
    """The fields that differ: ``run`` by field name, ``tasks`` by task id then field name."""

    run: dict[str, Change]
    tasks: dict[str, dict[str, Change]]

    @property
    def empty(self) -> bool:
        """Say whether nothing differs."""
        return not self.run and not self.tasks


def _compared(struct: type[msgspec.Struct], left_out: frozenset[str]) -> tuple[Field, ...]:
    """Return (index, camelCase name) of every field of ``struct`` that is compared."""
    names = zip(struct.__struct_fields__, struct.__struct_encode_fields__, strict=True)
    return tuple((i, wire) for i, (name, wire) in enumerate(names) if name not in left_out)


_RUN_FIELDS = _compared(RunState, RUN_FIELDS_LEFT_OUT)
_TASK_FIELDS = _compared(TaskState, TASK_FIELDS_LEFT_OUT)


def _changes(
    old: msgspec.Struct, new: msgspec.Struct, fields: tuple[Field, ...]
) -> dict[str, Change]:
    # Both as tuples at once (in C), then compared by index: a diff across a long stretch of
    # a run compares every field of every task, and attribute lookups were most of its time.
    before = astuple(old)
    after = astuple(new)
    return {
        wire: (to_builtins(before[i]), to_builtins(after[i]))
        for i, wire in fields
        if before[i] != after[i]
    }


def diff_states(old: RunState, new: RunState) -> StateDiff:
    """Return the fields of the run, and of each task, that differ from ``old`` to ``new``.

    Tasks are listed in the workflow's order (as ``new`` holds them); one whose fields are
    all equal is left out.
    """
    tasks: dict[str, dict[str, Change]] = {}
    for task_id, after in new.tasks.items():
        before = old.tasks.get(task_id)
        if before is None:
            before = TaskState(id=task_id)
        elif before == after:
            continue  # one comparison in C for the common case: the task did not move
        changed = _changes(before, after, _TASK_FIELDS)
        if changed:
            tasks[task_id] = changed
    for task_id in old.tasks.keys() - new.tasks.keys():  # only if ``new`` is the older one
        changed = _changes(old.tasks[task_id], TaskState(id=task_id), _TASK_FIELDS)
        if changed:
            tasks[task_id] = changed
    return StateDiff(run=_changes(old, new, _RUN_FIELDS), tasks=tasks)
