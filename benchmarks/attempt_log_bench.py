"""What failure detail costs per attempt, without an engine; prints one JSON line per result.

setup_nothing_logged: give an attempt its ``context.log`` and collect its (no) lines, as the
                      worker does for every attempt: microseconds per attempt.
log_line:             one ``context.log.info("step", i=..., rows=...)`` call, kept and logged
                      (the normal log filtered at WARNING, as in engine_bench.py): microseconds.
traceback:            the traceback of a handler failure 20 frames deep: microseconds.

    python benchmarks/attempt_log_bench.py [--repeats 5] [--quick]

Each figure is the median of --repeats timings, each the best of its loops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

from flowweaver.engine import pool
from flowweaver.engine.detail import AttemptLog, LogCapture, handler_traceback
from flowweaver.observability import configure_logging

CONTEXT = {"run_id": "r", "task_id": "t", "attempt": 1}


def setup_nothing_logged() -> None:
    capture = LogCapture()
    AttemptLog(capture, pool.log, CONTEXT)
    capture.lines()


def _logger() -> Callable[[], None]:
    state = {"capture": LogCapture(), "n": 0}
    log = AttemptLog(state["capture"], pool.log, CONTEXT)

    def log_line() -> None:
        state["n"] += 1
        if state["n"] % 100 == 0:  # stay under the line bound, as one attempt would
            log._capture = LogCapture()
        log.info("step", i=state["n"], rows=[1, 2, 3])

    return log_line


def _deep(n: int) -> Any:
    if n == 0:
        raise ValueError("deep failure")
    return _deep(n - 1)


def _failure() -> BaseException:
    try:
        _deep(20)
    except ValueError as e:
        return e
    raise AssertionError("unreachable")


def traceback_of_failure() -> None:
    handler_traceback(ERROR, pool._ENGINE_CODES, pool._ENGINE_DIRS)


ERROR = _failure()


def measure(name: str, func: Callable[[], None], loops: int, repeats: int) -> None:
    samples = [
        min(timeit.repeat(func, number=loops, repeat=3)) / loops * 1e6 for _ in range(repeats)
    ]
    line = {
        "benchmark": name,
        "repeats": repeats,
        "params": {"loops": loops},
        "median": {"us": round(statistics.median(samples), 3)},
        "samples": [round(s, 3) for s in samples],
    }
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repeat, fewer loops")
    args = parser.parse_args(argv)
    configure_logging(json=True, level="WARNING")
    repeats = 1 if args.quick else args.repeats
    scale = 10 if args.quick else 1
    measure("setup_nothing_logged", setup_nothing_logged, 100_000 // scale, repeats)
    measure("log_line", _logger(), 20_000 // scale, repeats)
    measure("traceback", traceback_of_failure, 2_000 // scale, repeats)


if __name__ == "__main__":
    sys.exit(main())
