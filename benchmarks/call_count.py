"""Python function calls of one W1 or W2 run, counted on every thread; prints one JSON line.

A count, not a timing: it does not move with the machine's load, so two builds compared with it
differ only by the work their code does (what a change adds to the hot path, call by call).

    python benchmarks/call_count.py [--workload w2] [--store memory] [--top 25]

W2 counts one run of 1,000 no-op tasks and a join; W1 counts 50 chain3 runs one after another.
An engine is started with the hook already set, so its threads (workers, run actors) are
counted too; a first small run warms the caches and is not counted.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from engine_bench import open_store, w1, w2

from flowweaver.engine import Engine
from flowweaver.handlers import builtin_registry
from flowweaver.observability import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workload", choices=("w1", "w2"), default="w2")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--top", type=int, default=25, help="the most called functions listed")
    parser.add_argument("--quick", action="store_true", help="the same (it is one run already)")
    args = parser.parse_args(argv)
    configure_logging(json=True, level="WARNING")
    counts: collections.Counter[str] = collections.Counter()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        elif event == "c_call":
            counts[f"C:{getattr(arg, '__qualname__', arg)}"] += 1

    with tempfile.TemporaryDirectory() as tmp:
        threading.setprofile(hook)
        sys.setprofile(hook)
        try:
            engine = Engine(
                open_store(args.store, Path(tmp)),
                handlers=builtin_registry(),
                workers=8,
                owns_store=True,
            )
            try:
                w2(engine, 10)  # warm up: registration, first decodes
                counts.clear()
                if args.workload == "w1":
                    w1(engine, 50)
                else:
                    w2(engine, 1000)
                counted = dict(counts)
            finally:
                engine.close()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    top = collections.Counter(counted).most_common(args.top)
    line = {
        "benchmark": f"call_count_{args.workload}",
        "store": args.store,
        "calls": sum(counted.values()),
        "top": [{"function": name, "calls": n} for name, n in top],
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
