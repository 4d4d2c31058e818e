"""H11Connection over in-memory streams: what a client sees on the wire, timeouts included.

The peer is a real ``h11.Connection(h11.CLIENT)`` (see ``conftest.ScriptedClient``); timeouts run
on trio's ``autojump_clock``, so no test sleeps for real. The ASGI semantics of a request
(receive/disconnect, 500-or-499, out-of-order messages, cancel_on_disconnect, faults, the access
line) are tested on a fake exchange in ``test_cycle.py``; the ones here that touch them also check
what the HTTP/1.1 connection does on the wire.
"""

from __future__ import annotations

import array
import json
import logging
import os
import re
from typing import Any

import h11
import pytest
import trio
import trio.testing

from trioserve import ClientDisconnected, Config
from trioserve._h2._connection import H2Connection
from trioserve._h11._connection import H11Connection
from trioserve._h11._protocol import ServerProtocol
from trioserve._http._state import ServerState

from .conftest import connection, header, hello_app

# Every test here runs on both HTTP/1.1 parsers (h11 and httptools).
pytestmark = pytest.mark.usefixtures("http_parser")

# -- keep-alive, pipelining, framing ---------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with connection(hello_app) as (client, _):
        for path in ("/a", "/b", "/c"):
            await client.request("GET", path)
            response, body = await client.response()
            assert response.status_code == 200
            assert body == f"GET {path}\n".encode()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with connection(hello_app) as (client, _):
        raw = (
            b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % index for index in range(5))
            + b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        )
        await client.send_raw(raw)
        # Drive the client-side parser by hand: it did not send the requests itself.
        client.h11 = h11.Connection(h11.CLIENT)
        bodies = []
        for _ in range(6):
            client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            client.h11.send(h11.EndOfMessage())
            _, body = await client.response()
            bodies.append(body)
        assert bodies == [b"GET /%d\n" % index for index in range(5)] + [b"POST /body\nabc"]


async def test_chunked_request_body_reaches_the_app() -> None:
    async with connection(hello_app) as (client, _):
        await client.send(
            h11.Request(
                method="POST",
                target="/up",
                headers=[("Host", "x"), ("Transfer-Encoding", "chunked")],
            ),
            h11.Data(data=b"hello "),
            h11.Data(data=b"world"),
            h11.EndOfMessage(),
        )
        response, body = await client.response()
        assert response.status_code == 200
        assert body == b"POST /up\nhello world"


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def test_response_without_length_is_chunked() -> None:
    async with connection(streaming_app) as (client, _):
        await client.request()
        response, body = await client.response()
        assert header(response, b"transfer-encoding") == b"chunked"
        assert body == b"one two three"
        # ... and the connection is still usable.
        await client.request()
        _, body = await client.response()
        assert body == b"one two three"


async def single_body_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"whole"})


async def test_single_message_body_gets_content_length() -> None:
    async with connection(single_body_app) as (client, _):
        await client.request()
        response, body = await client.response()
        assert header(response, b"content-length") == b"5"
        assert header(response, b"transfer-encoding") is None
        assert body == b"whole"


async def buffer_body_app(scope: Any, receive: Any, send: Any) -> None:
    # The body as a bytearray, a memoryview, two bytearrays, or (by mistake) an int, by path.
    kind = scope["path"].strip("/")
    bodies = {
        "bytearray": bytearray(b"abc"),
        "memoryview": memoryview(b"xyz"),
        "array": array.array("H", [0x4241, 0x4443]),  # a buffer of 2-byte items: b"ABCD"
    }
    body: object = bodies.get(kind, bytearray(b"head-") if kind == "streamed" else 3)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": kind == "streamed"})
    if kind == "streamed":
        await send({"type": "http.response.body", "body": bytearray(b"tail")})


async def test_buffer_bodies_are_sent_as_their_bytes_and_an_int_is_no_body() -> None:
    # Found in review: bytes(body) made an int body of 3 into three NUL bytes (a 200); only
    # buffers are bodies, anything else is the app's error (500).
    async with connection(buffer_body_app) as (client, _):
        for path, expected in (
            ("/bytearray", b"abc"),
            ("/memoryview", b"xyz"),
            ("/array", array.array("H", [0x4241, 0x4443]).tobytes()),
            ("/streamed", b"head-tail"),
        ):
            await client.request("GET", path)
            response, body = await client.response()
            assert (response.status_code, body) == (200, expected)
    async with connection(buffer_body_app) as (client, _):
        await client.request("GET", "/int")
        response, body = await client.response()
        assert response.status_code == 500
        assert b"\x00" not in body


