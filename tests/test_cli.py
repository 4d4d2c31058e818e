"""The trioserve command: main(argv) in-process, and real runs of ``python -m trioserve``."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import sniffio

from trioserve._cli import main
from trioserve._http._access import needs_asyncio as _needs_asyncio

from ._helpers import ServerProcess


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "eighty"], "argument --port: invalid int value"),
        (["--port", "70000"], "port must be between 0 and 65535"),
        (["--keep-alive-timeout", "-1"], "must be a number of seconds >= 0"),
        (["--max-body-size", "lots"], "not a size in bytes"),
        (["--dotfiles", "maybe"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--root", "/no/such/dir"], "--root '/no/such/dir' is not a directory"),
        (["--static", "assets"], "expected PREFIX=DIR"),
        (["--static", "/assets=/no/such/dir"], "is not a directory"),
        (["no_such_module_xyz:app"], "could not import module 'no_such_module_xyz': not found"),
        (["json:no_such_attribute"], "module 'json' has no attribute 'no_such_attribute'"),
        (["os:getcwd"], "does not look like an ASGI application"),
        (["json:__name__"], "is a str, not an ASGI application"),
        (["not a spec"], "is not of the form MODULE:ATTRIBUTE"),
        (["json:dumps", "--root", "."], "use --static with APP"),
    ],
)
def test_bad_usage_is_one_clear_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, err = run_main(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1, err
    assert err.startswith("trioserve: error: ")
    assert message in err


def test_app_import_error_inside_the_module_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "broken_app_mod.py").write_text("import not_installed_dependency_xyz\n")
    status, err = run_main(capsys, "broken_app_mod:app", "--app-dir", str(tmp_path))
    assert status == 2
    assert "could not import module 'broken_app_mod'" in err
    assert "not_installed_dependency_xyz" in err


def test_an_app_failing_at_import_names_its_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "failing_mod.py").write_text("import json\n\nx = 1 / 0\n")
    status, err = run_main(capsys, "failing_mod:app", "--app-dir", str(tmp_path))
    assert status == 2
    assert err.count("\n") == 1, err
    assert f"ZeroDivisionError: division by zero ({tmp_path / 'failing_mod.py'}, line 3;" in err
    assert "--log-level debug shows the traceback" in err


def test_a_syntax_error_names_its_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "syntax_mod.py").write_text("x = 1\ndef f(:\n")
    status, err = run_main(capsys, "syntax_mod:app", "--app-dir", str(tmp_path))
    assert status == 2
    assert f"({tmp_path / 'syntax_mod.py'}, line 2;" in err


def test_at_debug_an_import_failure_prints_the_whole_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "deep_mod.py").write_text("def g():\n    raise KeyError('k')\n\ng()\n")
    status, err = run_main(
        capsys, "deep_mod:app", "--app-dir", str(tmp_path), "--log-level", "debug"
    )
    assert status == 2
    assert "Traceback (most recent call last):" in err
    assert 'deep_mod.py", line 4, in <module>' in err
    assert 'deep_mod.py", line 2, in g' in err
    assert err.rstrip().endswith("KeyError: 'k'")


ASYNCIO_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "http":
        asyncio.get_running_loop()
"""


def test_an_asyncio_only_app_gets_a_hint_naming_asyncio_app(tmp_path: Path) -> None:
    (tmp_path / "aio_only.py").write_text(ASYNCIO_APP)
    server = ServerProcess.start("aio_only:app", "--no-access-log", cwd=tmp_path)
    try:
        assert httpx.get(server.url, timeout=10).status_code == 500
        hint = server.wait_for_line(r"WARNING .*--asyncio-app").group(0)
        assert "The app seems to need asyncio: start trioserve with --asyncio-app" in hint
        assert server.stderr.index("no running event loop") < server.stderr.index(hint)
    finally:
        server.stop(signal.SIGTERM)


def test_an_ordinary_failure_gets_no_asyncio_hint(tmp_path: Path) -> None:
    (tmp_path / "plain_fail.py").write_text(
        "async def app(scope, receive, send):\n    raise RuntimeError('plain')\n"
    )
    server = ServerProcess.start("plain_fail:app", "--no-access-log", cwd=tmp_path)
    try:
        assert httpx.get(server.url, timeout=10).status_code == 500
        server.wait_for_line(r"RuntimeError: plain")
    finally:
        _, stderr = server.stop(signal.SIGTERM)
    assert "--asyncio-app" not in stderr


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise ValueError("while handling a request") from exc
    except ValueError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "needs"),
    [
        (sniffio.AsyncLibraryNotFoundError("unknown async library, or not in async context"), True),
        (RuntimeError("There is no current event loop in thread 'MainThread'."), True),
        (_wrapped(RuntimeError("no running event loop")), True),
        (ExceptionGroup("tasks", [KeyError("x"), RuntimeError("no running event loop")]), True),
        (
            TypeError(
                "trio.run received unrecognized yield message. Are you trying to use a "
                "library written for some other framework like asyncio?"
            ),
            True,
        ),
        (RuntimeError("plain"), False),
        (_wrapped(KeyError("event")), False),
    ],
)
def test_asyncio_only_failures_are_recognised(exc: BaseException, needs: bool) -> None:
    assert _needs_asyncio(exc) is needs


