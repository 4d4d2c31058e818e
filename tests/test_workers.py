"""--workers: a supervisor and worker processes (real processes, loopback, bounded)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import children, wait_for

APP = textwrap.dedent(
    """
    import os
    import trio

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if os.environ.get("FAIL_STARTUP"):
                        await send({"type": "lifespan.startup.failed", "message": "no db"})
                        return
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/crash":
            os._exit(1)
        if scope["path"] == "/slow":
            open("slow-started", "w").close()  # the test waits for this before signalling
            await trio.sleep(1)
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    """
)


def start(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    (tmp_path / "workerapp.py").write_text(APP)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trioserve",
            "workerapp:app",
            "--port",
            "0",
            "--no-access-log",
            *args,
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    for _ in range(20):
        line = process.stderr.readline()
        match = re.search(r"on (http://\S+) \(Ctrl-C", line)
        if match:
            return process, match.group(1)
        if not line:
            break
    process.kill()
    process.communicate(timeout=10)
    raise AssertionError("the supervisor did not announce its URL")


def ready_pids(url: str, count: int) -> set[int]:
    """Worker pids seen answering, over fresh connections (bounded)."""
    seen: set[int] = set()
    for _ in range(200):
        seen.add(int(httpx.get(url + "/", headers={"Connection": "close"}, timeout=10).text))
        if len(seen) >= count:
            break
    return seen


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_two_workers_serve_and_a_crashed_one_is_replaced(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(children(process.pid)) == 2)
        before = children(process.pid)
        assert int(httpx.get(url + "/", timeout=10).text) in before
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/crash", timeout=10)
        wait_for(lambda: len(children(process.pid)) == 2 and children(process.pid) != before)
        assert httpx.get(url + "/", timeout=10).status_code == 200
    finally:
        status, err = stop(process)
    assert status == 0
    assert "exited with status 1" in err
    assert "All workers stopped" in err


def test_rolling_restart_loses_no_request(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2")
    failures: list[str] = []
    pids: set[int] = set()
    done = threading.Event()

    def client() -> None:
        # One keep-alive client that never retries, busy through the whole restart.
        with httpx.Client(timeout=10, transport=httpx.HTTPTransport(retries=0)) as http:
            deadline = time.monotonic() + 20
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    pids.add(int(http.get(url + "/").text))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    try:
        wait_for(lambda: len(children(process.pid)) == 2)
        old = children(process.pid)
        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(0.3)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: not (children(process.pid) & old) and len(children(process.pid)) == 2)
        time.sleep(0.3)
        done.set()
        thread.join(30)
        new = children(process.pid)
    finally:
        done.set()
        status, err = stop(process)
    assert failures == []
    assert pids & old  # served by the old workers...
    assert pids & new  # ...then by the new ones
    assert "Rolling restart complete" in err
    assert status == 0


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2")
    results: list[int] = []
    try:
        wait_for(lambda: len(children(process.pid)) == 2)
        thread = threading.Thread(
            target=lambda: results.append(httpx.get(url + "/slow", timeout=10).status_code)
        )
        thread.start()
        # Signal only once the request is in a worker's hands (a connection still in the
        # listen queue when the listeners close is refused, as with any server).
        wait_for(lambda: (tmp_path / "slow-started").exists())
    finally:
        status, _ = stop(process)
    thread.join(10)
    assert results == [200]
    assert status == 0


def test_max_requests_recycles_workers_without_failures(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2", "--max-requests", "5")
    try:
        pids = set()
        with httpx.Client(timeout=10) as http:
            for _ in range(30):
                response = http.get(url + "/")
                assert response.status_code == 200
                pids.add(int(response.text))
        assert len(pids) > 2  # workers were replaced along the way
    finally:
        status, _ = stop(process)
    assert status == 0


def test_workers_failing_at_startup_stop_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "workerapp.py").write_text(APP)
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "workerapp:app", "--port", "0", "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FAIL_STARTUP": "1"},
    )
    assert result.returncode == 1
    assert "Workers keep failing at startup" in result.stderr


def test_a_signal_to_the_whole_process_group_still_drains(tmp_path: Path) -> None:
    (tmp_path / "workerapp.py").write_text(APP)
    process = subprocess.Popen(
        [sys.executable, "-m", "trioserve", "workerapp:app", "--port", "0", "--workers", "2"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as under a terminal or systemd
    )
    assert process.stderr is not None
    url = ""
    for _ in range(20):
        match = re.search(r"on (http://\S+) \(Ctrl-C", process.stderr.readline())
        if match:
            url = match.group(1)
            break
    results: list[int] = []
    try:
        wait_for(lambda: len(children(process.pid)) == 2)
        thread = threading.Thread(
            target=lambda: results.append(httpx.get(url + "/slow", timeout=10).status_code)
        )
        thread.start()
        wait_for(lambda: (tmp_path / "slow-started").exists())
        os.killpg(process.pid, signal.SIGTERM)  # what Ctrl-C or `systemctl stop` do
        thread.join(15)
    finally:
        process.communicate(timeout=30)
    assert results == [200]
    assert process.returncode == 0


def test_a_rolling_restart_into_broken_code_keeps_the_old_workers(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(children(process.pid)) == 2)
        old = children(process.pid)
        # Both workers must have loaded the good code before the file changes under them.
        wait_for(lambda: ready_pids(url, 2) == old)
        (tmp_path / "workerapp.py").write_text("raise ImportError('a bad deploy')\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert process.poll() is None
        assert children(process.pid) == old
        assert httpx.get(url + "/", timeout=10).status_code == 200
        process.send_signal(signal.SIGUSR1)  # log rotation: the supervisor survives it
        time.sleep(0.3)
        assert process.poll() is None
    finally:
        status, err = stop(process)
    assert "keeping the old ones" in err
    assert status == 0


def test_max_requests_needs_workers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from trioserve._cli import main

    assert main(["--root", str(tmp_path), "--max-requests", "10"]) == 2
    assert "--max-requests recycles workers" in capsys.readouterr().err
