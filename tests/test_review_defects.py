"""Defects found by the review of the connection split and HTTP/2 round (one test per defect)."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio
import trio.testing

from trioserve import Config
from trioserve._h2._connection import H2Connection
from trioserve._h11._connection import H11Connection
from trioserve._http._scope import connection_info
from trioserve._http._state import ServerState
from trioserve._transport import Transport

from .conftest import hello_app
from .h2_helpers import RawClient, h2_connection, request

INTERNAL_ERROR = 0x2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def test_h2c_client_that_stops_reading_is_no_unexpected_error(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # Prior-knowledge h2c: HTTP/1.1 hands the connection over to HTTP/2. A client that sends
    # the preface and never reads times the server's first write out: a client that left, not
    # an "Unexpected error" with a traceback (the disconnect comes out of the HTTP/2
    # connection's nursery in an exception group).
    caplog.set_level(logging.DEBUG, logger="trioserve")
    client, server = trio.testing.lockstep_stream_pair()
    state = ServerState(hello_app, Config(access_log=False, http2=True, write_timeout=5))
    conn = H11Connection(server, state, client=("127.0.0.1", 5000), server=("127.0.0.1", 8000))
    closed: list[bool] = []

    async def on_run() -> None:
        await conn.run()
        closed.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_run)
        await client.send_all(PREFACE)
        with trio.fail_after(30):
            while not closed:
                await trio.sleep(1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert conn not in state.connections


async def test_a_large_body_to_a_slow_but_reading_client_is_not_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # write_timeout bounds how long a write may *stall*; a client that reads steadily, if
    # slowly, gets the whole of a body that takes longer than write_timeout to go out.
    body = b"x" * (1024 * 1024)

    async def app(scope: dict[str, object], receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    # A real socket pair (the transport's fast path), with small buffers: the body goes out
    # only as fast as the client reads it.
    left, right = trio.socket.socketpair()
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    client, server = trio.SocketStream(left), trio.SocketStream(right)
    state = ServerState(app, Config(access_log=False, write_timeout=10))
    conn = H11Connection(server, state, client=("127.0.0.1", 5000), server=("127.0.0.1", 8000))
    received = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while True:
            # 16 KiB a second: the body takes 64 s (write_timeout is 10), but it never stalls.
            data = await client.receive_some(16 * 1024)
            if not data:
                break
            received += data
            await trio.sleep(1)
        await client.aclose()
    head, _, got = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(got) == len(body)


async def test_an_h2_error_answer_that_cannot_go_out_resets_its_stream_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The client keeps every stream's window shut (SETTINGS_INITIAL_WINDOW_SIZE 0): the body of
    # a 500 cannot go out, and the stream is reset after write_timeout. The other stream on
    # the connection lives on (it used to be cancelled: the disconnect escaped the stream's
    # task from its error handler and took the whole connection down).
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await trio.sleep(20)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = Config(access_log=False, write_timeout=5)
    async with h2_connection(app, config, settings={"INITIAL_WINDOW_SIZE": 0}) as (client, _, _):
        slow = await client.request(request(b"GET", b"/slow"))
        failing = await client.request(request(b"GET", b"/fail"))
        failed = await client.response(failing)
        answered = await client.response(slow)
    assert failed.reset == INTERNAL_ERROR
    assert (answered.status, answered.reset) == (204, None)


async def test_a_cancelled_h2_connection_to_a_stalled_client_closes_promptly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Shutdown past its grace period cancels the connection. A stream cancelled while its
    # response is stuck in a write (the client stopped reading) must not then wait, shielded,
    # for write_timeout to write its RST_STREAM: the connection is going away anyway.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 60_000, "more_body": True})
        await send({"type": "http.response.body", "body": b"x"})

    left, right = trio.socket.socketpair()
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client_stream = trio.SocketStream(left)
    state = ServerState(app, Config(access_log=False, write_timeout=30))
    info = connection_info(state, ("127.0.0.1", 5000), ("127.0.0.1", 8000), "http", None)
    conn = H2Connection(Transport(trio.SocketStream(right), 30), state, info)
    raw = RawClient()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client_stream.send_all(raw.preface() + raw.headers(1))
        # The client reads nothing more; the server's writes stall. Then the grace period ends.
        await trio.sleep(1)
        nursery.cancel_scope.deadline = trio.current_time()
        cancelled_at = trio.current_time()
    assert trio.current_time() - cancelled_at < 5
    await client_stream.aclose()


async def test_fault_close_with_cancel_on_disconnect_is_no_app_error(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # trioserve.fault.close closes the socket while cancel_on_disconnect's watcher waits on it:
    # the watcher sees the end of the stream, not an "Exception in ASGI application".
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await trio.sleep(1)
        await send({"type": "trioserve.fault.close", "reset": False})

    caplog.set_level(logging.DEBUG, logger="trioserve")
    left, right = trio.socket.socketpair()
    client = trio.SocketStream(left)
    config = Config(access_log=False, fault_injection=True, cancel_on_disconnect=True)
    state = ServerState(app, config)
    conn = H11Connection(
        trio.SocketStream(right), state, client=("127.0.0.1", 5000), server=("127.0.0.1", 8000)
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await client.receive_some() == b""  # closed, nothing written
    await client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_redirect_to_https_is_not_bypassed_by_cleartext_http2(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # --redirect-to-https: plain listeners answer *every* request with a redirect. A client
    # speaking HTTP/2 with prior knowledge was handed over to HTTP/2 and served by the app,
    # in cleartext.
    called: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope["path"])
        await hello_app(scope, receive, send)

    client, server = trio.testing.memory_stream_pair()
    state = ServerState(app, Config(access_log=False, http2=True))
    conn = H11Connection(
        server,
        state,
        client=("127.0.0.1", 5000),
        server=("127.0.0.1", 8000),
        redirect_https_port=8443,
    )
    raw = RawClient()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client.send_all(raw.preface() + raw.headers(1))
        received = await client.receive_some()
        await trio.sleep(1)  # (virtual) time for the app to be called, were it to be
        nursery.cancel_scope.cancel()
    assert called == []
    assert received.startswith(b"HTTP/1.1 ")  # not an HTTP/2 SETTINGS frame


@pytest.mark.parametrize(
    ("pieces", "status", "reset"),
    [
        ([b"12345"], 500, None),  # one message: answered 500, as on HTTP/1.1
        ([b"123456789012"], 500, None),
        ([b"123", b"45"], 200, INTERNAL_ERROR),  # the head went out: the stream is reset
        ([b"12345", b"678901"], 200, INTERNAL_ERROR),
    ],
)
async def test_h2_body_contradicting_its_content_length_is_not_sent_as_whole(
    pieces: list[bytes], status: int, reset: int | None, autojump_clock: trio.testing.MockClock
) -> None:
    # Content-Length 10, and a body of another length: the response ended with END_STREAM
    # all the same, a malformed response (RFC 9113 section 8.1.1) that h2 clients reject by
    # ending the whole connection.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"10")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, piece in enumerate(pieces):
            more = index < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    async with h2_connection(app) as (client, _, _):
        response = await client.get(request(b"GET", b"/"))
        assert (response.status, response.reset) == (status, reset)
        # The connection lives on.
        assert (await client.get(request(b"HEAD", b"/"))).status == 200
