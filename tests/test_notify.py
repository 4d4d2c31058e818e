"""Deploys: systemd's Type=notify (a fake $NOTIFY_SOCKET) and --shutdown-delay, on real processes."""

from __future__ import annotations

import os
import signal
import socket
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from trioserve._notify import Notifier

from ._helpers import PROCESS_TIMEOUT, ServerProcess

APP = textwrap.dedent(
    """
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
    """
)


class FakeSystemd:
    """A unix datagram socket playing systemd's notify socket; it reads each datagram with the
    sender's pid (SCM_CREDENTIALS), as systemd does."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(PROCESS_TIMEOUT)

    def receive(self) -> tuple[str, int]:
        """The next datagram and its sender's pid (bounded wait)."""
        size = socket.CMSG_SPACE(struct.calcsize("3i"))
        data, ancillary, _, _ = self.sock.recvmsg(4096, size)
        [(level, kind, creds)] = ancillary
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
        pid, _, _ = struct.unpack("3i", creds)
        return data.decode(), pid


@pytest.fixture
def systemd() -> Iterator[tuple[FakeSystemd, str]]:
    # The abstract namespace (what systemd itself uses): no path length limit, nothing to clean.
    name = f"@trioserve-test-{os.getpid()}-{id(object())}"
    fake = FakeSystemd("\0" + name[1:])
    yield fake, name
    fake.sock.close()


def start(tmp_path: Path, notify: str, *args: str) -> ServerProcess:
    (tmp_path / "pidapp.py").write_text(APP)
    return ServerProcess.start(
        "pidapp:app", "--no-access-log", *args, cwd=tmp_path, env={"NOTIFY_SOCKET": notify}
    )


def test_one_process_notifies_ready_reloading_and_stopping(
    tmp_path: Path, systemd: tuple[FakeSystemd, str]
) -> None:
    fake, name = systemd
    server = start(tmp_path, name)
    try:
        assert fake.receive() == ("READY=1", server.pid)
        server.process.send_signal(signal.SIGHUP)
        reloading, pid = fake.receive()
        assert pid == server.pid
        first, usec = reloading.split("\n")
        assert first == "RELOADING=1"
        assert usec.startswith("MONOTONIC_USEC=")
        assert int(usec.partition("=")[2]) > 0
        assert fake.receive() == ("READY=1", server.pid)
        server.process.send_signal(signal.SIGTERM)
        assert fake.receive() == ("STOPPING=1", server.pid)
        assert server.stop()[0] == 0
    finally:
        server.kill()


def test_under_workers_only_the_supervisor_notifies_once_all_accept(
    tmp_path: Path, systemd: tuple[FakeSystemd, str]
) -> None:
    fake, name = systemd
    server = start(tmp_path, name, "--workers", "2")
    try:
        assert fake.receive() == ("READY=1", server.pid)
        # Both workers accept by now: two distinct pids answer over fresh connections.
        seen = set()
        for _ in range(200):
            seen.add(httpx.get(server.url, headers={"Connection": "close"}, timeout=10).text)
            if len(seen) == 2:
                break
        assert len(seen) == 2
        server.process.send_signal(signal.SIGTERM)
        assert fake.receive() == ("STOPPING=1", server.pid)
        assert server.stop()[0] == 0
        fake.sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            fake.receive()  # nothing from the workers
    finally:
        server.kill()


def test_a_filesystem_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    fake = FakeSystemd(str(path))
    try:
        Notifier(str(path)).ready()
        assert fake.receive() == ("READY=1", os.getpid())
    finally:
        fake.sock.close()


def test_no_notify_socket_sends_nothing_and_an_absent_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Notifier(None).ready()
    Notifier("").ready()
    assert caplog.records == []
    Notifier(str(tmp_path / "absent")).stopping()
    [record] = caplog.records
    assert record.getMessage().startswith("sd_notify STOPPING=1 failed:")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_shutdown_delay_serves_on_with_the_health_path_unready(
    tmp_path: Path, systemd: tuple[FakeSystemd, str], workers: str
) -> None:
    fake, name = systemd
    server = start(
        tmp_path, name, "--workers", workers, "--health-path", "/healthz", "--shutdown-delay", "60"
    )
    try:
        assert fake.receive()[0] == "READY=1"
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert fake.receive()[0] == "STOPPING=1"
        if workers == "1":
            server.wait_for_line(r"SIGTERM: serving on for 60s")
        else:
            server.wait_for_line(r"Serving on for 60s")
            server.wait_for_line(r"SIGUSR2: the health path answers 503", count=2)
        statuses = {
            httpx.get(server.url + "/healthz", headers={"Connection": "close"}, timeout=10)
            for _ in range(10)
        }
        assert {r.status_code for r in statuses} == {503}
        # The app is still served, over new connections, which are closed after the response.
        response = httpx.get(server.url + "/", timeout=10)
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
        # A second signal stops at once, as it does during a drain (exit status 1).
        status, _ = server.stop(signal.SIGTERM)
        assert status == 1
    finally:
        server.kill()


def test_shutdown_delay_then_drains_on_its_own(tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(APP)
    server = ServerProcess.start(
        "pidapp:app", "--no-access-log", "--shutdown-delay", "0.5", cwd=tmp_path
    )
    try:
        server.process.send_signal(signal.SIGTERM)
        status, stderr = server.stop()
        assert status == 0
        delay = stderr.index("serving on for 0.5s")
        assert stderr.index("SIGTERM: shutting down", delay) < stderr.index("Shutdown complete")
    finally:
        server.kill()
