"""The web UI on a long run: the scrubber's step time, the page's load, the bytes it ships.

    .venv/bin/python benchmarks/ui_bench.py [--quick] [--events 20000] [--steps 200]

A run of 1000 independent tasks that fail and retry until their last attempt completes (about
``--events`` events; :func:`travel_bench.long_run`) is stored in a SQLite file, which a real
``flowweaver serve`` serves; Debian's chromium (headless, through Playwright) opens the run's
page. Each line is ``{"name", "value", "unit", "params", "p95", "max"}``:

- ``ui_load``: from navigation until the page shows the run's last event (every event read
  in pages of 1000, the DAG of 1000 tasks drawn), ms;
- ``ui_scrub_step``: one step of the scrubber by keyboard (ArrowLeft), from the key's input
  event until the DAG, the timeline, the task detail and the event list show that event: the
  statuses are folded in the page from the events (a checkpoint every 250 events) and only the
  nodes that changed are touched (measured in the page, ``performance.now()``), ms;
- ``ui_scrub_step_painted``: the same until the frame after it was painted
  (``requestAnimationFrame`` then a task), ms;
- ``ui_scrub_jump_painted``: a jump to a random event (dragging the slider), until painted, ms;
- the task detail and the run's other fields follow with ``GET /runs/{id}?at=N``
  (``data-detail-ms`` in the page; ``--debug`` prints it per step).
- ``ui_weight``: the bytes of JavaScript and CSS under ``flowweaver/api/ui`` (uncompressed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from travel_bench import build

from flowweaver.store import SQLiteEventStore
from tests.serve_process import ServeProcess

CHROMIUM = "/usr/bin/chromium"
UI = Path(__file__).parents[1] / "flowweaver" / "api" / "ui"


def emit(name: str, values: list[float], unit: str, params: dict[str, Any]) -> None:
    ordered = sorted(values)
    line = {
        "name": name,
        "value": round(statistics.median(ordered), 1),
        "unit": unit,
        "params": params,
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max": round(ordered[-1], 1),
    }
    print(json.dumps(line), flush=True)


def weight() -> int:
    return sum(f.stat().st_size for f in UI.iterdir() if f.suffix in (".js", ".css"))


def browse(port: int, run_id: str, count: int, steps: int, *, debug: bool) -> None:
    """Open the run's page in chromium; time its load, scrubber steps and jumps."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    params = {"tasks": 1000, "events": count}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(120_000)
        began = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/ui/#/run/{run_id}")
        page.wait_for_selector(f'main[data-shown-at="{count}"]')
        emit("ui_load", [(time.perf_counter() - began) * 1000], "ms", params)
        page.focus("#scrubber")
        step_times: list[float] = []
        paint_times: list[float] = []
        for n in range(count - 1, count - 1 - steps, -1):
            page.keyboard.press("ArrowLeft")
            page.wait_for_selector(f'main[data-painted-at="{n}"]')
            step_times.append(float(page.get_attribute("main", "data-render-ms") or 0))
            paint_times.append(float(page.get_attribute("main", "data-paint-ms") or 0))
            if debug:
                print(page.get_attribute("main", "data-detail-ms"), step_times[-1])
        emit("ui_scrub_step", step_times, "ms", params)
        emit("ui_scrub_step_painted", paint_times, "ms", params)
        rng = random.Random(15)
        jump_times: list[float] = []
        for _ in range(steps):
            n = rng.randint(1, count)
            if n == int(page.get_attribute("main", "data-shown-at") or 0):
                continue
            page.evaluate(
                "n => { const s = document.querySelector('#scrubber'); s.value = n;"
                " s.dispatchEvent(new Event('input')); }",
                n,
            )
            page.wait_for_selector(f'main[data-painted-at="{n}"]')
            jump_times.append(float(page.get_attribute("main", "data-paint-ms") or 0))
        emit("ui_scrub_jump_painted", jump_times, "ms", params)
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, few steps")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--debug", action="store_true", help="print each step's fetch and draw ms")
    args = parser.parse_args(argv)
    events = 2_000 if args.quick else args.events
    steps = 20 if args.quick else args.steps
    print(json.dumps({"name": "ui_weight", "value": weight(), "unit": "bytes"}), flush=True)
    if importlib.util.find_spec("playwright") is None:
        print("playwright is not installed: no browser timings", file=sys.stderr)
        return
    if not Path(CHROMIUM).exists():
        print(f"no browser at {CHROMIUM}: no browser timings", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ui-bench.db"
        store = SQLiteEventStore(str(path))
        run_id, count = build(store, events)
        store.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ServeProcess(f"sqlite:///{path}", Path(tmp), args=("--port", str(port)))
        try:
            server.wait_started()
            browse(port, run_id, count, steps, debug=args.debug)
        finally:
            server.close()


if __name__ == "__main__":
    main()