def test_address_in_use_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = run_main(capsys, "--port", str(port), "--root", ".")
    assert status == 1
    assert err == f"trioserve: error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--max-connections" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("trioserve ")
    # (Whether it says "compiled with mypyc" is checked by .ci/run after scripts/compile.py.)


def start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m trioserve``; return the process and the URL it announced."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioserve", "--port", "0", *args],
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    for _ in range(50):  # bounded: a handful of startup lines at most
        line = process.stderr.readline()
        if not line:
            break
        match = re.search(r"serving .* on (http://\S+) \(Ctrl-C to stop\)", line)
        if match:
            return process, match.group(1)
    process.kill()
    process.wait(10)
    raise AssertionError("trioserve did not announce its URL")


def stop(process: subprocess.Popen[str], *signals: signal.Signals) -> tuple[int, str]:
    for signum in signals:
        process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, err


def test_python_m_trioserve_serves_a_directory_and_stops_on_sigint(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi from disk\n")
    process, url = start(["--root", str(tmp_path), "--access-log"], cwd=tmp_path)
    try:
        response = httpx.get(url + "/hello.txt", timeout=10)
        assert response.status_code == 200
        assert response.text == "hi from disk\n"
        assert httpx.get(url + "/missing", timeout=10).status_code == 404
    finally:
        status, err = stop(process, signal.SIGINT)
    assert status == 0
    assert '"GET /hello.txt HTTP/1.1" 200 13' in err
    assert "Shutdown complete" in err
    assert "Traceback" not in err


def test_python_m_trioserve_serves_the_current_directory_by_default(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>home</h1>\n")
    process, url = start([], cwd=tmp_path)
    try:
        assert httpx.get(url + "/", timeout=10).text == "<h1>home</h1>\n"
    finally:
        status, _ = stop(process, signal.SIGTERM)
    assert status == 0


def test_python_m_trioserve_serves_an_app_with_static_mount(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"from the app"})
            """
        )
    )
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "style.css").write_text("body {}\n")
    process, url = start(["myapp:app", "--static", "/assets=public"], cwd=tmp_path)
    try:
        assert httpx.get(url + "/anything", timeout=10).text == "from the app"
        css = httpx.get(url + "/assets/style.css", timeout=10)
        assert css.text == "body {}\n"
        assert css.headers["content-type"] == "text/css; charset=utf-8"
    finally:
        status, _ = stop(process, signal.SIGINT)
    assert status == 0


def test_second_sigint_stops_at_once_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(
        textwrap.dedent(
            """
            import trio

            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return  # no lifespan support
                await trio.sleep(60)
            """
        )
    )
    process, url = start(["sleepy:app", "--graceful-timeout", "60"], cwd=tmp_path)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        # The request is in flight for 60 s and the grace period is 60 s; only the second
        # signal can end this quickly.
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        for _ in range(20):
            if "shutting down" in process.stderr.readline():
                break
        status, err = stop(process, signal.SIGINT)
    assert status == 1
    assert "stopping now" in err


@pytest.mark.skipif(os.name != "posix", reason="console scripts are tested on POSIX")
def test_console_script_is_installed_and_matches_python_m() -> None:
    script = Path(sys.executable).with_name("trioserve")
    assert script.exists()
    out = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    same = subprocess.run(
        [sys.executable, "-m", "trioserve", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == same.returncode == 0
    assert out.stdout == same.stdout


# -- --config FILE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("no-such-option = 1\n", "unknown key 'no-such-option'"),
        ("port = 'eighty'\n", "port: invalid literal for int()"),
        ("keep-alive-timeout = -3\n", "keep-alive-timeout: must be a number of seconds >= 0"),
        ("autoindex = 'yes'\n", "autoindex: expected true or false"),
        ("dotfiles = 'sometimes'\n", "dotfiles: 'sometimes' is not one of deny, allow"),
        ("port = [1, 2]\n", "port: expected a string or a number"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_config_file_is_one_line_naming_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, toml: str, message: str
) -> None:
    config = tmp_path / "trioserve.toml"
    config.write_text(toml)
    status, err = run_main(capsys, "--config", str(config))
    assert status == 2
    assert err.count("\n") == 1, err
    assert message in err


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run_main(capsys, "--config", str(tmp_path / "absent.toml"))
    assert status == 2
    assert "absent.toml: No such file or directory" in err


def test_config_file_settings_apply_and_flags_override_them(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "page.txt").write_text("from the config's root\n")
    (tmp_path / "trioserve.toml").write_text(
        textwrap.dedent(
            """
            root = "site"
            port = 1            # overridden by --port 0 below (port 1 would need root)
            cache-control = "max-age=60"
            access-log = false
            static = ["/assets=site"]
            """
        )
    )
    process, url = start(["--config", "trioserve.toml"], cwd=tmp_path)
    try:
        page = httpx.get(url + "/page.txt", timeout=10)
        assert page.text == "from the config's root\n"
        assert page.headers["cache-control"] == "max-age=60"
        assert httpx.get(url + "/assets/page.txt", timeout=10).status_code == 200
    finally:
        status, err = stop(process, signal.SIGINT)
    assert status == 0
    assert "GET /page.txt" not in err  # access-log = false


def test_a_repeatable_flag_on_the_command_line_replaces_the_files_list(
    tmp_path: Path,
) -> None:
    from trioserve._cli import _settings

    (tmp_path / "c.toml").write_text('static = ["/a=one", "/b=two"]\nautoindex = true\n')
    settings = _settings(["--config", str(tmp_path / "c.toml"), "--static", "/c=three"])
    assert settings["static"] == (("/c", "three"),)
    assert settings["autoindex"] is True


# -- logging --------------------------------------------------------------------------------------


def _log_config(log_file: Path) -> dict[str, object]:
    return {
        "version": 1,
        "formatters": {"mine": {"format": "MINE %(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "mine",
            }
        },
        "root": {"handlers": ["file"], "level": "INFO"},
    }


def _toml(settings: dict[str, object]) -> str:
    """The dictConfig above as TOML (enough of TOML for it)."""
    lines = ["version = 1"]
    for section in ("formatters", "handlers"):
        table = settings[section]
        assert isinstance(table, dict)
        for name, fields in table.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    lines += ["[root]", 'handlers = ["file"]', 'level = "INFO"']
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_log_config_file_routes_the_logs(tmp_path: Path, kind: str) -> None:
    (tmp_path / "index.html").write_text("hi\n")
    log_file = tmp_path / "server.log"
    settings = _log_config(log_file)
    config = tmp_path / f"logging.{kind}"
    config.write_text(json.dumps(settings) if kind == "json" else _toml(settings))
    server = ServerProcess.start("--root", str(tmp_path), "--log-config", str(config))
    try:
        assert httpx.get(server.url + "/index.html", timeout=10).text == "hi\n"
    finally:
        status, stderr = server.stop(signal.SIGTERM)
    assert status == 0
    lines = log_file.read_text().splitlines()
    # The file's formatter and handler, for the server's lines and the access lines alike;
    # nothing of them on stderr any more.
    assert "MINE INFO trioserve.error Shutdown complete" in lines
    assert any(
        line.startswith("MINE INFO trioserve.access ") and "GET /index.html" in line
        for line in lines
    ), lines
    assert "Shutdown complete" not in stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "--log-config {path}: Expecting property name"),
        ('{"handlers": {"h": {"class": "no.such.Handler"}}}', "--log-config {path}: Unable"),
        ("[1, 2]", "--log-config {path}: expected a table of dictConfig settings"),
    ],
)
def test_a_bad_log_config_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "logging.json"
    path.write_text(content)
    status, err = run_main(capsys, "--root", str(tmp_path), "--log-config", str(path))
    assert status == 2
    assert err.count("\n") == 1, err
    assert message.format(path=path) in err


def test_a_missing_log_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run_main(capsys, "--log-config", str(tmp_path / "absent.json"))
    assert (status, err) == (
        2,
        f"trioserve: error: --log-config {tmp_path / 'absent.json'}: No such file or directory\n",
    )


def test_under_workers_each_line_carries_its_process_id(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hi\n")
    server = ServerProcess.start("--root", str(tmp_path), "--workers", "2")
    try:
        # Both workers must be up before SIGTERM, or only one has a shutdown to log.
        server.wait_for_line(r"All 2 workers are ready")
        assert httpx.get(server.url + "/index.html", timeout=10).status_code == 200
        workers = {
            int(pid)
            for pid in re.findall(
                r"\[(\d+)\] INFO trioserve\.access ",
                server.wait_for_line(r"GET /index\.html").string,
            )
        }
    finally:
        status, stderr = server.stop(signal.SIGTERM)
    assert status == 0
    assert f"[{server.pid}] INFO trioserve.error: SIGTERM: draining 2 workers" in stderr
    drained = set(
        map(int, re.findall(r"\[(\d+)\] INFO trioserve\.error: Shutdown complete", stderr))
    )
    assert len(drained) == 2, stderr
    assert server.pid not in drained
    assert workers <= drained