async def test_head_gets_headers_and_no_body() -> None:
    async with connection(hello_app) as (client, _):
        await client.request("HEAD", "/x")
        response, body = await client.response()
        assert response.status_code == 200
        assert header(response, b"content-length") == b"8"
        assert body == b""
        await client.request("GET", "/y")
        _, body = await client.response()
        assert body == b"GET /y\n"


async def test_http10_client_gets_close_delimited_response() -> None:
    async with connection(streaming_app) as (client, _):
        await client.send_raw(b"GET / HTTP/1.0\r\n\r\n")
        raw = await client.read_until_eof()
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding" not in raw.lower()
        assert raw.endswith(b"\r\n\r\none two three")


async def test_http10_keep_alive_with_content_length() -> None:
    async with connection(hello_app) as (client, _):
        await client.send_raw(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.h11.send(h11.EndOfMessage())
        response, body = await client.response()
        assert body == b"GET /a\n"
        assert response.http_version == b"1.1"


async def test_client_connection_close_closes_after_response() -> None:
    async with connection(hello_app) as (client, _):
        await client.request(headers=[("Connection", "close")])
        response, body = await client.response()
        assert body == b"GET /\n"
        assert header(response, b"connection") == b"close"
        assert await client.stream.receive_some(10) == b""


async def test_date_header_present_and_server_header_optional() -> None:
    async with connection(hello_app) as (client, _):
        await client.request()
        response, _ = await client.response()
        assert header(response, b"date") is not None
        assert header(response, b"server") is None
    config = Config(access_log=False, server_header="trioserve", date_header=False)
    async with connection(hello_app, config) as (client, _):
        await client.request()
        response, _ = await client.response()
        assert header(response, b"server") == b"trioserve"
        assert header(response, b"date") is None


async def scope_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    shown = {key: scope[key] for key in ("path", "raw_path", "query_string", "root_path")}
    body = repr(shown).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_absolute_form_target_maps_to_path_and_query() -> None:
    async with connection(scope_app) as (client, _):
        await client.request("GET", "http://example.com/a%20b/c?q=1")
        _, body = await client.response()
        assert eval(body) == {
            "path": "/a b/c",
            "raw_path": b"/a%20b/c",
            "query_string": b"q=1",
            "root_path": "",
        }


async def test_root_path_prefixes_path() -> None:
    async with connection(scope_app, Config(access_log=False, root_path="/api")) as (client, _):
        await client.request("GET", "/users")
        _, body = await client.response()
        assert eval(body)["path"] == "/api/users"
        assert eval(body)["root_path"] == "/api"


async def full_scope_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    scope_copy = dict(scope)
    body = repr(scope_copy).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_scope_carries_the_asgi_keys() -> None:
    async with connection(full_scope_app) as (client, _):
        await client.request("GET", "/p?x=y", headers=[("X-Dup", "1"), ("x-dup", "2")])
        _, body = await client.response()
        scope = eval(body)
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
        assert scope["http_version"] == "1.1"
        assert scope["method"] == "GET"
        assert scope["scheme"] == "http"
        assert scope["client"] == ("127.0.0.1", 5000)
        assert scope["server"] == ("127.0.0.1", 8000)
        assert scope["headers"] == [(b"host", b"test"), (b"x-dup", b"1"), (b"x-dup", b"2")]
        assert "http.response.pathsend" in scope["extensions"]
        assert scope["state"] == {}


# -- Expect: 100-continue ----------------------------------------------------------------------


async def test_100_continue_is_sent_only_when_the_app_reads() -> None:
    async with connection(hello_app) as (client, _):
        await client.send(
            h11.Request(
                method="POST",
                target="/",
                headers=[("Host", "x"), ("Content-Length", "3"), ("Expect", "100-continue")],
            )
        )
        interim = await client.next_event()
        assert isinstance(interim, h11.InformationalResponse)
        assert interim.status_code == 100
        await client.send(h11.Data(data=b"abc"), h11.EndOfMessage())
        _, body = await client.response()
        assert body == b"POST /\nabc"


async def no_read_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 403, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


async def test_100_continue_not_sent_when_the_app_answers_without_reading() -> None:
    async with connection(no_read_app) as (client, _):
        await client.send_raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        raw = await client.read_until_eof()
        assert raw.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert b"100 Continue" not in raw
        assert b"connection: close" in raw.lower()


async def test_expect_with_body_over_limit_gets_413_instead_of_100() -> None:
    config = Config(access_log=False, max_body_size=10)
    async with connection(hello_app, config) as (client, _):
        await client.send_raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
        )
        raw = await client.read_until_eof()
        assert raw.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in raw


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"BLAH\r\n\r\n", 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\na", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x1fb\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", 501),
        (b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBig: " + b"a" * 17000 + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n", 413),
    ],
)
async def test_bad_request_gets_status_and_close(request_bytes: bytes, status: int) -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async with connection(app) as (client, _):
        await client.send_raw(request_bytes)
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    assert b"\r\nconnection: close\r\n" in raw
    assert not called


