"""Workflow builders, hypothesis strategies and a run simulator for tests.

The simulator drives a run through the domain commands in an order chosen by a list of
integers, the way an engine with workers, timers, cancels and crashes could, and records the
events each command decided together with a copy of the live state after it. Tests of the
domain and of every store check their invariants against it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, get_args

from hypothesis import strategies as st

from flowweaver.domain.events import INTERRUPTED, ErrorInfo, RunEvent
from flowweaver.domain.run import (
    RunState,
    interrupt_running,
    record_completed,
    record_failed,
    record_retry_due,
    record_started,
    request_cancel,
    settle,
    start_run,
)
from flowweaver.domain.spec import TriggerRule, WorkflowSpec, workflow_from_builtins

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""The moment simulated runs start; every step is one second later than the one before."""

ERROR_TYPES = ("ValueError", "Fatal", INTERRUPTED)
"""The error types simulated failures use; workflows from :func:`workflow_specs` treat
``Fatal`` as non-retryable."""


TRIGGER_RULES: tuple[TriggerRule, ...] = get_args(TriggerRule)
"""Every trigger rule a task may name."""


def workflow(*tasks: dict[str, Any], workflow_id: str = "wf", **extra: Any) -> WorkflowSpec:
    """Build and validate a workflow from task documents in wire form (camelCase keys).

    Raises:
        ValidationError: the document breaks a rule.
    """
    return workflow_from_builtins({"id": workflow_id, "tasks": list(tasks), **extra})


def task(task_id: str, *dependencies: str, handler: str = "noop", **extra: Any) -> dict[str, Any]:
    """Return one task document in wire form."""
    return {"id": task_id, "handler": handler, "dependencies": list(dependencies), **extra}


_retry_documents = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "maxAttempts": st.integers(1, 3),
            "initialDelay": st.sampled_from([0.0, 0.5, 2.0]),
            "backoffFactor": st.sampled_from([1.0, 2.0, 3.0]),
            "maxDelay": st.sampled_from([2.0, 10.0]),
            "nonRetryable": st.just(["Fatal"]),
        }
    ),
)
_input_documents: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.just({}),
    st.just({}),
    st.just({"literal": 1}),
    st.just({"whole": "$.tasks"}),
    st.just({"params": "$.params"}),
    st.just({"missing": "$.params.nowhere"}),  # matches nothing: the task fails at scheduling
)
_output_documents: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.just({}),
    st.just({}),
    st.just({"data": "$.result"}),
    st.just({"echo": "$.inputs"}),
    st.just({"missing": "$.result.nowhere"}),  # fails unless the result is a dict with it
)


@st.composite
def workflow_specs(
    draw: st.DrawFn, *, min_tasks: int = 1, max_tasks: int = 6, triggers: bool = True
) -> WorkflowSpec:
    """Draw a valid workflow: a random DAG whose edges point from earlier to later tasks.

    With ``triggers`` about half the tasks name a trigger rule (the rest take the default).
    """
    count = draw(st.integers(min_tasks, max_tasks))
    ids = [f"t{i}" for i in range(count)]
    tasks = []
    for index, task_id in enumerate(ids):
        deps = (
            draw(st.lists(st.sampled_from(ids[:index]), unique=True, max_size=3)) if index else []
        )
        document = task(task_id, *deps)
        retry = draw(_retry_documents)
        if retry is not None:
            document["retry"] = retry
        document["inputs"] = draw(_input_documents)
        document["outputs"] = draw(_output_documents)
        if triggers and draw(st.booleans()):
            document["trigger"] = draw(st.sampled_from(TRIGGER_RULES))
        tasks.append(document)
    return workflow(*tasks)


@st.composite
def dags(draw: st.DrawFn, *, max_nodes: int = 30) -> dict[str, tuple[str, ...]]:
    """Draw a random DAG as ``{node: dependencies}`` with node names in shuffled order."""
    count = draw(st.integers(1, max_nodes))
    names = draw(st.permutations([f"n{i}" for i in range(count)]))
    graph: dict[str, tuple[str, ...]] = {}
    for index, name in enumerate(names):
        earlier = names[:index]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=4)) if earlier else []
        graph[name] = tuple(deps)
    shuffled = draw(st.permutations(list(graph)))
    return {name: graph[name] for name in shuffled}


command_steps = st.lists(st.tuples(st.integers(0, 1023), st.integers(0, 1023)), max_size=60)
"""Strategy for the choices that drive :func:`simulate`: (which command, an argument)."""


