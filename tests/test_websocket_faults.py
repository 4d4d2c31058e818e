"""The websocket ``trioserve.fault`` extension: raw bytes on a websocket's wire, and dropping it
without a close frame, over HTTP/1.1 (in memory and on a real socket) and HTTP/2 (a reset
stream). The harness's ``drop_mid_message`` is tested end to end in test_harness_websocket.py."""

from __future__ import annotations

import socket
from typing import Any

import h2.events
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Request, TextMessage

from trioserve import Config

from ._helpers import in_thread, serving
from .conftest import connection
from .h2_helpers import h2_connection
from .test_h2_websocket import open_ws
from .test_websocket import accepting, websocket

FAULTS = Config(access_log=False, fault_injection=True)
# A text frame header announcing 10 payload bytes, and 4 of them.
PARTIAL = b"\x81\x0aabcd"
ONE = b"\x81\x03one"  # the server's (unmasked) text frame "one"


def dropping(log: list[Any], *faults: dict[str, Any], done: trio.Event | None = None) -> Any:
    """Accepts, sends "one", then the fault messages; logs what receive() says afterwards (then
    sets ``done``)."""

    async def after_accept(receive: Any, send: Any) -> None:
        await send({"type": "websocket.send", "text": "one"})
        for fault in faults:
            await send(fault)
        log.append(await receive())
        if done is not None:
            done.set()

    return accepting(after_accept)


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def test_the_extension_is_offered_only_with_fault_injection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    extensions: list[dict[str, Any]] = []

    async def record(scope: Any, receive: Any, send: Any) -> None:
        extensions.append(scope["extensions"])
        await accepting(lambda receive, send: trio.sleep(0))(scope, receive, send)

    async with websocket(record, FAULTS) as (client, _):
        await read_to_eof(client.stream)
    async with websocket(record) as (client, _):
        await read_to_eof(client.stream)
    assert "connection_id" in extensions[0]["trioserve.fault"]
    assert "trioserve.fault" not in extensions[1]


async def test_raw_bytes_then_close_end_the_connection_mid_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[Any] = []
    raw = {"type": "trioserve.fault.raw", "data": PARTIAL}
    app = dropping(log, raw, {"type": "trioserve.fault.close"})
    async with websocket(app, FAULTS) as (client, _):
        # The complete message, the half frame as it was written, then the end: no close frame.
        assert await read_to_eof(client.stream) == ONE + PARTIAL
    assert log == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


async def test_an_app_returning_after_raw_bytes_drops_the_connection_without_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[str] = []

    async def after_accept(receive: Any, send: Any) -> None:
        await send({"type": "trioserve.fault.raw", "data": PARTIAL})
        try:
            await send({"type": "websocket.send", "text": "framed again?"})
        except RuntimeError as exc:
            errors.append(str(exc))

    async with websocket(accepting(after_accept), FAULTS) as (client, _):
        assert await read_to_eof(client.stream) == PARTIAL
    assert errors == ["ASGI app sent 'websocket.send' after a trioserve.fault took over the wire"]


async def test_without_fault_injection_a_fault_message_is_an_app_error(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[Any] = []
    async with websocket(dropping(log, {"type": "trioserve.fault.close"})) as (client, ws):
        ws.receive_data(await read_to_eof(client.stream))
        events = list(ws.events())
    assert events[0] == TextMessage(data="one", frame_finished=True, message_finished=True)
    assert isinstance(events[1], CloseConnection)
    assert events[1].code == 1011
    assert "Unexpected ASGI message 'trioserve.fault.close'" in caplog.text


async def test_raw_bytes_before_the_accept_are_refused_with_500(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "trioserve.fault.raw", "data": b"HTTP/1.1 999 Whatever\r\n\r\n"})

    async with connection(app, FAULTS) as (client, _):
        ws = WSConnection(ConnectionType.CLIENT)
        await client.send_raw(ws.send(Request(host="test", target="/ws")))
        reply = await client.stream.receive_some(65536)
    assert reply.startswith(b"HTTP/1.1 500 ")
    assert "'trioserve.fault.raw' before 'websocket.accept'" in caplog.text


async def test_close_with_reset_sends_a_tcp_reset_on_a_real_socket() -> None:
    log: list[Any] = []
    done = trio.Event()
    app = dropping(log, {"type": "trioserve.fault.close", "reset": True}, done=done)
    async with serving(app, fault_injection=True) as (_, address):
        host, port = address.rsplit(":", 1)

        def client() -> tuple[bytes, type[BaseException] | None]:
            ws = WSConnection(ConnectionType.CLIENT)
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(ws.send(Request(host="test", target="/ws")))
                received = b""
                try:
                    while chunk := sock.recv(65536):
                        received += chunk
                except ConnectionResetError as exc:
                    return received, type(exc)
                return received, None

        received, error = await in_thread(client)
        with trio.fail_after(5):
            await done.wait()
    assert received.endswith(b"\r\n\r\n" + ONE)  # the 101 response, then "one"
    assert error is ConnectionResetError
    assert log == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


async def test_over_http2_the_raw_bytes_go_in_data_frames_and_close_resets_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[Any] = []
    done = trio.Event()
    raw = {"type": "trioserve.fault.raw", "data": PARTIAL}
    app = dropping(log, raw, {"type": "trioserve.fault.close"}, done=done)
    async with h2_connection(app, FAULTS) as (client, _, _):
        ws, status, _ = await open_ws(client)
        assert status == 200
        with trio.fail_after(5):
            await client.wait_for(
                lambda: any(
                    isinstance(e, h2.events.StreamReset) for e in client.stream_events(ws.stream_id)
                )
            )
        events = client.stream_events(ws.stream_id)
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        assert data == ONE + PARTIAL
        assert not any(isinstance(e, h2.events.StreamEnded) for e in events)
        with trio.fail_after(5):
            await done.wait()
        # The connection carries on: only the websocket's stream went.
        assert not client.closed
    assert log == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