async def test_http2_preface_gets_400_when_http2_is_off() -> None:
    async with connection(hello_app, Config(access_log=False, http2=False)) as (client, _):
        await client.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:80]
    assert b"HTTP/2 is not supported on this port" in raw


async def test_chunked_body_over_limit_gets_413_and_the_app_sees_a_disconnect() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                break
        with pytest.raises(ClientDisconnected):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})

    config = Config(access_log=False, max_body_size=8)
    async with connection(app, config) as (client, _):
        await client.send_raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n"
        )
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert seen[-1] == {"type": "http.disconnect"}


# -- app failures ------------------------------------------------------------------------------


async def crash_before_start(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError("boom")


async def test_app_exception_before_response_gets_500(caplog: pytest.LogCaptureFixture) -> None:
    async with connection(crash_before_start) as (client, _):
        await client.request()
        response, body = await client.response()
    assert response.status_code == 500
    assert (b"content-type", b"text/plain; charset=utf-8") in response.headers
    assert (b"vary", b"Accept") in response.headers
    assert body == b"500 Internal Server Error\n"
    assert "Exception in ASGI application" in caplog.text
    assert "ValueError: boom" in caplog.text


async def crash_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom")


async def test_app_exception_after_response_started_closes_without_terminating() -> None:
    async with connection(crash_after_start) as (client, _):
        await client.request()
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"7\r\npartial\r\n")  # no terminating 0-chunk: the client sees truncation


# Messages out of order are the request cycle's (test_cycle.py); these the HTTP/1.1 protocol
# refuses to put on the wire.
@pytest.mark.parametrize(
    "messages",
    [
        [
            {"type": "http.response.start", "status": 200, "headers": [(b"bad name", b"v")]},
            {"type": "http.response.body", "body": b""},
        ],
        [{"type": "http.response.start", "status": 99}, {"type": "http.response.body"}],
    ],
)
async def test_invalid_messages_get_500(
    messages: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    async with connection(app) as (client, _):
        await client.request()
        response, _ = await client.response()
    assert response.status_code == 500
    assert "Exception in ASGI application" in caplog.text


async def test_body_shorter_than_content_length_in_one_message_gets_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        await send({"type": "http.response.body", "body": b"short"})

    async with connection(app) as (client, _):
        await client.request()
        response, _ = await client.response()
    assert response.status_code == 500


async def test_body_shorter_than_content_length_when_streamed_closes_the_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
        )
        await send({"type": "http.response.body", "body": b"short", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with connection(app) as (client, _):
        await client.request()
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.endswith(b"\r\n\r\nshort")  # the client sees 5 of 10 bytes, then EOF


# -- disconnects -------------------------------------------------------------------------------


async def test_disconnect_delivered_while_the_app_streams() -> None:
    # On the wire: the connection reads for the client's EOF while the app writes.
    disconnected = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                message = await receive()
                assert message["type"] == "http.disconnect"
                disconnected.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            while True:
                await send({"type": "http.response.body", "body": b"tick", "more_body": True})
                await trio.sleep(1)

    async with connection(app) as (client, _):
        await client.request()
        await client.next_event()
        await client.stream.aclose()
        with trio.fail_after(5):
            await disconnected.wait()


# -- timeouts (autojump_clock: virtual time) ---------------------------------------------------


async def test_silent_new_connection_is_closed_after_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, header_timeout=10)
    async with connection(hello_app, config) as (client, _):
        start = trio.current_time()
        assert await client.read_until_eof() == b""
        assert 10 <= trio.current_time() - start < 11


async def test_slowloris_head_gets_408_after_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, header_timeout=10)
    async with connection(hello_app, config) as (client, _):
        start = trio.current_time()
        await client.send_raw(b"GET / HTTP/1.1\r\n")

        async def drip() -> None:
            # One header line a second: each read makes progress, the head never completes.
            try:
                while True:
                    await trio.sleep(1)
                    await client.send_raw(b"X-a: b\r\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drip)
            first = await client.stream.receive_some(65536)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        assert first.startswith(b"HTTP/1.1 408 ")
        assert 10 <= elapsed < 11


async def test_idle_keep_alive_connection_closes_after_keep_alive_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, keep_alive_timeout=5)
    async with connection(hello_app, config) as (client, _):
        await client.request()
        await client.response()
        start = trio.current_time()
        assert await client.read_until_eof() == b""
        assert 5 <= trio.current_time() - start < 6


