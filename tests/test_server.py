"""serve() end to end, over real loopback sockets on port 0."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import trioserve
from trioserve import Config, StaticFiles
from trioserve._server import Server

from ._helpers import get, http_url, in_thread
from .conftest import hello_app


async def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def test_serve_reports_bound_address_for_port_zero() -> None:
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(trioserve.serve, hello_app, Config(port=0))
        [(host, port)] = addresses
        assert host == "127.0.0.1"
        assert port != 0
        response = await get(addresses[0], "/hi")
        assert response.status_code == 200
        assert response.text == "GET /hi\n"
        nursery.cancel_scope.cancel()


async def test_serve_on_ipv6_loopback() -> None:
    # IPv6 is a supported bind; the machines this runs on have ::1 (the harness tests need it
    # too), so its absence is a failure to see, not a skip.
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(trioserve.serve, hello_app, Config(host="::1", port=0))
        assert addresses[0][0] == "::1"
        response = await get(addresses[0], "/six")
        assert response.text == "GET /six\n"
        nursery.cancel_scope.cancel()


async def test_address_in_use_raises_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await trioserve.serve(hello_app, Config(port=port))


async def test_idle_keep_alive_connections_close_after_the_timeout_on_a_real_server() -> None:
    # The server's IdleTimer ends keep-alive waits; a connection that sends its next request
    # in time is served, and the timer's task ends with the server.
    config = Config(port=0, access_log=False, keep_alive_timeout=0.3, lifespan="off")
    server = Server(hello_app, config)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        streams = [await trio.open_tcp_stream(*address) for _ in range(3)]
        request = b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n"
        for stream in streams:
            await stream.send_all(request)
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
        assert server.state.idle_timer.running
        started = trio.current_time()
        with trio.fail_after(10):
            for stream in streams:
                assert await stream.receive_some(65536) == b""  # closed, no response
        assert trio.current_time() - started >= 0.3
        for stream in streams:
            await stream.aclose()
        server.begin_shutdown()
    assert not server.state.idle_timer.running


async def flaky_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise RuntimeError("this request fails")
    await trio.sleep(0.05)  # keep requests in flight at the same time
    await hello_app(scope, receive, send)


async def test_a_crashing_request_leaves_the_others_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            trioserve.serve, flaky_app, Config(port=0, access_log=False)
        )
        results: dict[str, int] = {}
        # One client, one connection per request in flight (51 at once, under its limit of 100).
        async with httpx.AsyncClient(timeout=10) as http:

            async def one(path: str) -> None:
                results[path] = (await http.get(http_url(address, path))).status_code

            async with trio.open_nursery() as clients:
                for index in range(50):
                    clients.start_soon(one, f"/ok/{index}")
                clients.start_soon(one, "/boom")
                clients.start_soon(raw_exchange, address, b"\x00garbage\r\n\r\n")
        assert results.pop("/boom") == 500
        assert set(results.values()) == {200}
        assert len(results) == 50
        nursery.cancel_scope.cancel()
    assert "this request fails" in caplog.text


async def test_max_connections_holds_new_clients_at_accept_while_all_are_busy() -> None:
    # Busy connections (requests in the app) are never evicted: the third client waits in the
    # backlog. (Idle ones would be closed to make room for it: see test_flood.py.)
    release = trio.Event()
    both_in = trio.Event()
    entered = 0

    async def gated_app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        if scope["path"] == "/wait":
            entered += 1
            if entered == 2:
                both_in.set()
            await release.wait()
        await hello_app(scope, receive, send)

    config = Config(port=0, max_connections=2, access_log=False)
    server = Server(gated_app, config)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        first = await trio.open_tcp_stream(*address)
        second = await trio.open_tcp_stream(*address)
        await first.send_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        await second.send_all(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            await both_in.wait()
        assert server.open_connections == 2
        # A third client connects (the kernel's backlog takes it) but is not accepted yet.
        third = await trio.open_tcp_stream(*address)
        await third.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.move_on_after(0.3):
            await third.receive_some(4096)
            pytest.fail("the third connection was served while two were busy")
        assert server.open_connections == 2
        release.set()  # the requests in flight finish, untouched
        with trio.fail_after(5):
            assert (await first.receive_some(4096)).startswith(b"HTTP/1.1 200")
            assert (await second.receive_some(4096)).startswith(b"HTTP/1.1 200")
        await first.aclose()  # frees a slot
        with trio.fail_after(5):
            assert (await third.receive_some(4096)).startswith(b"HTTP/1.1 200")
        await second.aclose()
        await third.aclose()
        nursery.cancel_scope.cancel()


def slow_app(started: trio.Event) -> Any:
    """Answers ``GET /SECONDS`` after that many seconds; sets ``started`` when a request that
    waits (SECONDS > 0) has reached the app."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seconds = float(scope["path"].strip("/") or 0)
        if seconds:
            started.set()
        await trio.sleep(seconds)
        await hello_app(scope, receive, send)

    return app


