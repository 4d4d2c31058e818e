"""--workers: a supervisor and worker processes (real processes, loopback, bounded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ._helpers import PROCESS_TIMEOUT, ServerProcess, children, wait_for

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


def start(tmp_path: Path, *args: str, **popen: Any) -> ServerProcess:
    """``python -m trioserve workerapp:app ARGS`` in ``tmp_path``, once it announced its URL."""
    (tmp_path / "workerapp.py").write_text(APP)
    return ServerProcess.start("workerapp:app", "--no-access-log", *args, cwd=tmp_path, **popen)


def ready_pids(url: str, count: int) -> set[int]:
    """Worker pids seen answering, over fresh connections (bounded)."""
    seen: set[int] = set()
    for _ in range(200):
        seen.add(int(httpx.get(url + "/", headers={"Connection": "close"}, timeout=10).text))
        if len(seen) >= count:
            break
    return seen


def slow_request_in_flight(
    server: ServerProcess, tmp_path: Path
) -> tuple[threading.Thread, list[int]]:
    """Once both workers run, GET ``/slow`` (1 s in the app) in a thread, which keeps the
    status; return once the request is in a worker's hands (a connection still in the listen
    queue when the listeners close is refused, as with any server)."""
    wait_for(lambda: len(children(server.pid)) == 2)
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(httpx.get(server.url + "/slow", timeout=10).status_code)
    )
    thread.start()
    wait_for(lambda: (tmp_path / "slow-started").exists())
    return thread, results


@pytest.mark.slow
def test_two_workers_serve_and_a_crashed_one_is_replaced(tmp_path: Path) -> None:
    server = start(tmp_path, "--workers", "2")
    url = server.url
    try:
        wait_for(lambda: len(children(server.pid)) == 2)
        before = children(server.pid)
        assert int(httpx.get(url + "/", timeout=10).text) in before
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/crash", timeout=10)
        wait_for(lambda: len(children(server.pid)) == 2 and children(server.pid) != before)
        assert httpx.get(url + "/", timeout=10).status_code == 200
    finally:
        status, err = server.stop(signal.SIGTERM)
    assert status == 0
    assert "exited with status 1" in err
    assert "All workers stopped" in err


@pytest.mark.slow
def test_rolling_restart_loses_no_request(tmp_path: Path) -> None:
    server = start(tmp_path, "--workers", "2")
    url = server.url
    failures: list[str] = []
    pids: list[int] = []  # appended by the client thread (list.append is atomic)
    first_answer = threading.Event()
    done = threading.Event()

    def client() -> None:
        # One keep-alive client that never retries, busy through the whole restart.
        with httpx.Client(timeout=10, transport=httpx.HTTPTransport(retries=0)) as http:
            deadline = time.monotonic() + 2 * PROCESS_TIMEOUT
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    pids.append(int(http.get(url + "/").text))
                    first_answer.set()
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    thread = threading.Thread(target=client)
    try:
        wait_for(lambda: len(children(server.pid)) == 2)
        old = children(server.pid)
        thread.start()
        assert first_answer.wait(PROCESS_TIMEOUT)  # busy before the restart begins
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_line("Rolling restart complete")
        wait_for(lambda: not (children(server.pid) & old) and len(children(server.pid)) == 2)
        new = children(server.pid)
        wait_for(lambda: bool(set(pids[-20:]) & new))  # ...and busy after it
    finally:
        done.set()
        if thread.is_alive():
            thread.join(30)
        status, _ = server.stop(signal.SIGTERM)
    assert failures == []
    assert set(pids) & old  # served by the old workers...
    assert set(pids) & new  # ...then by the new ones
    assert status == 0


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    server = start(tmp_path, "--workers", "2")
    try:
        thread, results = slow_request_in_flight(server, tmp_path)
    finally:
        status, _ = server.stop(signal.SIGTERM)
    thread.join(10)
    assert results == [200]
    assert status == 0


@pytest.mark.slow
def test_max_requests_recycles_workers_without_failures(tmp_path: Path) -> None:
    server = start(tmp_path, "--workers", "2", "--max-requests", "5")
    try:
        pids = set()
        with httpx.Client(timeout=10) as http:
            for _ in range(30):
                response = http.get(server.url + "/")
                assert response.status_code == 200
                pids.add(int(response.text))
        assert len(pids) > 2  # workers were replaced along the way
    finally:
        status, _ = server.stop(signal.SIGTERM)
    assert status == 0


@pytest.mark.slow
def test_workers_failing_at_startup_stop_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "workerapp.py").write_text(APP)
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "workerapp:app", "--port", "0", "--workers", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FAIL_STARTUP": "1"},
        check=False,
    )
    assert result.returncode == 1
    assert "Workers keep failing at startup" in result.stderr


@pytest.mark.slow
def test_a_signal_to_the_whole_process_group_still_drains(tmp_path: Path) -> None:
    # Its own process group, as under a terminal or systemd.
    server = start(tmp_path, "--workers", "2", start_new_session=True)
    try:
        thread, results = slow_request_in_flight(server, tmp_path)
        os.killpg(server.pid, signal.SIGTERM)  # what Ctrl-C or `systemctl stop` do
        thread.join(15)
    finally:
        status, _ = server.stop()
    assert results == [200]
    assert status == 0


@pytest.mark.slow
def test_a_rolling_restart_into_broken_code_keeps_the_old_workers(tmp_path: Path) -> None:
    server = start(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(children(server.pid)) == 2)
        old = children(server.pid)
        # Both workers must have loaded the good code before the file changes under them.
        wait_for(lambda: ready_pids(server.url, 2) == old)
        (tmp_path / "workerapp.py").write_text("raise ImportError('a bad deploy')\n")
        server.process.send_signal(signal.SIGHUP)
        # The supervisor says so once it has dropped the new worker: then the old ones must
        # still be there, and still be the ones serving.
        server.wait_for_line("A new worker did not become ready; keeping the old ones")
        assert server.process.poll() is None
        assert children(server.pid) == old
        assert ready_pids(server.url, 2) == old
        # Log rotation: the supervisor survives SIGUSR1 and passes it on to both workers.
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_line("SIGUSR1: access log reopened", count=2)
        assert server.process.poll() is None
        assert children(server.pid) == old
    finally:
        status, err = server.stop(signal.SIGTERM)
    assert "Rolling restart complete" not in err
    assert status == 0


def test_max_requests_needs_workers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from trioserve._cli import main

    assert main(["--root", str(tmp_path), "--max-requests", "10"]) == 2
    assert "--max-requests recycles workers" in capsys.readouterr().err
