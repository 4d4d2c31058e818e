"""Websockets over HTTP/2 (RFC 8441) over in-memory streams: an h2 client opens them with an
extended CONNECT, and wsproto's frame layer (no handshake) plays the websocket client."""

from __future__ import annotations

from typing import Any

import h2.events
import h2.settings
import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from trioserve import Config

from .h2_helpers import H2Client, Headers, h2_connection

CONNECT: Headers = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":authority", b"example.test"),
    (b":path", b"/chat?room=1"),
    (b"sec-websocket-version", b"13"),
]


def connect(*extra: tuple[bytes, bytes]) -> Headers:
    return [*CONNECT, *extra]


class WsClient:
    """The client end of one websocket on an HTTP/2 stream."""

    def __init__(self, client: H2Client, stream_id: int, ws: Connection) -> None:
        self.client = client
        self.stream_id = stream_id
        self.ws = ws
        self._seen = 0
        self.ended = False

    async def send(self, event: Event) -> None:
        self.client.conn.send_data(self.stream_id, self.ws.send(event))
        await self.client.flush()

    async def events(self) -> list[Event]:
        """Read until the server's frames make at least one websocket event (or the stream
        ends: then ``[]``)."""
        while True:
            new = self.client.stream_events(self.stream_id)[self._seen :]
            self._seen += len(new)
            for event in new:
                if isinstance(event, h2.events.DataReceived) and event.data:
                    self.ws.receive_data(event.data)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self.ended = True
            got = list(self.ws.events())
            if got or self.ended:
                return got
            await self.client.receive()
            assert not self.client.closed, "the server closed the connection"

    async def event(self) -> Event:
        got = await self.events()
        assert len(got) == 1, got
        return got[0]

    async def close_handshake(self, code: int = 1000) -> Event:
        """Close from the client side; the server's answering close frame."""
        await self.send(CloseConnection(code=code))
        return await self.event()


async def open_ws(
    client: H2Client, headers: Headers = CONNECT
) -> tuple[WsClient, int, list[tuple[bytes, bytes]]]:
    """Extended CONNECT; the websocket client, the response status and its headers."""
    stream_id = await client.request(headers, end=False)
    await client.wait_for(
        lambda: any(
            isinstance(e, h2.events.ResponseReceived | h2.events.StreamReset)
            for e in client.stream_events(stream_id)
        )
    )
    fields: list[tuple[bytes, bytes]] = []
    for event in client.stream_events(stream_id):
        if isinstance(event, h2.events.ResponseReceived):
            fields = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
    status = int(dict(fields).get(b":status", b"0"))
    ws = WsClient(client, stream_id, Connection(ConnectionType.CLIENT))
    return ws, status, [f for f in fields if not f[0].startswith(b":")]


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
            return
        await send(
            {
                "type": "websocket.send",
                **{k: message[k] for k in ("text", "bytes") if message.get(k) is not None},
            }
        )


# -- the handshake -------------------------------------------------------------------------------


async def test_server_advertises_enable_connect_protocol(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(echo_app) as (client, _, _):
        await client.wait_for(
            lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.events)
        )
    changed = next(e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged))
    setting = changed.changed_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]
    assert setting.new_value == 1


async def test_extended_connect_runs_the_websocket_scope_and_echoes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await echo_app(scope, receive, send)

    async with h2_connection(app) as (client, _, state):
        ws, status, headers = await open_ws(
            client, connect((b"sec-websocket-protocol", b"chat, superchat"))
        )
        assert status == 200
        assert (b"sec-websocket-protocol", b"chat") in headers
        assert state.websockets == 1
        await ws.send(TextMessage(data="héllo"))
        assert (await ws.event()) == TextMessage(data="héllo", frame_finished=True)
        await ws.send(BytesMessage(data=b"\x00\x01"))
        echoed = await ws.event()
        assert isinstance(echoed, BytesMessage)
        assert echoed.data == b"\x00\x01"
        closing = await ws.close_handshake()
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1000
        await ws.events()
        assert ws.ended  # the server ended its side of the stream after the close frames
        await client.wait_for(lambda: state.websockets == 0)
        await client.wait_for(
            lambda: any(isinstance(e, h2.events.StreamReset) for e in client.events)
        )
        # The client had not ended its side: asked to stop sending, without an error.
        reset = next(e for e in client.events if isinstance(e, h2.events.StreamReset))
        assert reset.error_code == 0
        await client.wait_for(lambda: state.websockets == 0)
    scope = scopes[0]
    assert scope["http_version"] == "2"
    assert (scope["scheme"], scope["path"], scope["query_string"]) == ("ws", "/chat", b"room=1")
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert "method" not in scope
    assert dict(scope["headers"])[b"host"] == b"example.test"


