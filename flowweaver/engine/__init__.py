"""The actor engine: run actors, the task-worker pool, timers and recovery."""

from flowweaver.engine.engine import Engine, RunHandle

__all__ = ["Engine", "RunHandle"]