async def test_connections_parse_with_the_parser_under_test(
    http_parser: type[ServerProtocol],
) -> None:
    # The parametrisation of this module is real in either build (a compiled connection module
    # cannot be patched): each connection parses with the parser under test.
    _, server_stream = trio.testing.memory_stream_pair()
    state = ServerState(hello_app, Config(access_log=False))
    conn = H11Connection(server_stream, state, client=("127.0.0.1", 5000), server=None)
    assert type(conn._proto) is http_parser


async def test_keep_alive_timeout_holds_without_the_servers_idle_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A connection run on its own (no server running the IdleTimer) times its keep-alive wait
    # with its own deadline.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    state = ServerState(hello_app, Config(access_log=False, keep_alive_timeout=5))
    conn = H11Connection(server_stream, state, client=("127.0.0.1", 5000), server=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await client_stream.receive_some(65536)
        assert response.startswith(b"HTTP/1.1 200 ")
        start = trio.current_time()
        assert await client_stream.receive_some(65536) == b""
        assert 5 <= trio.current_time() - start < 6
    assert not state.idle_timer.running


async def test_a_request_just_before_the_keep_alive_timeout_is_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, keep_alive_timeout=5)
    async with connection(hello_app, config) as (client, _):
        await client.request()
        await client.response()
        await trio.sleep(4.9)
        await client.request(target="/again")
        response, body = await client.response()
        assert response.status_code == 200
        assert body.startswith(b"GET /again")
        # ...and the next idle wait gets a whole timeout of its own.
        start = trio.current_time()
        assert await client.read_until_eof() == b""
        assert 5 <= trio.current_time() - start < 6


async def test_a_request_still_running_when_its_idle_waits_deadline_passes_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A connection leaves its keep-alive entry in the server's timer while it is busy: the
    # entry's deadline passing mid-request must not close it.
    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await trio.sleep(3)
        await hello_app(scope, receive, send)

    config = Config(access_log=False, keep_alive_timeout=5)
    async with connection(slow_app, config) as (client, _):
        await client.request()
        await client.response()
        await trio.sleep(4)
        sent = trio.current_time()
        await client.request(target="/slow")  # idle since 0; busy from 4 to 7, past 5
        response, body = await client.response()
        assert response.status_code == 200
        assert body == b"GET /slow\n"
        assert trio.current_time() - sent >= 3
        await client.request(target="/after")
        response, body = await client.response()
        assert body == b"GET /after\n"
        start = trio.current_time()
        assert await client.read_until_eof() == b""
        assert 5 <= trio.current_time() - start < 6


async def test_stalled_request_body_gets_408_after_body_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, body_timeout=30)
    async with connection(hello_app, config) as (client, _):
        await client.send_raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        start = trio.current_time()
        raw = await client.read_until_eof()
        assert raw.startswith(b"HTTP/1.1 408 ")
        assert 30 <= trio.current_time() - start < 31 + 2  # plus the bounded linger


async def test_client_that_stops_reading_is_cut_off_after_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    finished = trio.Event()
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
        except OSError:
            outcome.append("send raised OSError")
        finally:
            finished.set()

    config = Config(access_log=False, write_timeout=7)
    async with connection(app, config, lockstep=True) as (client, _):
        await client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        start = trio.current_time()
        await finished.wait()  # the client never reads a byte
        assert 7 <= trio.current_time() - start < 8
    assert outcome == ["send raised OSError"]