async def test_the_connection_serves_http_requests_beside_a_websocket(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await echo_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    async with h2_connection(app) as (client, _, _):
        ws, status, _ = await open_ws(client)
        assert status == 200
        response = await client.get()
        assert (response.status, response.body) == (200, b"plain")
        await ws.send(TextMessage(data="still here"))
        assert (await ws.event()) == TextMessage(data="still here", frame_finished=True)


async def test_plain_connect_without_protocol_is_405(
    autojump_clock: trio.testing.MockClock,
) -> None:
    headers = [(b":method", b"CONNECT"), (b":authority", b"example.test:443")]
    async with h2_connection(echo_app) as (client, _, _):
        response = await client.response(await client.request(headers))
    assert response.status == 405


async def test_extended_connect_with_another_protocol_is_501(
    autojump_clock: trio.testing.MockClock,
) -> None:
    headers = [(k, b"webtransport" if k == b":protocol" else v) for k, v in CONNECT]
    async with h2_connection(echo_app) as (client, _, _):
        _, status, _ = await open_ws(client, headers)
    assert status == 501


async def test_extended_connect_without_websocket_version_is_400(
    autojump_clock: trio.testing.MockClock,
) -> None:
    headers = [(k, v) for k, v in CONNECT if k != b"sec-websocket-version"]
    async with h2_connection(echo_app) as (client, _, _):
        response = await client.response(await client.request(headers, end=False))
    assert response.status == 400
    assert b"sec-websocket-version" in response.body


async def test_websocket_over_the_limit_is_503(autojump_clock: trio.testing.MockClock) -> None:
    async with h2_connection(echo_app, Config(access_log=False, max_websockets=1)) as (
        client,
        _,
        _,
    ):
        _, first, _ = await open_ws(client)
        _, second, _ = await open_ws(client)
    assert (first, second) == (200, 503)


# -- denials -------------------------------------------------------------------------------------


async def test_app_closing_before_accept_denies_with_403(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close"})

    async with h2_connection(app) as (client, _, _):
        response = await client.response(await client.request(CONNECT, end=False))
    assert (response.status, response.body, response.reset) == (403, b"", None)


async def test_app_denies_with_its_own_http_response(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"who", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b" are you?"})

    async with h2_connection(app) as (client, _, _):
        response = await client.response(await client.request(CONNECT, end=False))
    assert (response.status, response.body) == (401, b"who are you?")
    assert response.header(b"www-authenticate") == b"Bearer"


async def test_app_crashing_before_accept_is_500(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async with h2_connection(app) as (client, _, _):
        response = await client.response(await client.request(CONNECT, end=False))
    assert response.status == 500
    assert "Exception in ASGI application (websocket /chat)" in caplog.text


# -- close codes, limits, pings ------------------------------------------------------------------


async def test_app_close_code_and_reason_reach_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(echo_app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        await ws.send(TextMessage(data="close please"))
        closing = await ws.event()
        assert isinstance(closing, CloseConnection)
        assert (closing.code, closing.reason) == (4000, "bye")
        await ws.send(closing.response())
        assert await ws.events() == []
        assert ws.ended


async def test_client_close_code_reaches_the_app(autojump_clock: trio.testing.MockClock) -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        messages.append(await receive())
        messages.append(await receive())

    async with h2_connection(app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        closing = await ws.close_handshake(4321)
        assert isinstance(closing, CloseConnection)
        assert closing.code == 4321
    assert messages[1] == {"type": "websocket.disconnect", "code": 4321, "reason": ""}


async def test_client_resetting_the_stream_is_a_1006_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    messages: list[dict[str, Any]] = []
    told = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        messages.append(await receive())
        told.set()

    async with h2_connection(app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        client.conn.reset_stream(ws.stream_id, 0x8)  # CANCEL
        await client.flush()
        with trio.fail_after(1):
            await told.wait()
        response = await client.get()  # the connection lives on
    assert messages == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert response.status == 200


async def test_app_crash_after_accept_closes_with_1011(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("boom")

    async with h2_connection(app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        closing = await ws.event()
    assert isinstance(closing, CloseConnection)
    assert closing.code == 1011


async def test_oversized_message_closes_with_1009(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(access_log=False, ws_max_message_size=1000)
    async with h2_connection(echo_app, config) as (client, _, _):
        ws, _, _ = await open_ws(client)
        await ws.send(BytesMessage(data=b"x" * 1001))
        closing = await ws.event()
    assert isinstance(closing, CloseConnection)
    assert closing.code == 1009


async def test_client_ping_gets_a_pong(autojump_clock: trio.testing.MockClock) -> None:
    async with h2_connection(echo_app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        await ws.send(Ping(payload=b"are you there"))
        assert (await ws.event()) == Pong(payload=b"are you there")


async def test_unanswered_server_ping_closes_with_1011(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, ws_ping_interval=5.0, ws_ping_timeout=2.0)
    async with h2_connection(echo_app, config) as (client, _, _):
        ws, _, _ = await open_ws(client)
        before = trio.current_time()
        ping = await ws.event()  # not answered
        assert isinstance(ping, Ping)
        assert trio.current_time() - before == pytest.approx(5.0)
        closing = await ws.event()
        assert trio.current_time() - before == pytest.approx(7.0)
    assert isinstance(closing, CloseConnection)
    assert closing.code == 1011


async def test_shutdown_closes_websockets_with_1001(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(echo_app) as (client, conn, _):
        ws, _, _ = await open_ws(client)
        conn.stop_idle()
        closing = await ws.event()
        assert isinstance(closing, CloseConnection)
        assert closing.code == 1001
        await ws.send(closing.response())
        await client.read_until_eof()
    assert client.goaway() is not None


# -- flow control and extensions -----------------------------------------------------------------


async def test_large_message_flows_through_the_stream_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A message bigger than the stream's window arrives whole: the window is credited as the
    session reads, and the echo waits for the client's window the same way."""
    message = bytes(range(256)) * 1024  # 256 KiB, four times the server's stream window
    async with h2_connection(echo_app) as (client, _, _):
        ws, _, _ = await open_ws(client)
        data = ws.ws.send(BytesMessage(data=message))
        while data:
            window = client.conn.local_flow_control_window(ws.stream_id)
            if not window:
                await client.receive()
                continue
            piece = min(window, client.conn.max_outbound_frame_size)
            client.conn.send_data(ws.stream_id, data[:piece])
            data = data[piece:]
            await client.flush()
        echoed = b""
        while len(echoed) < len(message):
            for event in await ws.events():
                assert isinstance(event, BytesMessage)
                echoed += event.data
    assert echoed == message


async def test_permessage_deflate_is_negotiated_over_http2(
    autojump_clock: trio.testing.MockClock,
) -> None:
    extension = PerMessageDeflate()
    offer = extension.offer()
    assert isinstance(offer, str)
    headers = connect((b"sec-websocket-extensions", b"permessage-deflate; " + offer.encode()))
    async with h2_connection(echo_app) as (client, _, _):
        ws, status, fields = await open_ws(client, headers)
        assert status == 200
        accepted = dict(fields)[b"sec-websocket-extensions"]
        assert accepted.startswith(b"permessage-deflate")
        extension.finalize(accepted.decode())
        ws.ws = Connection(ConnectionType.CLIENT, [extension])  # wsproto takes enabled ones
        text = "compress me " * 100
        await ws.send(TextMessage(data=text))
        echoed = await ws.event()
        compressed = sum(
            len(e.data or b"")
            for e in client.stream_events(ws.stream_id)
            if isinstance(e, h2.events.DataReceived)
        )
    assert echoed == TextMessage(data=text, frame_finished=True)
    assert compressed < len(text) // 4
