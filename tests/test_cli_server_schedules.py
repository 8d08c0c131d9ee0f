"""`flowweaver schedules ...` and `flowweaver signal ...` with ``--server`` against a real
server on loopback: the answers of the store commands, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from flowweaver.client import Client
from tests.cli_in_process import fw_in_process
from tests.client.support import CHAIN, chain, free_port, serving
from tests.client.test_client_schedules import NEVER_SOON, RELEASE
from tests.test_cli import _env, fw
from tests.test_cli_server import _lines, _one_line_error

MISSING = "00000000-0000-4000-8000-000000000000"


def test_schedule_commands_drive_a_server(tmp_path: Path) -> None:
    """create (then saved), list, show, pause, resume, trigger (the server starts the run),
    delete through --server; the store commands see the same schedule; errors are one line.
    The first create and the last command are real processes; the others run in this one."""
    store = f"sqlite:///{tmp_path / 's.db'}"
    with serving(store, tmp_path) as server:
        url = f"http://127.0.0.1:{server.port}"
        env = _env(FLOWWEAVER_SERVER=url)

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return fw_in_process(*args, cwd=tmp_path, env=env)

        with Client(url) as client:
            client.register_workflow(chain(1, 0.01))
        create = ["schedules", "create", "nightly", "--workflow", CHAIN, "--cron", NEVER_SOON]
        made = fw(
            *create, "--timezone", "Europe/Berlin", "--params", '{"n": 1}', cwd=tmp_path, env=env
        )
        assert made.stdout == "schedule 'nightly' created\n", made.stderr
        again = cli(*create, "--timezone", "Europe/Berlin", "--params", '{"n": 1}', "--json")
        assert json.loads(again.stdout)["version"] == 1
        assert cli(*create, "--paused").stdout == "schedule 'nightly' saved\n"
        [listed] = _lines(cli("schedules", "list", "--json").stdout)
        assert (listed["id"], listed["timezone"], listed["paused"]) == ("nightly", "UTC", True)
        table = cli("schedules", "list").stdout.splitlines()
        assert table[0].startswith("ID") and "paused" in table[1]
        shown = json.loads(cli("schedules", "show", "nightly", "--json").stdout)
        assert (shown["version"], len(shown["nextFireTimes"])) == (2, 5)
        assert "next fires:" in cli("schedules", "show", "nightly").stdout
        resumed = cli("schedules", "resume", "nightly", "--reason", "go")
        assert resumed.stdout == "schedule 'nightly' resumed\n", resumed.stderr
        assert json.loads(cli("schedules", "pause", "nightly", "--json").stdout)["paused"]
        assert cli("schedules", "resume", "nightly").returncode == 0

        fired = json.loads(cli("schedules", "trigger", "nightly", "--json").stdout)
        assert fired["scheduleId"] == "nightly"
        with Client(url) as client:
            assert [e.type for e in client.events(fired["runId"])][-1] == "RunCompleted"
        line = cli("schedules", "trigger", "nightly").stdout
        assert line.startswith("schedule 'nightly' fired: run "), line

        # The store commands see what the server stored, and the server what they store.
        on_store = _env(FLOWWEAVER_STORE=store)
        paused = fw_in_process(
            "schedules", "pause", "nightly", "--json", cwd=tmp_path, env=on_store
        )
        assert json.loads(paused.stdout)["paused"], paused.stderr
        assert _lines(cli("schedules", "list", "--json").stdout)[0]["paused"]
        assert _lines(cli("schedules", "list", "--json").stdout)[0]["fired"] == 2

        bad_cron = cli("schedules", "create", "x", "--workflow", CHAIN, "--cron", "61 * * * *")
        assert "$.cron" in _one_line_error(bad_cron)
        bad_params = cli(*create, "--params", "[1]")
        assert "--params" in _one_line_error(bad_params)
        assert cli("schedules", "delete", "nightly").stdout == "schedule 'nightly' deleted\n"
        assert "nightly" in _one_line_error(cli("schedules", "show", "nightly"))
        assert "nightly" in _one_line_error(cli("schedules", "delete", "nightly"))
        assert cli("schedules", "list", "--json").stdout == ""
    down = fw("schedules", "list", "--server", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert "connection refused" in _one_line_error(down)


def test_signal_command_drives_a_server(tmp_path: Path) -> None:
    """`signal RUN NAME --payload JSON --server URL` completes the waiting task; a bad name is
    a usage error (2) sent nowhere; an unknown run or a second signal is one line, exit 1.
    The first signal is a real process; the other commands run in this one."""
    store = f"sqlite:///{tmp_path / 's.db'}"
    with serving(store, tmp_path) as server:
        url = f"http://127.0.0.1:{server.port}"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return fw_in_process(*args, "--server", url, cwd=tmp_path)

        with Client(url) as client:
            client.register_workflow(RELEASE)
            run_id = client.start_run("release").id
            payload = ["--payload", '{"approved": true}']
            done = fw(
                "signal", run_id, "approval", *payload, "--json", "--server", url, cwd=tmp_path
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["id"] == run_id
            assert [e.type for e in client.events(run_id)][-1] == "RunCompleted"
            approve = next(t for t in client.get_run(run_id).tasks if t.id == "approve")
            assert approve.output == {"result": {"approved": True}}
            other = client.start_run("release").id
        plain = cli("signal", other, "approval")
        assert plain.stdout.startswith(f"run {other} "), plain.stderr
        assert "signal" in _one_line_error(cli("signal", other, "approval"))
        assert "bad name" in _one_line_error(cli("signal", other, "bad name"), code=2)
        assert "--payload" in _one_line_error(cli("signal", other, "x", "--payload", "{"), code=2)
        assert MISSING in _one_line_error(cli("signal", MISSING, "approval"))
