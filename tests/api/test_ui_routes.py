"""The web UI's routes without a browser: files, headers, the redirect, GET /auth/whoami, and
the curl examples of api.md's "Web UI" section against a real `flowweaver serve`."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
from pathlib import Path

import pytest

from flowweaver.api.ui_routes import UI_DIR, load_assets
from tests.serve_process import ServeProcess
from tests.test_cli import fw

ROOT = Path(__file__).resolve().parents[2]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture
def server(tmp_path: Path) -> ServeProcess:
    s = ServeProcess("memory://", tmp_path)
    s.wait_started()
    yield s  # type: ignore[misc]
    s.close()


def test_every_file_of_the_ui_is_served_with_a_strict_csp(server: ServeProcess) -> None:
    """Each file the package ships answers 200 with its type, the CSP and an ETag; no other."""
    assets = load_assets()
    assert {"index.html", "app.js", "style.css", "run.js"} <= set(assets)
    for name, asset in assets.items():
        response = get(server.port, f"/ui/{name}")
        assert response.status == 200, name
        assert response.getheader("Content-Type", "").startswith(asset.content_type)
        csp = response.getheader("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        again = get(server.port, f"/ui/{name}", {"If-None-Match": asset.etag})
        assert again.status == 304
    page = get(server.port, "/ui/")
    assert page.status == 200 and page.getheader("Content-Type", "").startswith("text/html")
    assert get(server.port, "/ui/nothing.js").status == 404
    assert get(server.port, "/ui/../pyproject.toml").status == 404
    root = get(server.port, "/")
    assert (root.status, root.getheader("Location")) == (302, "/ui/")


def test_the_page_has_no_inline_script_and_names_only_local_files() -> None:
    """The CSP would block inline script anyway: the page has none, and loads nothing remote."""
    html = (UI_DIR / "index.html").read_text()
    assert re.findall(r"<script[^>]*>\s*</script>", html) == [
        '<script type="module" src="/ui/app.js"></script>'
    ]
    for name in (p.name for p in UI_DIR.iterdir()):
        text = (UI_DIR / name).read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


def test_whoami_without_and_with_auth(server: ServeProcess, tmp_path: Path) -> None:
    """Anonymous admin without auth; the token's name and role with it (401 without one)."""
    status, body = server.request("GET", "/auth/whoami")
    assert status == 200
    assert body == {"auth": "none", "name": "anonymous", "role": "admin", "logPosition": 0}
    store = f"sqlite:///{tmp_path / 'auth.db'}"
    done = fw(
        "tokens", "create", "--name", "eve", "--role", "reader", "--store", store, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    authed = ServeProcess(store, tmp_path, args=("--auth", "token"))
    try:
        authed.wait_started()
        assert get(authed.port, "/auth/whoami").status == 401
        assert get(authed.port, "/ui/").status == 200  # the sign-in page loads without a token
        connection = http.client.HTTPConnection("127.0.0.1", authed.port, timeout=30)
        connection.request("GET", "/auth/whoami", headers={"Authorization": f"Bearer {token}"})
        answer = json.loads(connection.getresponse().read())
        connection.close()
        assert (answer["auth"], answer["name"], answer["role"]) == ("token", "eve", "reader")
        assert answer["logPosition"] > 0  # the token's own event is in the log
    finally:
        authed.close()


def test_the_web_ui_examples_of_api_md_run_as_written(server: ServeProcess) -> None:
    """Each curl of api.md's "Web UI" section answers as the page says."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("\n## Web UI\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2
    outputs = []
    for block in blocks:
        command = block.replace("localhost:3000", f"127.0.0.1:{server.port}")
        done = subprocess.run(  # noqa: S602 - the documented shell command, as written
            command, shell=True, capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0].lower().startswith("content-security-policy: default-src 'none'")
    assert json.loads(outputs[1]) == {
        "auth": "none",
        "name": "anonymous",
        "role": "admin",
        "logPosition": 0,
    }
