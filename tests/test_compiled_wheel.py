"""The compiled wheel, as a user installs it: ``TRIOSERVE_COMPILE=1 pip wheel .`` through
``hatch_build.py``, unpacked, then run as ``python -m trioserve`` serving an app and a file.

The suite's compiled run (``.ci/run``, ``nox -s compiled``) compiles in place with
``scripts/compile.py``; this test covers the other way there, the build hook and what the wheel
carries. It builds for about a minute (mypy into pip's isolated build environment, then mypyc
and the C compiler), hence ``slow``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._helpers import ServerProcess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
COMPILED = (
    "trioserve/_h11/_fast",
    "trioserve/_h11/_connection",
    "trioserve/_http/_cycle",
    "trioserve/_readiness",
    "trioserve/_transport",
)

APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"compiled " + scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "TRIOSERVE_COMPILE": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [built] = out.glob("trioserve-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked: what pip would put in site-packages (both are pure files)."""
    into = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


@pytest.fixture
def served(site: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "wheel_app.py").write_text(APP)
    # PYTHONPATH puts the unpacked wheel ahead of this checkout's editable install; the cwd
    # (sys.path[0] of `python -m`) holds the app and no trioserve.
    server = ServerProcess.start(
        "wheel_app:app", "--no-access-log", cwd=tmp_path, env={"PYTHONPATH": str(site)}
    )
    try:
        yield server
    finally:
        server.stop(2)


def test_the_wheel_is_platform_specific_and_carries_the_extension_modules(wheel: Path) -> None:
    assert "-cp3" in wheel.name
    assert not wheel.name.endswith("-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for module in COMPILED:
        assert any(n.startswith(module + ".") and n.endswith(".so") for n in names), module
        assert module + ".py" in names  # the source stays beside it
    # mypyc's shared runtime, a top-level module named after the group's hash
    assert any(n.endswith(".so") and "__mypyc" in n and "/" not in n for n in names)


def test_the_installed_wheel_runs_its_compiled_modules(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(site)}
    version = subprocess.run(
        [sys.executable, "-m", "trioserve", "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert "HTTP/1.1 request path compiled with mypyc" in version.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import trioserve._h11._fast as m; print(m.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(site))
    assert where.stdout.strip().endswith(".so")


def test_the_compiled_server_answers_keep_alive_requests(served: ServerProcess) -> None:
    streams = []
    with httpx.Client(base_url=served.url, timeout=10) as client:
        for path in ("/a", "/b", "/c"):
            response = client.get(path)
            streams.append(response.extensions["network_stream"])
            assert response.status_code == 200
            assert response.text == f"compiled {path}"
            assert response.headers["content-type"] == "text/plain"
            assert "GMT" in response.headers["date"]
        assert all(stream is streams[0] for stream in streams)  # one kept-alive connection
    # a request refused by the compiled protocol's rules (httpx would not send it)
    url = httpx.URL(served.url)
    with socket.create_connection((url.host, url.port), timeout=10) as raw:
        raw.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):  # the server closes after refusing
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close\r\n" in answer.lower()
