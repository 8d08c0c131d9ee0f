"""What one hand-off between two Python threads costs here; prints one JSON line.

Two threads pass a token back and forth through two queues, the way the engine hands a job
to a worker and an outcome back to a run actor: each pass wakes the other thread (a context
switch) and hands it the GIL. Reported per hand-off: CPU time of the process (both threads)
and wall time. engine_bench.py counts the context switches per run (``switches``); this is
the price of each.

    python benchmarks/handoff_bench.py [--passes 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import threading
import time


def handoffs(passes: int) -> dict[str, float]:
    there: queue.SimpleQueue[int] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        for _ in range(passes):
            back.put(there.get())

    thread = threading.Thread(target=echo)
    thread.start()
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(passes):
        there.put(n)
        back.get()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    thread.join()
    return {"cpu_us": cpu * 1e6 / (2 * passes), "wall_us": wall * 1e6 / (2 * passes)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--passes", type=int, default=20000, help="round trips per sample")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2,000 round trips")
    args = parser.parse_args(argv)
    repeats, passes = (1, 2000) if args.quick else (args.repeats, args.passes)
    samples = [handoffs(passes) for _ in range(repeats)]
    line = {
        "benchmark": "thread_handoff",
        "repeats": repeats,
        "params": {"round_trips": passes},
        "median": {k: round(statistics.median(s[k] for s in samples), 2) for k in samples[0]},
        "samples": [{k: round(v, 2) for k, v in s.items()} for s in samples],
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
