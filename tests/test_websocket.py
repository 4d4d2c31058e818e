"""ASGI websockets: handshake, messages, close codes, denial, limits, keepalive, shutdown.

Real sockets with the `websockets` library's client (in a worker thread), plus an in-memory
wsproto client for the keepalive test that needs a client which never answers pings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import websockets.exceptions
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from trioserve import Config

from ._helpers import in_thread, serving
from .conftest import connection


def echo_app(log: list[Any] | None = None, disconnected: trio.Event | None = None) -> Any:
    """Accepts, echoes, and logs the scope and the disconnect message (then sets
    ``disconnected``)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        if log is not None:
            log.append(dict(scope))
        assert (await receive())["type"] == "websocket.connect"
        subprotocol = scope["subprotocols"][0] if scope["subprotocols"] else None
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": subprotocol,
                "headers": [(b"x-accepted-by", b"trioserve-test")],
            }
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                if log is not None:
                    log.append(message)
                if disconnected is not None:
                    disconnected.set()
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo " + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": b"echo " + message["bytes"]})

    return app


async def test_echo_text_and_bytes_with_subprotocol_headers_and_deflate() -> None:
    log: list[Any] = []
    disconnected = trio.Event()
    async with serving(echo_app(log, disconnected)) as (_, address):
        url = f"ws://{address}"

        def client() -> tuple[Any, ...]:
            with connect(url + "/chat?room=1", subprotocols=["v2", "v1"]) as ws:
                ws.send("hello")
                text = ws.recv()
                ws.send(b"\x00\x01")
                data = ws.recv()
                big = "x" * 100_000
                ws.send(big)
                assert ws.recv() == "echo " + big
                headers = ws.response.headers
                return (
                    text,
                    data,
                    ws.subprotocol,
                    headers["x-accepted-by"],
                    headers.get("sec-websocket-extensions", ""),
                )

        text, data, subprotocol, accepted_by, extensions = await in_thread(client)
        with trio.fail_after(5):
            await disconnected.wait()
    assert (text, data) == ("echo hello", b"echo \x00\x01")
    assert subprotocol == "v2"
    assert accepted_by == "trioserve-test"
    assert extensions.startswith("permessage-deflate")
    scope, disconnect = log
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/chat"
    assert scope["query_string"] == b"room=1"
    assert scope["subprotocols"] == ["v2", "v1"]
    assert "websocket.http.response" in scope["extensions"]
    assert disconnect == {"type": "websocket.disconnect", "code": 1000, "reason": ""}


async def test_close_before_accept_is_http_403() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    async with serving(app) as (_, address):
        url = f"ws://{address}"

        def client() -> int:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(url + "/")
            return info.value.response.status_code

        assert await in_thread(client) == 403


async def test_http_response_extension_sends_a_custom_denial() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"log in first"})

    async with serving(app) as (_, address):
        url = f"ws://{address}"

        def client() -> tuple[int, bytes, str]:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(url + "/")
            response = info.value.response
            return response.status_code, response.body, response.headers["www-authenticate"]

        assert await in_thread(client) == (401, b"log in first", "Bearer")


async def test_custom_denial_body_may_come_in_several_messages() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"log ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"in first"})

    async with serving(app) as (_, address):
        url = f"ws://{address}"

        def client() -> tuple[int, bytes]:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(url + "/")
            return info.value.response.status_code, info.value.response.body

        assert await in_thread(client) == (401, b"log in first")


async def test_crash_before_accept_is_http_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            raise RuntimeError("boom")

    async with serving(app) as (_, address):
        url = f"ws://{address}"

        def client() -> int:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(url + "/")
            return info.value.response.status_code

        assert await in_thread(client) == 500


def closed_with(url: str, send_first: str | None = None) -> tuple[int, str]:
    """Connect, optionally send a message, and return the close code and reason."""
    with connect(url, max_size=None) as ws:
        if send_first is not None:
            ws.send(send_first)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
            while True:
                ws.recv(timeout=10)
        assert info.value.rcvd is not None
        return info.value.rcvd.code, info.value.rcvd.reason


