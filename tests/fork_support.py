"""What the fork tests of the engine and of the API share: a workflow and counting handlers."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from flowweaver.handlers import HandlerRegistry

# a -> b -> c, and a -> d: b fails while Calls.failing is set.
FORKABLE: dict[str, Any] = {
    "id": "forkable",
    "tasks": [
        {"id": "a", "handler": "count", "inputs": {"value": "$.params.v"}},
        {"id": "b", "handler": "flaky", "dependencies": ["a"], "inputs": {"x": "$.result.value"}},
        {
            "id": "c",
            "handler": "count",
            "dependencies": ["b"],
            "inputs": {"value": "$.result.x", "p": "$.params.p"},
        },
        {"id": "d", "handler": "count", "dependencies": ["a"], "inputs": {"value": 1}},
    ],
}


class Calls:
    """Counts handler calls by task id; ``flaky`` fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.by_task: Counter[str] = Counter()
        self.failing = threading.Event()
        self.failing.set()
        self._lock = threading.Lock()

    def register(self, registry: HandlerRegistry) -> None:
        """Register ``count`` and ``flaky`` on ``registry``."""
        registry.register("count", self._count)
        registry.register("flaky", self._flaky)

    def _count(self, inputs: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self.by_task[context.task_id] += 1
        return inputs

    def _flaky(self, inputs: dict[str, Any], context: Any) -> Any:
        self._count(inputs, context)
        if self.failing.is_set():
            raise RuntimeError("not today")
        return inputs
