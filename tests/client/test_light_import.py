"""The blocking client loads neither the server, the engine nor aiohttp."""

from __future__ import annotations

import subprocess
import sys


def test_the_blocking_client_loads_no_server_code() -> None:
    """`flowweaver.Client` imports the wire types, not aiohttp, pykka, eventsourcing or the app."""
    code = (
        "import sys, flowweaver\n"
        "flowweaver.Client\n"
        "heavy = ['aiohttp', 'pykka', 'eventsourcing', 'flowweaver.engine.engine',"
        " 'flowweaver.api.app', 'flowweaver.store']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