def accepting(after_accept: Callable[[Any, Any], Any]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await after_accept(receive, send)

    return app


async def test_app_close_code_and_reason_reach_the_client() -> None:
    async def close(receive: Any, send: Any) -> None:
        await send({"type": "websocket.close", "code": 4001, "reason": "bye now"})

    async with serving(accepting(close)) as (_, address):
        url = f"ws://{address}"
        assert await in_thread(lambda: closed_with(url)) == (4001, "bye now")


async def test_app_returning_without_close_closes_with_1000() -> None:
    async def done(receive: Any, send: Any) -> None:
        await send({"type": "websocket.send", "text": "one message"})

    async with serving(accepting(done)) as (_, address):
        url = f"ws://{address}"

        def client() -> tuple[str, tuple[int, str]]:
            with connect(url) as ws:
                first = ws.recv(timeout=10)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert info.value.rcvd is not None
                return str(first), (info.value.rcvd.code, info.value.rcvd.reason)

        assert await in_thread(client) == ("one message", (1000, ""))


async def test_app_crash_after_accept_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def crash(receive: Any, send: Any) -> None:
        await receive()
        raise ValueError("handler bug")

    async with serving(accepting(crash)) as (_, address):
        url = f"ws://{address}"
        code, _ = await in_thread(lambda: closed_with(url, send_first="trigger"))
    assert code == 1011
    assert "ValueError: handler bug" in caplog.text


async def test_oversized_message_closes_with_1009() -> None:
    seen: list[Any] = []

    async def collect(receive: Any, send: Any) -> None:
        seen.append(await receive())

    async with serving(accepting(collect), ws_max_message_size=1000) as (_, address):
        url = f"ws://{address}"
        code, _ = await in_thread(lambda: closed_with(url, send_first="y" * 1001))
    assert code == 1009
    assert seen == [{"type": "websocket.disconnect", "code": 1009, "reason": ""}]


async def test_client_close_code_reaches_the_app() -> None:
    log: list[Any] = []
    disconnected = trio.Event()
    async with serving(echo_app(log, disconnected)) as (_, address):
        url = f"ws://{address}"

        def client() -> None:
            with connect(url) as ws:
                ws.close(code=4002, reason="client done")

        await in_thread(client)
        with trio.fail_after(5):
            await disconnected.wait()
    assert log[1] == {"type": "websocket.disconnect", "code": 4002, "reason": "client done"}


async def test_send_after_the_client_left_raises_oserror() -> None:
    outcome: list[str] = []
    done = trio.Event()

    async def keeps_sending(receive: Any, send: Any) -> None:
        try:
            assert (await receive())["type"] == "websocket.disconnect"
            with pytest.raises(OSError, match="closed"):
                await send({"type": "websocket.send", "text": "too late"})
            outcome.append("raised")
        finally:
            done.set()

    async with serving(accepting(keeps_sending)) as (_, address):
        url = f"ws://{address}"

        def client() -> None:
            with connect(url) as ws:
                ws.close()

        await in_thread(client)
        with trio.fail_after(5):
            await done.wait()
    assert outcome == ["raised"]


async def test_graceful_shutdown_closes_websockets_with_1001() -> None:
    log: list[Any] = []
    async with serving(echo_app(log), graceful_timeout=5) as (server, address):
        url = f"ws://{address}"
        codes: list[int] = []
        connected = trio.Event()

        def client() -> None:
            with connect(url) as ws:
                ws.send("ping")
                ws.recv(timeout=10)
                trio.from_thread.run_sync(connected.set)
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert info.value.rcvd is not None
                codes.append(info.value.rcvd.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, client)
            await connected.wait()
            server.begin_shutdown()
    assert codes == [1001]
    assert log[-1]["code"] == 1001


async def test_keepalive_closes_a_client_that_never_answers_pings(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def wait_forever(receive: Any, send: Any) -> None:
        await receive()

    config = Config(access_log=False, ws_ping_interval=20, ws_ping_timeout=10)
    async with connection(accepting(wait_forever), config) as (client, _):
        ws = WSConnection(ConnectionType.CLIENT)
        await client.send_raw(ws.send(Request(host="x", target="/")))
        events: list[Any] = []
        start = trio.current_time()
        with trio.fail_after(60):
            while not any(isinstance(event, CloseConnection) for event in events):
                data = await client.stream.receive_some(65536)
                assert data
                ws.receive_data(data)
                events.extend(ws.events())  # pings are received and deliberately ignored
    assert isinstance(events[0], AcceptConnection)
    assert any(isinstance(event, Ping) for event in events)
    close = events[-1]
    assert close.code == 1011
    assert 30 <= trio.current_time() - start < 31


async def test_bad_websocket_handshake_is_400() -> None:
    async with serving(echo_app()) as (_, address):
        url = f"ws://{address}"
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await stream.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        await stream.aclose()
    assert received.startswith(b"HTTP/1.1 400 ")


async def test_a_refused_websocket_frees_its_connection() -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})
            received.append(await receive())  # like Starlette's WebSocketEndpoint loop

    async with serving(app, max_connections=1) as (_, address):
        url = f"ws://{address}"

        def client() -> int:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                connect(url + "/")
            return info.value.response.status_code

        for _ in range(3):  # with a leaked slot, the second would never be accepted
            with trio.fail_after(5):
                assert await in_thread(client) == 403
    assert received[0]["type"] == "websocket.disconnect"