async def test_draining_closes_idle_connections_at_once() -> None:
    async with connection(hello_app) as (client, state):
        await client.request()
        await client.response()
        state.draining = True
        for conn in list(state.connections):
            conn.stop_idle()
        with trio.fail_after(1):
            assert await client.read_until_eof() == b""


async def test_draining_answers_the_request_in_flight_with_connection_close() -> None:
    in_app = trio.Event()
    release = trio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        in_app.set()
        await release.wait()
        await hello_app(scope, receive, send)

    async with connection(slow_app) as (client, state):
        await client.request()
        await in_app.wait()
        state.draining = True
        for conn in list(state.connections):
            conn.stop_idle()  # busy, not idle: must not be closed
        release.set()
        response, body = await client.response()
        assert response.status_code == 200
        assert body == b"GET /\n"
        assert header(response, b"connection") == b"close"
        assert await client.read_until_eof() == b""


async def test_new_connection_while_draining_is_closed_before_reading() -> None:
    async with connection(hello_app) as (client, state):
        state.draining = True  # before the connection task even runs
        assert await client.read_until_eof() == b""


async def test_unread_small_body_is_drained_and_keep_alive_continues() -> None:
    async with connection(no_read_app) as (client, _):
        await client.request("POST", "/", body=b"x" * 1000)
        response, _ = await client.response()
        assert response.status_code == 403
        await client.request("POST", "/", body=b"y" * 10)
        response, _ = await client.response()
        assert response.status_code == 403


async def test_one_client_speaking_garbage_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    async with connection(hello_app) as (bad, _), connection(hello_app) as (good, _):
        await bad.send_raw(b"\x00\x01\x02 garbage\r\n\r\n")
        await good.request()
        response, _ = await good.response()
        assert response.status_code == 200
        assert (await bad.read_until_eof()).startswith(b"HTTP/1.1 400 ")


def pathsend_app(
    path: str | os.PathLike[str], headers: list[tuple[bytes, bytes]] | None = None
) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers or []})
        await send({"type": "http.response.pathsend", "path": path})

    return app


async def test_a_pathsend_path_may_be_a_path_object_and_nothing_else(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "f.txt").write_bytes(b"file body")
    async with connection(pathsend_app(tmp_path / "f.txt")) as (client, _):
        await client.request()
        response, body = await client.response()
    assert response.status_code == 200
    assert body == b"file body"
    async with connection(pathsend_app(b"/etc/passwd")) as (client, _):  # type: ignore[arg-type]
        await client.request()
        response, _ = await client.response()
    assert response.status_code == 500
    assert "'http.response.pathsend' needs a str path, not b'/etc/passwd'" in caplog.text


@pytest.mark.parametrize("status", ["200", 200.0, None])
async def test_a_status_that_is_not_an_int_is_the_apps_error(
    status: object, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"never"})

    async with connection(app) as (client, _):
        await client.request()
        response, body = await client.response()
    assert response.status_code == 500
    assert body == b"500 Internal Server Error\n"
    assert f"ResponseError: invalid status for a final response: {status!r}" in caplog.text


@pytest.mark.parametrize("size", [0, 10, 64 * 1024, 64 * 1024 + 1, 300_000])
async def test_pathsend_over_a_non_socket_stream_sends_the_file(tmp_path: Any, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "f.bin").write_bytes(data)
    async with connection(pathsend_app(str(tmp_path / "f.bin"))) as (client, _):
        await client.request()
        response, body = await client.response()
        assert header(response, b"content-length") == str(size).encode()
        assert body == data
        # keep-alive still works after a file body
        await client.request("HEAD")
        response, body = await client.response()
        assert header(response, b"content-length") == str(size).encode()
        assert body == b""


async def test_pathsend_of_a_directory_is_an_app_error(tmp_path: Any) -> None:
    async with connection(pathsend_app(str(tmp_path))) as (client, _):
        await client.request()
        response, _ = await client.response()
    assert response.status_code == 500


async def test_pathsend_of_a_missing_file_is_an_app_error(tmp_path: Any) -> None:
    async with connection(pathsend_app(str(tmp_path / "missing"))) as (client, _):
        await client.request()
        response, _ = await client.response()
    assert response.status_code == 500


