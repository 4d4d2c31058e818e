"""Binds: several listeners, IPv6, unix sockets with modes, inherited descriptors, systemd
socket activation, TLS and plain side by side, redirects to HTTPS."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import ssl
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trustme

import trioserve
from trioserve import Config, ConfigError, TLSConfig
from trioserve._cli import main
from trioserve._listeners import Bind, accept_loop, parse_bind

from ._helpers import ServerProcess, get
from .conftest import hello_app


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("127.0.0.1:8000", Bind("tcp", host="127.0.0.1", port=8000)),
        ("[::1]:0", Bind("tcp", host="::1", port=0)),
        ("0.0.0.0:443", Bind("tcp", host="0.0.0.0", port=443)),
        ("localhost:80", Bind("tcp", host="localhost", port=80)),
        ("unix:/run/app.sock", Bind("unix", path="/run/app.sock")),
        ("fd://3", Bind("fd", fd=3)),
    ],
)
def test_parse_bind(text: str, bind: Bind) -> None:
    assert parse_bind(text) == bind


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8000", "expected HOST:PORT"),
        ("::1:80", "write an IPv6 address in brackets"),
        ("[::1:80", "unclosed"),
        ("host:http", "not a port number"),
        ("host:70000", "port out of range"),
        ("unix:", "no path"),
        ("fd://three", "not a file descriptor number"),
    ],
)
def test_bad_binds(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bind(text)
    with pytest.raises(ConfigError, match=message):
        Config(binds=(text,))


def test_bad_bind_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bind", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bind: expected HOST:PORT" in err


async def test_several_binds_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    config = Config(binds=("127.0.0.1:0", f"unix:{path}"), uds_mode=0o660, access_log=False)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(trioserve.serve, hello_app, config)
        tcp, unix = addresses
        assert unix == path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        assert (await get(f"http://127.0.0.1:{tcp[1]}/a")).text == "GET /a\n"
        uds = httpx.AsyncHTTPTransport(uds=path)
        assert (await get("http://localhost/b", transport=uds)).text == "GET /b\n"
        nursery.cancel_scope.cancel()


async def test_inherited_descriptor() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.detach()  # the server owns it now
    config = Config(binds=(f"fd://{fd}",), access_log=False)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, hello_app, config)
        assert address == ("127.0.0.1", port)
        assert (await get(f"http://127.0.0.1:{port}/fd")).text == "GET /fd\n"
        nursery.cancel_scope.cancel()


async def test_a_descriptor_that_is_not_a_listening_socket_is_refused() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError, match=rf"fd://{read_end}: not a socket"):
            await trioserve.serve(hello_app, Config(binds=(f"fd://{read_end}",)))
    finally:
        os.close(read_end)
        os.close(write_end)
    connected = socket.socket()  # a socket, but not listening
    try:
        with pytest.raises(OSError, match="not a listening stream socket"):
            await trioserve.serve(hello_app, Config(binds=(f"fd://{connected.fileno()}",)))
    finally:
        connected.close()


async def test_a_unix_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "regular-file"
    path.write_text("important data")
    with pytest.raises(OSError, match="exists and is not a socket"):
        await trioserve.serve(hello_app, Config(binds=(f"unix:{path}",)))
    assert path.read_text() == "important data"


async def test_tls_and_plain_side_by_side_with_redirect(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    config = Config(
        tls=TLSConfig(context=context),
        binds=("127.0.0.1:0",),
        insecure_binds=("127.0.0.1:0",),
        redirect_to_https=True,
        access_log=False,
    )
    server = trioserve.Server(hello_app, config)
    async with trio.open_nursery() as nursery:
        secure, plain = await nursery.start(server.serve)
        assert [scheme for _, scheme in server.bound] == ["https", "http"]
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        https = await get(f"https://127.0.0.1:{secure[1]}/x", verify=client_context)
        assert https.text == "GET /x\n"
        redirect = await get(f"http://127.0.0.1:{plain[1]}/path?q=1")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"https://127.0.0.1:{secure[1]}/path?q=1"
        nursery.cancel_scope.cancel()


def test_redirect_needs_tls_and_an_insecure_bind() -> None:
    with pytest.raises(ConfigError, match="redirect_to_https needs TLS"):
        Config(redirect_to_https=True)


def test_systemd_socket_activation(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("activated\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # As systemd does: the socket on fd 3, LISTEN_FDS=1, LISTEN_PID the server's own pid
    # (exec keeps the pid).
    launcher = (
        "import os, sys\n"
        f"os.dup2({fd}, 3)\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'trioserve', *sys.argv[1:]])\n"
    )
    server = ServerProcess(
        [sys.executable, "-c", launcher, "--root", str(tmp_path), "--no-access-log"],
        pass_fds=(fd,),
    )
    listener.close()
    try:
        assert server.wait_for_announce() == f"http://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/hello.txt", timeout=10).text == "activated\n"
    finally:
        status, _ = server.stop(signal.SIGINT)
    assert status == 0


def test_unusable_binds_on_the_command_line_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    assert main(["--root", str(tmp_path), "--bind", f"unix:{regular}"]) == 2
    assert capsys.readouterr().err == (
        f"trioserve: error: cannot listen on unix:{regular}: exists and is not a socket\n"
    )
    read_end, write_end = os.pipe()
    try:
        assert main(["--root", str(tmp_path), "--bind", f"fd://{read_end}"]) == 2
        assert capsys.readouterr().err == (
            f"trioserve: error: cannot listen on fd://{read_end}: not a socket\n"
        )
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_unix_socket_another_server_answers_on_is_not_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")
    async with trio.open_nursery() as nursery:
        await nursery.start(trioserve.serve, hello_app, Config(uds=path, access_log=False))
        with pytest.raises(OSError, match="address already in use"):
            await trioserve.serve(hello_app, Config(uds=path))
        uds = httpx.AsyncHTTPTransport(uds=path)
        assert (await get("http://localhost/still", transport=uds)).text == "GET /still\n"
        nursery.cancel_scope.cancel()


def test_a_stale_unix_socket_file_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays; nobody answers on it
    listeners = trioserve._listeners.open_listeners(Config(uds=path))
    assert len(listeners) == 1
    trioserve._listeners.close_listener(listeners[0][0])
    assert not os.path.exists(path)


# -- the accept loop, over a fake listener and virtual time ------------------------------------


class ScriptedListener:
    """A listening socket whose ``accept()`` plays a script: an errno to fail with, or
    ``None`` for a client. Once the script is played it reports itself closed, which ends
    ``accept_loop``; an endless errno (``forever``) keeps failing instead."""

    def __init__(self, *script: int | None, forever: int | None = None) -> None:
        self.script = list(script)
        self.forever = forever
        self.calls: list[float] = []  # trio.current_time() of each accept()
        self.clients: list[socket.socket] = []

    def fileno(self) -> int:
        return -1 if not self.script and self.forever is None else 1_000_000

    def accept(self) -> tuple[socket.socket, Any]:
        self.calls.append(trio.current_time())
        step = self.script.pop(0) if self.script else self.forever
        if step is not None:
            raise OSError(step, os.strerror(step))
        client = socket.socket()  # never connected: the loop only hands it on
        self.clients.append(client)
        return client, ("127.0.0.1", 40000 + len(self.clients))

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()


CAPACITY_ERRNOS = [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS]


@pytest.mark.parametrize("code", CAPACITY_ERRNOS, ids=[errno.errorcode[c] for c in CAPACITY_ERRNOS])
async def test_accept_out_of_resources_backs_off_100ms_and_retries(
    code: int, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    listener = ScriptedListener(forever=code)
    slots = trio.Semaphore(10)
    # It retries every 100 ms, so in 950 ms it tries at 0, 100, ..., 900 ms: 10 times.
    with trio.move_on_after(0.95):
        await accept_loop(listener, slots, spawn=lambda client, address: None)
    assert listener.calls == pytest.approx([i / 10 for i in range(10)])
    failures = [r for r in caplog.records if r.name == "trioserve.error"]
    assert len(failures) == 10
    assert all(r.levelno == logging.ERROR for r in failures)
    assert f"accept() failed ({errno.errorcode[code]}); pausing 0.1 s" in failures[0].getMessage()
    assert slots.value == 10  # every failed accept gave its slot back


async def test_after_a_back_off_the_next_client_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = ScriptedListener(errno.EMFILE, errno.EMFILE, None)
    slots = trio.Semaphore(10)
    spawned: list[tuple[socket.socket, object]] = []
    try:
        with trio.fail_after(5):
            await accept_loop(listener, slots, spawn=lambda c, a: spawned.append((c, a)))
    finally:
        listener.close_clients()
    assert listener.calls == pytest.approx([0.0, 0.1, 0.2])
    assert spawned == [(listener.clients[0], ("127.0.0.1", 40001))]
    assert slots.value == 9  # held by the spawned connection until its task releases it


@pytest.mark.parametrize("code", [errno.EBADF, errno.EINVAL, errno.ENOTSOCK])
async def test_other_accept_errors_propagate_at_once(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    listener = ScriptedListener(code, None)
    slots = trio.Semaphore(10)
    with pytest.raises(OSError, match=os.strerror(code)) as info:
        await accept_loop(listener, slots, spawn=lambda client, address: None)
    assert info.value.errno == code
    assert listener.calls == [0.0]  # no back-off, no retry
    assert listener.clients == []
    assert slots.value == 10


async def test_a_client_that_gave_up_is_skipped_without_a_pause(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    listener = ScriptedListener(errno.ECONNABORTED, errno.EPROTO, errno.EPERM, None)
    slots = trio.Semaphore(10)
    spawned: list[object] = []
    try:
        with trio.fail_after(5):
            await accept_loop(listener, slots, spawn=lambda c, a: spawned.append(a))
    finally:
        listener.close_clients()
    assert listener.calls == [0.0, 0.0, 0.0, 0.0]
    assert spawned == [("127.0.0.1", 40001)]
    assert not [r for r in caplog.records if r.name == "trioserve.error"]
    assert slots.value == 9


async def test_without_a_free_slot_nothing_is_accepted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    listener = ScriptedListener(None)
    slots = trio.Semaphore(1)
    await slots.acquire()  # the one slot is taken by an open connection
    with trio.move_on_after(60):
        await accept_loop(listener, slots, spawn=lambda client, address: None)
    assert listener.calls == []  # clients wait in the kernel's backlog meanwhile


# -- dual stack and localhost ---------------------------------------------------------------------


async def test_the_ipv6_wildcard_accepts_ipv4_and_ipv6_clients() -> None:
    config = Config(host="::", port=0, access_log=False)
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(trioserve.serve, hello_app, config)
        assert host == "::"
        assert (await get(f"http://127.0.0.1:{port}/v4")).text == "GET /v4\n"
        assert (await get(f"http://[::1]:{port}/v6")).text == "GET /v6\n"
        nursery.cancel_scope.cancel()


async def test_the_ipv6_wildcard_next_to_an_ipv4_bind_on_its_port_stays_ipv6_only() -> None:
    # Dual-stack "::" would collide with 127.0.0.1 on the same port: each family its listener.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    config = Config(binds=(f"127.0.0.1:{port}", f"[::]:{port}"), access_log=False)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(trioserve.serve, hello_app, config)
        assert addresses == [("127.0.0.1", port), ("::", port)]
        assert (await get(f"http://127.0.0.1:{port}/v4")).text == "GET /v4\n"
        assert (await get(f"http://[::1]:{port}/v6")).text == "GET /v6\n"
        nursery.cancel_scope.cancel()


async def test_localhost_listens_on_both_loopbacks_on_one_port() -> None:
    config = Config(host="localhost", port=0, access_log=False)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(trioserve.serve, hello_app, config)
        assert sorted(host for host, _ in addresses) == ["127.0.0.1", "::1"]
        [port] = {port for _, port in addresses}
        assert (await get(f"http://127.0.0.1:{port}/v4")).text == "GET /v4\n"
        assert (await get(f"http://[::1]:{port}/v6")).text == "GET /v6\n"
        nursery.cancel_scope.cancel()


def test_localhost_on_the_command_line_announces_both(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("hello\n")
    server = ServerProcess.start("--host", "localhost", "--root", str(tmp_path))
    try:
        port = server.url.rsplit(":", 1)[1]
        assert f"http://[::1]:{port}" in server.stderr
        assert httpx.get(f"http://[::1]:{port}/", timeout=10).text == "hello\n"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "hello\n"
    finally:
        server.stop(signal.SIGTERM)
