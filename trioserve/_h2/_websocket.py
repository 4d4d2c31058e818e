"""Websockets over HTTP/2 (RFC 8441): an extended CONNECT stream as a :class:`WebSocketWire`.

The server says ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1``; a client then opens a websocket with a
``CONNECT`` request carrying ``:protocol websocket`` (and ``:scheme``, ``:path``,
``:authority``). There is no key and no ``101``: the app's ``websocket.accept`` is a ``200``
HEADERS frame (with the chosen subprotocol and extensions), and from then on the websocket
frames travel in the stream's DATA frames, under the stream's flow control, both ways. A denial
is an ordinary HTTP response on the stream. The session (``_websocket/``) is the same as over
HTTP/1.1: close codes, message limits, pings, shutdown's 1001.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.extensions import Extension
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError

from .._errors import ClientDisconnected, RequestRefused
from .._http._access import log_access
from .._http._events import RequestHead
from .._http._scope import websocket_scope
from .._websocket import FrameConnection, WebSocketHandshakeError, WebSocketSession

if TYPE_CHECKING:
    from ._stream import H2Stream

__all__ = ["H2Wire", "serve_websocket"]

error_log = logging.getLogger("trioserve.error")

# RFC 6455 section 4.1 (and RFC 8441 section 5): the only websocket version there is.
_VERSION = b"13"


class H2Wire:
    """The :class:`WebSocketWire` of an HTTP/2 stream opened by an extended CONNECT.

    Args:
        stream: The stream.
        headers: The CONNECT request's header fields.

    Raises:
        WebSocketHandshakeError: no ``sec-websocket-version: 13``, or an undecodable offer.
    """

    def __init__(self, stream: H2Stream, headers: list[tuple[bytes, bytes]]) -> None:
        self._stream = stream
        version: bytes | None = None
        self.subprotocols: list[str] = []
        self._offers: list[str] = []
        try:
            for name, value in headers:
                if name == b"sec-websocket-version":
                    version = value.strip()
                elif name == b"sec-websocket-protocol":
                    self.subprotocols += _tokens(value)
                elif name == b"sec-websocket-extensions":
                    self._offers += _tokens(value)
        except UnicodeError as exc:
            raise WebSocketHandshakeError(f"undecodable handshake header: {exc}") from None
        if version != _VERSION:
            raise WebSocketHandshakeError("missing or unsupported sec-websocket-version")

    async def accept(
        self,
        subprotocol: str | None,
        extensions: list[Extension],
        headers: list[tuple[bytes, bytes]],
    ) -> FrameConnection:
        fields: list[tuple[bytes, bytes]] = []
        if subprotocol is not None:
            if subprotocol not in self.subprotocols:
                raise LocalProtocolError(f"unexpected subprotocol {subprotocol}")
            fields.append((b"sec-websocket-protocol", subprotocol.encode("ascii")))
        if extensions and self._offers:
            accepted = server_extensions_handshake(self._offers, extensions)
            if accepted:
                fields.append((b"sec-websocket-extensions", accepted))
        fields += headers
        await self._stream.send_response(200, fields, b"", end=False)
        return Connection(ConnectionType.SERVER, extensions)

    async def send_rejection(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, end: bool
    ) -> None:
        await self._stream.send_response(status, headers, body, end=end)

    async def send_rejection_body(self, body: bytes, *, end: bool) -> None:
        await self._stream.send_body(body, end=end)

    async def send(self, data: bytes) -> None:
        await self._stream.send_body(data, end=False)

    async def receive(self, max_bytes: int) -> bytes:
        return await self._stream.receive_data(max_bytes)

    async def abort(self, *, reset: bool) -> None:
        # The connection carries other streams: dropping this websocket resets its stream
        # (RST_STREAM, whatever ``reset`` says), which is what the stream's send_raw does.
        await self._stream.send_raw(b"")


def _tokens(value: bytes) -> list[str]:
    return [token for piece in value.split(b",") if (token := piece.decode("ascii").strip())]


async def serve_websocket(stream: H2Stream, head: RequestHead) -> None:
    """Run the app's websocket on ``stream``, then end the stream.

    Raises:
        RequestRefused: a bad handshake (400), or too many websockets open (503).
    """
    connection = stream.connection
    state = connection.state
    config = state.config
    scope = websocket_scope(head, connection.info, config, state.lifespan_state)
    started = time.perf_counter()
    try:
        wire = H2Wire(stream, list(head.headers))
    except WebSocketHandshakeError as exc:
        raise RequestRefused(400, f"Bad websocket handshake: {exc}") from None
    if state.websockets >= config.websocket_limit:
        state.refusals["websockets"] = state.refusals.get("websockets", 0) + 1
        error_log.debug("Refused an HTTP/2 websocket: --max-websockets reached")
        raise RequestRefused(503, "Too many websockets open: try again later.")
    session = WebSocketSession.on_wire(wire, config, scope, draining=lambda: state.draining)
    state.websockets += 1
    stream.websocket = session
    try:
        status = await session.run(state.app)
    finally:
        state.websockets -= 1
        stream.websocket = None
    if status is None:
        # The websocket is over (close frames exchanged, or the client gone): end our side of
        # the stream (a denial's response has ended it already).
        with contextlib.suppress(ClientDisconnected):
            await stream.end()
    if state.access_log:
        log_access(
            config,
            {**scope, "method": "CONNECT"},
            head.target,
            200 if status is None else status,
            0,
            time.perf_counter() - started,
            (),
        )
