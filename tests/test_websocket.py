"""ASGI websockets: handshake, messages, close codes, denial, limits, keepalive, shutdown.

Real sockets with the `websockets` library's client (in a worker thread), plus an in-memory
wsproto client for the keepalive test that needs a client which never answers pings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import websockets.exceptions
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

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