async def test_text_size_limit_counts_bytes_not_characters() -> None:
    async def collect(receive: Any, send: Any) -> None:
        await receive()

    async with serving(accepting(collect), ws_max_message_size=1000) as (_, address):
        url = f"ws://{address}"
        code, _ = await in_thread(lambda: closed_with(url, send_first="\u00e9" * 600))
    assert code == 1009  # 600 characters, 1200 bytes


# -- protocol errors, on the wire ---------------------------------------------------------------
# Frames are built by hand (wsproto would refuse to send most of these), masked as a client's
# must be. RFC 6455 section 7.4.1 gives the close codes: 1002 for a protocol error, 1007 for data
# that does not match the message type (invalid UTF-8).

_MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """One client frame: FIN, RSV1-3 (``rsv`` as a 3-bit number), opcode, masked payload."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    masked = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return head + _MASK + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


@asynccontextmanager
async def websocket(
    app: Any, config: Config | None = None
) -> AsyncIterator[tuple[Any, WSConnection]]:
    """An accepted websocket over an in-memory connection: the raw client and its wsproto."""
    async with connection(app, config or Config(access_log=False)) as (client, _):
        ws = WSConnection(ConnectionType.CLIENT)
        await client.send_raw(ws.send(Request(host="test", target="/ws")))
        while True:
            ws.receive_data(await client.stream.receive_some(65536))
            events = list(ws.events())
            if events:
                assert isinstance(events[0], AcceptConnection), events
                break
        yield client, ws


async def events_until_close(client: Any, ws: WSConnection) -> list[Any]:
    """What the server sends until its close frame (or until it drops the connection)."""
    events: list[Any] = []
    while not any(isinstance(event, CloseConnection) for event in events):
        data = await client.stream.receive_some(65536)
        if not data:
            break
        ws.receive_data(data)
        events.extend(ws.events())
    return events


def echo_until_disconnect(log: list[Any]) -> Any:
    async def echo(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({**message, "type": "websocket.send"})

    return accepting(echo)


_BAD_FRAMES = {
    "invalid UTF-8 text": (frame(0x1, b"caf\xc3"), 1007),
    "invalid UTF-8 across fragments": (frame(0x1, b"a", fin=False) + frame(0x0, b"\xff"), 1007),
    "invalid UTF-8 close reason": (frame(0x8, close_payload(1000, b"\xff")), 1007),
    "close payload of length 1": (frame(0x8, b"\x03"), 1002),
    "close code 999": (frame(0x8, close_payload(999)), 1002),
    "close code 1005 (never sent)": (frame(0x8, close_payload(1005)), 1002),
    "close code 1006 (never sent)": (frame(0x8, close_payload(1006)), 1002),
    "close code 1016 (unassigned)": (frame(0x8, close_payload(1016)), 1002),
    "close code 5000": (frame(0x8, close_payload(5000)), 1002),
    "RSV1 without an extension": (frame(0x1, b"x", rsv=4), 1002),
    "RSV2": (frame(0x1, b"x", rsv=2), 1002),
    "RSV3 on a ping": (frame(0x9, b"x", rsv=1), 1002),
    "reserved data opcode 3": (frame(0x3), 1002),
    "reserved control opcode 11": (frame(0xB, b"x"), 1002),
    "continuation without a message": (frame(0x0, b"x"), 1002),
    "new message inside a fragmented one": (frame(0x1, b"a", fin=False) + frame(0x2, b"b"), 1002),
    "ping payload over 125 bytes": (frame(0x9, b"p" * 126), 1002),
    "fragmented ping": (frame(0x9, b"p", fin=False), 1002),
    "fragmented close": (frame(0x8, close_payload(1000), fin=False), 1002),
    "unmasked frame": (b"\x81\x01x", 1002),
}


@pytest.mark.parametrize(("data", "code"), _BAD_FRAMES.values(), ids=_BAD_FRAMES.keys())
async def test_protocol_error_closes_with_its_code_and_tells_the_app(
    data: bytes, code: int
) -> None:
    log: list[Any] = []
    async with websocket(echo_until_disconnect(log)) as (client, ws):
        await client.send_raw(data)
        with trio.fail_after(5):
            events = await events_until_close(client, ws)
            assert await client.read_until_eof() == b""  # the server then drops the connection
    assert [type(event) for event in events] == [CloseConnection]
    assert events[0].code == code
    assert log == [{"type": "websocket.disconnect", "code": code, "reason": ""}]


_AFTER_A_VALID_MESSAGE = {
    "reserved bits": (frame(0x1, b"x", rsv=2), 1002),
    "invalid UTF-8": (frame(0x1, b"\xed\xa0\x80"), 1007),
    "reserved opcode": (frame(0x3), 1002),
    "fragmented ping": (frame(0x9, b"p", fin=False), 1002),
    "message over the limit": (frame(0x2, b"z" * 2000), 1009),
}


@pytest.mark.parametrize(
    ("bad", "code"), _AFTER_A_VALID_MESSAGE.values(), ids=_AFTER_A_VALID_MESSAGE.keys()
)
async def test_messages_before_a_bad_frame_are_answered_before_the_close(
    bad: bytes, code: int, autojump_clock: trio.testing.MockClock
) -> None:
    log: list[Any] = []
    config = Config(access_log=False, ws_max_message_size=1000)
    async with websocket(echo_until_disconnect(log), config) as (client, ws):
        start = trio.current_time()
        # One write: wsproto parses all three frames from one read.
        await client.send_raw(frame(0x1, b"Hello") + frame(0x2, b"\x00\x01") + bad)
        with trio.fail_after(5):
            events = await events_until_close(client, ws)
    assert [(type(event), event.data) for event in events[:2]] == [
        (TextMessage, "Hello"),
        (BytesMessage, b"\x00\x01"),
    ]
    assert isinstance(events[2], CloseConnection)
    assert events[2].code == code
    assert trio.current_time() - start < 0.1  # sent as soon as the app asked for more
    assert log[-1] == {"type": "websocket.disconnect", "code": code, "reason": ""}


async def test_protocol_error_while_the_app_is_busy_closes_after_a_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def busy(receive: Any, send: Any) -> None:
        await receive()
        await trio.sleep(3600)

    async with websocket(accepting(busy)) as (client, ws):
        start = trio.current_time()
        await client.send_raw(frame(0x1, b"work") + frame(0x3))
        with trio.fail_after(60):
            events = await events_until_close(client, ws)
        assert [type(event) for event in events] == [CloseConnection]
        assert events[0].code == 1002
        assert 2 <= trio.current_time() - start < 2.1


@pytest.mark.parametrize(
    "header",
    [
        (b"Connection", b"Upgrade, \xd6"),
        (b"Sec-WebSocket-Protocol", b"chat, \xd6"),
        (b"Sec-WebSocket-Extensions", b"permessage-deflate, \xd6"),
    ],
    ids=["Connection", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"],
)
async def test_non_ascii_handshake_header_is_400_without_a_traceback(
    header: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {
        b"Host": b"test",
        b"Upgrade": b"websocket",
        b"Connection": b"Upgrade",
        b"Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version": b"13",
    }
    headers[header[0]] = header[1]
    head = b"GET /ws HTTP/1.1\r\n" + b"".join(b"%s: %s\r\n" % item for item in headers.items())
    async with connection(echo_app()) as (client, _):
        await client.send_raw(head + b"\r\n")
        with trio.fail_after(5):
            response, _ = await client.response()
    assert response.status_code == 400
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


_DEFLATE_OFFERS = {
    # Several offers: the first acceptable one is the one used (RFC 7692 section 5).
    "first of two": (
        b"permessage-deflate; client_max_window_bits=9, permessage-deflate",
        b"permessage-deflate; client_max_window_bits=9",
    ),
    # Offers to decline (section 7): a parameter value that is invalid or unsupported (zlib has
    # no 8-bit raw deflate window) leaves nothing behind for the next offer.
    "invalid value": (
        b"permessage-deflate; client_max_window_bits=x, permessage-deflate; server_no_context_takeover",
        b"permessage-deflate; server_no_context_takeover",
    ),
    "unsupported value": (
        b"permessage-deflate; client_no_context_takeover; server_max_window_bits=8, "
        b"permessage-deflate",
        b"permessage-deflate",
    ),
}


@pytest.mark.parametrize(("offers", "agreed"), _DEFLATE_OFFERS.values(), ids=_DEFLATE_OFFERS.keys())
async def test_permessage_deflate_uses_the_first_acceptable_offer(
    offers: bytes, agreed: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    head = (
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: " + offers + b"\r\n\r\n"
    )
    async with connection(echo_app()) as (client, _):
        await client.send_raw(head)
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data:
                data += await client.stream.receive_some()
        response, rest = data.split(b"\r\n\r\n", 1)
        status, *lines = response.split(b"\r\n")
        assert status.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Extensions: " + agreed in lines
        # The client compresses as the response told it (a repeated 2 KiB block: back-references
        # beyond a 9-bit window if it may use 15 bits); the server must inflate it the same way.
        deflate = PerMessageDeflate()
        deflate.finalize(agreed.decode())
        ws = Connection(ConnectionType.CLIENT, extensions=[deflate])
        block = bytes(range(256)) * 8
        await client.send_raw(ws.send(BytesMessage(data=block * 3)))
        ws.receive_data(rest)
        with trio.fail_after(5):
            while not (events := list(ws.events())):
                ws.receive_data(await client.stream.receive_some())
    assert [(type(event), event.data) for event in events] == [(BytesMessage, b"echo " + block * 3)]
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
