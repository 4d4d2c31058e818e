"""--reload: a real project edited under a running ``python -m trioserve --reload``."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from trioserve._cli import main
from trioserve._reload import ReloadSettings, _matches

from ._helpers import ServerProcess, wait_for

APP = """
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"{text}"}})
"""


def write_app(project: Path, text: str) -> None:
    (project / "hello.py").write_text(APP.format(text=text))


def body(url: str) -> str:
    return httpx.get(url, headers={"Connection": "close"}, timeout=10).text


class Poller:
    """A client GETting over fresh connections throughout, recording every failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: list[BaseException] = []
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                body(self.url)
            except httpx.HTTPError as exc:
                self.errors.append(exc)
            else:
                self.answers += 1

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_edits_are_served_and_a_broken_edit_waits_for_the_next(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    server = ServerProcess.start("--reload", "--no-access-log", "hello:app", cwd=tmp_path)
    try:
        assert "restarted on changes" in server.stderr
        assert body(server.url) == "one"
        with Poller(server.url) as poller:
            write_app(tmp_path, "two")
            server.wait_for_line(r"Changed: hello\.py; restarting")
            wait_for(lambda: body(server.url) == "two")

            (tmp_path / "hello.py").write_text("def broken(:\n")
            server.wait_for_line(r"Changed: hello\.py", count=2)
            # The traceback names the file and the line; the previous version goes on serving.
            server.wait_for_line(r"SyntaxError")
            server.wait_for_line(r"failed to start .*previous version goes on serving")
            assert 'hello.py", line 1' in server.stderr
            assert body(server.url) == "two"

            write_app(tmp_path, "three")
            server.wait_for_line(r"Changed: hello\.py", count=3)
            wait_for(lambda: body(server.url) == "three")
        # No refused or dropped connection while three processes came and went.
        assert poller.errors == []
        assert poller.answers > 0
        status, _ = server.stop(signal.SIGINT)
        assert status == 0
    finally:
        server.kill()


def test_an_app_broken_at_start_is_served_once_fixed(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("raise RuntimeError('not yet')\n")
    server = ServerProcess.start("--reload", "--no-access-log", "hello:app", cwd=tmp_path)
    try:
        server.wait_for_line(r"failed to start .*nothing is serving")
        assert "RuntimeError: not yet" in server.stderr
        write_app(tmp_path, "fixed")
        wait_for(lambda: body(server.url) == "fixed")
    finally:
        server.kill()


def test_only_matching_files_restart(tmp_path: Path) -> None:
    write_app(tmp_path, "one")
    server = ServerProcess.start(
        "--reload",
        "--reload-include",
        "*.txt",
        "--reload-exclude",
        "ignored/*",
        "--no-access-log",
        "hello:app",
        cwd=tmp_path,
    )
    try:
        (tmp_path / "ignored").mkdir()
        (tmp_path / "ignored" / "a.txt").write_text("x")
        write_app(tmp_path, "two")  # *.py is not included now
        (tmp_path / "notes.txt").write_text("x")
        line = server.wait_for_line(r"Changed: (.*); restarting").group(1)
        assert line == "notes.txt"
    finally:
        server.kill()


def test_patterns_match_names_and_relative_paths() -> None:
    roots = ["/p"]
    assert _matches("/p/app.py", roots, ["*.py"])
    assert _matches("/p/sub/app.py", roots, ["sub/*"])
    assert not _matches("/p/app.pyc", roots, ["*.py"])
    assert ReloadSettings(dirs=(".",)).include == ("*.py",)


def test_reload_with_workers_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--reload", "--workers", "2", "--port", "0"]) == 2
    assert "--reload runs one process: it cannot be combined with --workers" in (
        capsys.readouterr().err
    )


def test_reload_without_watchfiles_says_what_to_install(tmp_path: Path) -> None:
    # A real process whose import of watchfiles fails (a stub package that raises).
    stub = tmp_path / "stub"
    (stub / "watchfiles").mkdir(parents=True)
    (stub / "watchfiles" / "__init__.py").write_text("raise ImportError('absent')\n")
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "--reload", "--port", "0"],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{stub}:{Path(__file__).parents[1]}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "trioserve: error: --reload needs watchfiles: pip install 'trioserve[reload]'"
    )
