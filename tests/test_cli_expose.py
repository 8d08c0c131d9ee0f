"""`flowweaver serve`'s safe defaults and HTTPS, run as a subprocess the way a user runs it.

Unset ``--auth`` is ``none`` on loopback and a refusal to start elsewhere; ``--auth none`` on a
public host starts with a warning; ``--tls-cert/--tls-key`` serve HTTPS, checked with a
self-signed certificate made here and a client that trusts it (SSE included).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flowweaver.api.examples import EXAMPLE_WORKFLOW
from tests.cli_in_process import fw_in_process
from tests.serve_process import ServeProcess

FLOWWEAVER = str(Path(sys.executable).parent / "flowweaver")
JSON_TYPE = {"Content-Type": "application/json"}


def _serve(*args: str, cwd: Path, in_process: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``flowweaver serve ARGS``, which must exit by itself (a refusal) within 30 s; in
    this process (tests/cli_in_process.py) when ``in_process``, which spares the start-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    if in_process:
        command = ["serve", "--store", "sqlite:///never.db", "--port", "0", *args]
        return fw_in_process(*command, cwd=cwd, env=env)
    return subprocess.run(
        [FLOWWEAVER, "serve", "--store", "sqlite:///never.db", "--port", "0", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The command exited ``code`` with one error line holding ``words``, and opened no store."""
    assert result.returncode == code, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("flowweaver: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in last, last


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.5", "example.com"])  # noqa: S104
def test_a_public_host_without_auth_refuses_to_start(tmp_path: Path, host: str) -> None:
    """--host that is not loopback, --auth unset: one line naming --auth, exit 2, no store.
    (A real process for the first host, the others in this one.)"""
    result = _serve("--host", host, cwd=tmp_path, in_process=host != "0.0.0.0")  # noqa: S104
    _refused(result, 2, "not a loopback address", "--auth token", "--auth none")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "never.db").exists()


def test_the_variable_counts_as_said(tmp_path: Path) -> None:
    """FLOWWEAVER_AUTH=bogus is a usage error naming the variable, before anything opens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWWEAVER_")}
    env["FLOWWEAVER_AUTH"] = "bogus"
    result = subprocess.run(
        [FLOWWEAVER, "serve", "--store", "sqlite:///never.db", "--host", "0.0.0.0"],  # noqa: S104
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _refused(result, 2, "FLOWWEAVER_AUTH", "bogus")
    assert not (tmp_path / "never.db").exists()


def _logged(server: ServeProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in server.drain() if line.get("event") == event]


def test_explicit_auth_none_on_a_public_host_starts_with_a_warning(tmp_path: Path) -> None:
    """--host 0.0.0.0 --auth none serves, and says at start that anyone may act on every run."""
    server = ServeProcess(
        "sqlite:///fw.db",
        tmp_path,
        args=["--host", "0.0.0.0", "--auth", "none"],  # noqa: S104
    )
    try:
        warning = server.wait_logged("auth_disabled")
        server.wait_started()
        assert warning["level"] == "warning"
        assert warning["host"] == "0.0.0.0"  # noqa: S104
        assert "every run" in warning["detail"]
        assert server.request("GET", "/healthz")[0] == 200
        assert server.stop() == 0
    finally:
        server.close()


def test_loopback_serves_without_auth_and_without_a_warning(tmp_path: Path) -> None:
    """On 127.0.0.1 unset --auth is none, and nothing warns about it."""
    server = ServeProcess("sqlite:///fw.db", tmp_path)
    try:
        server.wait_started()
        assert server.request("POST", "/workflows", EXAMPLE_WORKFLOW)[0] == 201
        assert server.stop() == 0
        assert _logged(server, "auth_disabled") == []
    finally:
        server.close()


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def test_tls_flags_are_checked_before_anything_opens(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """One of the two is exit 2; an unreadable file or a pair that does not match is exit 1.
    (A real process for the first refusal, the others in this one.)"""
    cert, key = certificate
    _refused(_serve("--tls-cert", str(cert), cwd=tmp_path), 2, "--tls-cert needs --tls-key")

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        return _serve(*args, cwd=tmp_path, in_process=True)

    _refused(here("--tls-key", str(key)), 2, "--tls-key needs --tls-cert")
    missing = here("--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key))
    _refused(missing, 1, "cannot read --tls-cert", "nope.pem")
    swapped = here("--tls-cert", str(key), "--tls-key", str(cert))
    _refused(swapped, 1, "not a PEM certificate chain and its unencrypted private key")
    other = tmp_path / "other-key.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-out", str(other)],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    mismatched = here("--tls-cert", str(cert), "--tls-key", str(other))
    _refused(mismatched, 1, "not a PEM certificate chain")
    assert not (tmp_path / "never.db").exists()


@pytest.fixture
def tls_server(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[ServeProcess]:
    """`flowweaver serve` over HTTPS on loopback with the self-signed certificate."""
    cert, key = certificate
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--header-timeout", "1"]
    server = ServeProcess("sqlite:///fw.db", tmp_path, args=args)
    try:
        started = server.wait_logged("server_started")
        server.port = int(started["port"])
        assert started["url"].startswith("https://")
        yield server
    finally:
        server.close()


def test_https_serves_the_api_and_sse_to_a_client_that_trusts_the_certificate(
    tls_server: ServeProcess, certificate: tuple[Path, Path]
) -> None:
    """Register, start, follow the run's SSE stream to RunCompleted, all over TLS."""
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    base = f"https://localhost:{tls_server.port}"

    async def main() -> list[str]:
        connector = aiohttp.TCPConnector(ssl=trust)
        async with aiohttp.ClientSession(connector=connector) as s:
            async with s.post(f"{base}/workflows", json=EXAMPLE_WORKFLOW) as r:
                assert r.status == 201
            async with s.post(f"{base}/runs", json={"workflowId": EXAMPLE_WORKFLOW["id"]}) as r:
                assert r.status == 201
                run_id = (await r.json())["id"]
            names = []
            async with s.get(f"{base}/events/{run_id}") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/event-stream")
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        names.append(line.removeprefix("event: "))
            async with s.get(f"https://127.0.0.1:{tls_server.port}/healthz") as r:
                assert r.status == 200
                assert r.headers["Server"] == "flowweaver"
            return names

    names = asyncio.run(main())
    assert names[0] == "RunStarted"
    assert names[-1] == "RunCompleted"


def test_https_refuses_clients_that_do_not_trust_it_and_plain_http(
    tls_server: ServeProcess,
) -> None:
    """A client with the system's trust store fails verification; plain HTTP gets no answer."""
    port = tls_server.port

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"https://localhost:{port}/healthz")
            with pytest.raises(aiohttp.ClientError):
                await s.get(f"http://127.0.0.1:{port}/healthz")

    asyncio.run(main())
    assert tls_server.process.poll() is None  # it still serves


def test_a_stalled_tls_handshake_is_cut_after_the_header_timeout(tls_server: ServeProcess) -> None:
    """A connection that never starts its handshake is closed after --header-timeout (1 s)."""
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=15) as sock:
        began = time.monotonic()
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        assert time.monotonic() - began < 10