@dataclass
class SimulatedRun:
    """What :func:`simulate` recorded.

    ``batches[i]`` holds the events decided by command ``i`` (the first is the start);
    ``checkpoints[i]`` is (how many events exist after command ``i``, a copy of the live state).
    """

    state: RunState
    batches: list[list[RunEvent]] = field(default_factory=list)
    checkpoints: list[tuple[int, RunState]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[RunEvent]:
        """Return every event in the order the commands decided them."""
        return [event for batch in self.batches for event in batch]


Command = Callable[[datetime], list[RunEvent]]


def simulate(
    spec: WorkflowSpec,
    steps: Sequence[tuple[int, int]],
    *,
    run_id: str = "run-1",
    parameters: dict[str, Any] | None = None,
    interruption_limit: int = 3,
    start: datetime = T0,
) -> SimulatedRun:
    """Start a run of ``spec`` and apply one command per step; see :class:`SimulatedRun`.

    Each step picks one of the commands the current state offers: one pick in 32 cancels the
    run, one in 32 crashes (every running attempt is interrupted); of the rest, three in four
    make progress (start or complete a task, a due retry) and the others choose among every
    command, including failing a task, settling, and a stale report for an attempt that is
    no longer current. ``arg`` shapes the details (the
    result, the error type, the jitter sample).
    """
    state, events = start_run(run_id, spec, 1, dict(parameters or {"x": 1}), start)
    run = SimulatedRun(state=state)
    run.batches.append(events)
    run.commands.append("start")
    run.checkpoints.append((len(events), copy.deepcopy(state)))
    total = len(events)
    for index, (pick, arg) in enumerate(steps):
        now = start + timedelta(seconds=index + 1)
        name, command = _choose(state, pick, arg, interruption_limit)
        decided = command(now)
        total += len(decided)
        run.batches.append(decided)
        run.commands.append(name)
        run.checkpoints.append((total, copy.deepcopy(state)))
    return run


def _choose(state: RunState, pick: int, arg: int, limit: int) -> tuple[str, Command]:
    if pick % 32 == 17:
        return "cancel", partial(request_cancel, state, f"reason {arg}")
    if pick % 32 == 18:
        return "crash", partial(interrupt_running, state, interruption_limit=limit)
    progress, others = _options(state, arg, limit)
    if progress and pick % 4 != 3:
        return progress[(pick // 32) % len(progress)]
    options = progress + others
    return options[(pick // 32) % len(options)]


def _options(
    state: RunState, arg: int, limit: int
) -> tuple[list[tuple[str, Command]], list[tuple[str, Command]]]:
    progress: list[tuple[str, Command]] = []
    failures: list[tuple[str, Command]] = []
    oddities: list[tuple[str, Command]] = []
    result: Any = [{"n": arg}, arg, {"n": arg, "result": [arg]}, None][arg % 4]
    error_type = ERROR_TYPES[arg % len(ERROR_TYPES)]
    error = ErrorInfo(type=error_type, message=f"boom {arg}", retryable=arg % 5 != 0)
    jitter = (arg % 21) / 10 - 1.0
    for t in state.tasks.values():
        tid, attempt = t.id, t.attempts
        if t.status == "running":
            complete = partial(record_completed, state, tid, attempt, result, float(arg))
            progress.append((f"complete {tid}", complete))
        if t.status == "scheduled":
            worker = f"worker-{arg % 3}"
            progress.append((f"start {tid}", partial(record_started, state, tid, attempt, worker)))
        if t.status == "waiting_retry":
            progress.append((f"retry {tid}", partial(record_retry_due, state, tid, attempt)))
        if t.status in ("scheduled", "running"):
            fail = partial(
                record_failed,
                state,
                tid,
                attempt,
                error,
                jitter_sample=jitter,
                interruption_limit=limit,
            )
            failures.append((f"fail {tid} with {error_type}", fail))
        if attempt >= 1:
            stale = partial(record_completed, state, tid, attempt - 1, result, 1.0)
            oddities.append((f"stale report {tid}", stale))
    oddities.append(("settle", partial(settle, state)))
    return progress, failures + oddities


__all__ = [
    "ERROR_TYPES",
    "T0",
    "TRIGGER_RULES",
    "SimulatedRun",
    "command_steps",
    "dags",
    "simulate",
    "task",
    "workflow",
    "workflow_specs",
]