async def test_shutdown_trigger_drains_in_flight_and_closes_idle_and_listener() -> None:
    stop = trio.Event()
    started = trio.Event()
    config = Config(port=0, graceful_timeout=5, access_log=False)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            lambda task_status: trioserve.serve(
                slow_app(started), config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        idle = await trio.open_tcp_stream(*address)
        await idle.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await idle.receive_some(4096)).startswith(b"HTTP/1.1 200")
        busy = await trio.open_tcp_stream(*address)
        await busy.send_all(b"GET /0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            await started.wait()  # the slow request is in the app's hands
        stop.set()
        with trio.fail_after(2):
            assert await idle.receive_some(4096) == b""  # idle: closed at once
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream(*address)  # listener: closed at once
        with trio.fail_after(5):
            answer = await busy.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"connection: close" in answer.lower()
        assert answer.endswith(b"GET /0.5\n")
        await idle.aclose()
        await busy.aclose()
    # serve() returned on its own: the nursery exited without being cancelled.


async def test_requests_still_running_after_the_grace_period_are_cancelled() -> None:
    stop = trio.Event()
    entered = trio.Event()
    cancelled = trio.Event()

    async def stuck_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    config = Config(port=0, graceful_timeout=0.3, access_log=False)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            lambda task_status: trioserve.serve(
                stuck_app, config, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        stream = await trio.open_tcp_stream(*address)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(5):
            await entered.wait()
        started = trio.current_time()
        stop.set()
    await stream.aclose()
    assert cancelled.is_set()
    assert trio.current_time() - started < 0.3 + 2.5  # grace + bounded close


async def test_cancelling_the_enclosing_scope_is_a_graceful_shutdown() -> None:
    config = Config(port=0, graceful_timeout=5, access_log=False)
    started = trio.Event()
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            [address] = await nursery.start(trioserve.serve, slow_app(started), config)
            busy = await trio.open_tcp_stream(*address)
            await busy.send_all(b"GET /0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(5):
                await started.wait()
            outer.cancel()
    # The in-flight request was answered before serve() gave up.
    answer = await busy.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"GET /0.3\n")
    await busy.aclose()


async def test_body_over_limit_gets_413_even_while_the_client_is_still_sending() -> None:
    config = Config(port=0, max_body_size=1024 * 1024, access_log=False)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, hello_app, config)

        # httpx's sync client (in a thread): the async one leaves its request-body generator
        # unfinished when the server answers early, and pytest reports that as an error.
        def post() -> httpx.Response:
            return httpx.post(http_url(address), content=b"x" * (3 * 1024 * 1024), timeout=10)

        response = await in_thread(post)
        assert response.status_code == 413
        nursery.cancel_scope.cancel()


@pytest.fixture
def docroot(tmp_path: Path) -> Path:
    (tmp_path / "small.txt").write_text("hello static\n")
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("<p>index</p>\n")
    (tmp_path.parent / "secret.txt").write_text("outside the root\n")
    return tmp_path


async def test_static_files_end_to_end(docroot: Path) -> None:
    app = StaticFiles(docroot)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, app, Config(port=0, access_log=False))
        small = await get(address, "/small.txt")
        assert small.status_code == 200
        assert small.text == "hello static\n"
        assert small.headers["content-type"] == "text/plain; charset=utf-8"
        etag = small.headers["etag"]
        again = await get(address, "/small.txt", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""

        # Large file: sendfile on a plain socket.
        big = await get(address, "/big.bin")
        assert big.status_code == 200
        assert big.content == (docroot / "big.bin").read_bytes()
        head = await get(address, "/big.bin", method="HEAD")
        assert head.headers["content-length"] == str(3 * 1024 * 1024 + 17)
        assert head.content == b""

        ranged = await get(address, "/big.bin", headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206
        assert ranged.content == (docroot / "big.bin").read_bytes()[1000:2000]

        redirect = await get(address, "/sub")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "/sub/"
        index = await get(address, "/sub/")
        assert index.text == "<p>index</p>\n"

        for attempt in ("/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt"):
            escaped = await raw_exchange(
                address, f"GET {attempt} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert escaped.startswith(b"HTTP/1.1 404"), (attempt, escaped[:40])
            assert b"outside the root" not in escaped
        nursery.cancel_scope.cancel()


async def test_mounts_put_static_files_in_front_of_an_app(docroot: Path) -> None:
    app = trioserve.Mounts([("/assets", StaticFiles(docroot))], hello_app)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, app, Config(port=0, access_log=False))
        assert (await get(address, "/assets/small.txt")).text == "hello static\n"
        assert (await get(address, "/api")).text == "GET /api\n"
        assert (await get(address, "/assetsx")).text == "GET /assetsx\n"
        nursery.cancel_scope.cancel()


async def test_begin_shutdown_makes_serve_return() -> None:
    server = Server(hello_app, Config(port=0, access_log=False))
    with trio.fail_after(2):  # serve() must return by itself, promptly
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            server.begin_shutdown()
    assert not nursery.cancel_scope.cancel_called


async def test_unix_socket_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "trioserve.sock")
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            trioserve.serve, hello_app, Config(uds=path, access_log=False)
        )
        assert address == path

        response = await get(
            "http://localhost/over-uds", transport=httpx.AsyncHTTPTransport(uds=path)
        )
        assert response.text == "GET /over-uds\n"
        nursery.cancel_scope.cancel()
    assert not os.path.exists(path)  # the socket file is removed at shutdown


async def test_refuse_connections_keeps_open_ones() -> None:
    server = Server(hello_app, Config(port=0, access_log=False))
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        kept = await trio.open_tcp_stream(*address)
        server.refuse_connections()
        with pytest.raises(OSError, match="connect"):  # at once
            await trio.open_tcp_stream(*address)
        await kept.send_all(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await kept.receive_some(4096)).endswith(b"GET /still\n")
        await kept.aclose()
        nursery.cancel_scope.cancel()
