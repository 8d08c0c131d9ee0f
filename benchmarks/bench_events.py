"""Events for store benchmarks: runs of independent no-op tasks, shared by the store scripts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from flowweaver.domain.events import RunEvent, RunStarted, TaskCompleted, TaskScheduled, TaskStarted
from flowweaver.domain.spec import TaskSpec, WorkflowSpec
from flowweaver.ports import Append

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TASKS = 33  # RunStarted + 3 events per task = 100 events per run


def run_events(tasks: int = TASKS) -> list[RunEvent]:
    """Return the events of a run of independent no-op tasks that all completed."""
    spec = WorkflowSpec(
        id="bench", tasks=tuple(TaskSpec(id=f"t{i}", handler="noop") for i in range(tasks))
    )
    events: list[RunEvent] = [
        RunStarted(timestamp=NOW, workflow_id="bench", workflow_version=1, definition=spec)
    ]
    for i in range(tasks):
        task = f"t{i}"
        events += [
            TaskScheduled(timestamp=NOW, task_id=task, attempt=1, inputs={"n": i}),
            TaskStarted(timestamp=NOW, task_id=task, attempt=1, worker="w1"),
            TaskCompleted(timestamp=NOW, task_id=task, attempt=1, output={"n": i}, duration_ms=0.1),
        ]
    return events


EVENTS = run_events()


def new_runs(runs: int, events_per_run: int) -> list[Append]:
    """Return one append for each of ``runs`` new runs, of their first events."""
    return [
        Append(run_id=str(uuid.uuid4()), expected_version=0, events=EVENTS[:events_per_run])
        for _ in range(runs)
    ]