# -- cancel_on_disconnect ------------------------------------------------------------------------


async def test_cancel_on_disconnect_while_the_body_is_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On the wire: EOF in the middle of a Content-Length body is the client leaving.
    cancelled = trio.Event()

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            await trio.sleep(100)
        except trio.Cancelled:
            cancelled.set()
            raise

    config = Config(access_log=False, cancel_on_disconnect=True)
    async with connection(reader, config) as (client, _):
        await client.send_raw(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        await trio.sleep(1)
        await client.stream.aclose()
        with trio.fail_after(1):
            await cancelled.wait()


async def test_cancel_on_disconnect_leaves_complete_requests_alone() -> None:
    # On the wire: the disconnect watcher must not take the next request on the connection.
    async with connection(hello_app, Config(access_log=False, cancel_on_disconnect=True)) as (
        client,
        _,
    ):
        for path in ("/a", "/b"):
            await client.request("POST", path, body=b"data")
            _, body = await client.response()
            assert body == f"POST {path}\n".encode() + b"data"


# -- regressions from review ---------------------------------------------------------------------


async def test_a_client_flooding_pipelined_bytes_is_still_seen_leaving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got = trio.Event()

    async def long_poll(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        assert (await receive())["type"] == "http.disconnect"
        got.set()

    async with connection(long_poll) as (client, _):
        await client.send_raw(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n" + b"j" * 20_000)
        await client.stream.aclose()
        with trio.fail_after(1):
            await got.wait()


async def test_no_100_continue_once_the_response_has_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        message = await receive()
        await send({"type": "http.response.body", "body": message.get("body", b"")})

    async with connection(app) as (client, _):
        await client.send_raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
        )
        # Like curl: no 100 came, so after a second the client sends the body anyway.
        await trio.sleep(1)
        await client.send_raw(b"abc")
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"100 Continue" not in raw
    assert raw.endswith(b"5\r\nfirst\r\n3\r\nabc\r\n0\r\n\r\n")


async def test_a_request_racing_shutdown_is_never_served_under_cancellation() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await trio.lowlevel.checkpoint()
            seen.append("ran")
            await hello_app(scope, receive, send)
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    async with connection(app) as (client, state):
        await client.request()
        await client.response()
        # The next request and the shutdown arrive in the same scheduling round.
        await client.send_raw(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        state.draining = True
        for conn in list(state.connections):
            conn.stop_idle()
        raw = await client.read_until_eof()
    assert "cancelled" not in seen
    assert b"408" not in raw


async def test_error_after_a_head_request_still_has_its_body() -> None:
    async with connection(hello_app) as (client, _):
        await client.request("HEAD")
        await client.response()
        await client.send_raw(b"BAD REQUEST LINE\r\n\r\n")
        raw = await client.read_until_eof()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert len(body) == length > 0


async def test_lf_only_head_with_a_binary_body_is_accepted() -> None:
    async with connection(hello_app) as (client, _):
        await client.send_raw(b"POST /lf HTTP/1.1\nHost: x\nContent-Length: 4\n\n\x01\x02\r\x7f")
        client.h11 = h11.Connection(h11.CLIENT)
        client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.h11.send(h11.EndOfMessage())
        response, body = await client.response()
    assert response.status_code == 200
    assert body == b"POST /lf\n\x01\x02\r\x7f"


async def test_refused_upgrade_with_a_body_keeps_the_connection() -> None:
    async with connection(hello_app) as (client, _):
        await client.send_raw(
            b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
            b"Content-Length: 2\r\n\r\nhi"
            b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        client.h11 = h11.Connection(h11.CLIENT)
        bodies = []
        for _ in range(2):
            client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            client.h11.send(h11.EndOfMessage())
            _, body = await client.response()
            bodies.append(body)
    assert bodies == [b"POST /up\nhi", b"GET /next\n"]


async def test_a_refused_request_is_logged_with_the_access_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Server-written errors go through the same formatter as app responses: same fields, and
    # the bytes are the body's, not head plus body.
    caplog.set_level(logging.INFO, logger="trioserve.access")
    config = Config(access_log_json=True, max_body_size=10)
    async with connection(hello_app, config) as (client, _):
        await client.send_raw(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        raw = await client.read_until_eof()
    body = raw.partition(b"\r\n\r\n")[2]
    [line] = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    record = json.loads(line)
    assert record["status"] == 413
    assert record["method"] == "POST"
    assert record["target"] == "/upload"
    assert record["http_version"] == "1.1"
    assert record["bytes"] == len(body) > 0


async def test_an_unparsable_request_is_logged_in_the_default_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with connection(hello_app, Config()) as (client, _):
        await client.send_raw(b"GARBAGE\r\n\r\n")
        raw = await client.read_until_eof()
    body = raw.partition(b"\r\n\r\n")[2]
    [line] = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert line.startswith(f'127.0.0.1:5000 - "- - HTTP/1.1" 400 {len(body)} ')
    assert line.endswith("ms")


# -- HTTP/1.1 strictness on the wire -----------------------------------------------------------


async def refused_on_the_wire(data: bytes, config: Config | None = None) -> bytes:
    """The whole answer to ``data`` (read until the server closes)."""
    async with connection(hello_app, config) as (client, _):
        await client.send_raw(data)
        return await client.read_until_eof()


@pytest.mark.parametrize(
    "data",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@x\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://user@x/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
async def test_malformed_request_gets_400_and_a_closed_connection(data: bytes) -> None:
    # A valid request right behind it must never be served on this connection.
    raw = await refused_on_the_wire(data + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in raw
    assert raw.count(b"HTTP/1.1 ") == 1
    assert b"GET /next" not in raw


async def test_target_over_the_head_limit_gets_414_on_the_wire() -> None:
    raw = await refused_on_the_wire(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 414 ")


async def test_chunk_over_the_body_limit_gets_413_without_waiting_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, max_body_size=1000)
    async with connection(hello_app, config) as (client, _):
        start = trio.current_time()
        # Only the size line: the client never sends the chunk (the body timeout is 30 s).
        await client.send_raw(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\n"
        )
        raw = await client.read_until_eof()
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert trio.current_time() - start < 1


async def host_app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    hosts = b",".join(value for name, value in scope["headers"] if name == b"host")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": hosts + b" " + scope["path"].encode()})


async def test_absolute_form_target_authority_is_the_host_the_app_sees() -> None:
    async with connection(host_app) as (client, _):
        await client.send(
            h11.Request(
                method="GET", target="http://example.com:8080/p?q", headers=[("Host", "o")]
            ),
            h11.EndOfMessage(),
        )
        _, body = await client.response()
    assert body == b"example.com:8080 /p"


async def test_http_1_2_request_is_answered_as_http_1_1_and_kept_alive() -> None:
    async with connection(hello_app) as (client, _):
        await client.send_raw(
            b"GET /one HTTP/1.2\r\nHost: x\r\n\r\nGET /two HTTP/1.2\r\nHost: x\r\n\r\n"
        )
        # The client side's parser must believe it sent requests, to read their responses.
        client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.h11.send(h11.EndOfMessage())
        first, body_one = await client.response()
        client.h11.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        client.h11.send(h11.EndOfMessage())
        _, body_two = await client.response()
    assert first.http_version == b"1.1"
    assert first.status_code == 200
    assert (body_one, body_two) == (b"GET /one\n", b"GET /two\n")


async def test_a_group_of_disconnects_from_http2_is_no_unexpected_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An h2c connection's nursery can end with a group of its clients' disconnects only: the
    # ordinary end of a connection, not logged as an error (subgroup() with a predicate once
    # matched the whole group and logged every such end).
    async def h2c_ending_with(*errors: Exception) -> None:
        """Serve an h2c connection whose HTTP/2 side ends with a group of ``errors``."""

        async def serve(self: H2Connection) -> None:
            raise BaseExceptionGroup("streams", list(errors))

        monkeypatch.setattr(H2Connection, "serve", serve)
        async with connection(hello_app, Config(access_log=False, http2=True)) as (client, _):
            await client.send_raw(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            with trio.fail_after(5):
                assert await client.stream.receive_some(100) == b""  # closed, nothing written

    await h2c_ending_with(ClientDisconnected("gone"), ClientDisconnected("too"))
    assert "Unexpected error" not in caplog.text

    await h2c_ending_with(ClientDisconnected("gone"), ValueError("a bug"))
    assert "Unexpected error on the connection from 127.0.0.1:5000" in caplog.text
    assert "ValueError: a bug" in caplog.text
    assert "ClientDisconnected: gone" not in caplog.text  # only the unexpected part is logged
