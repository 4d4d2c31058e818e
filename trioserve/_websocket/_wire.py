"""What a websocket runs over: the handshake's answer and the bytes of its frames.

A :class:`WebSocketSession` speaks to the client through a :class:`WebSocketWire`. Two wires
exist: :class:`H11Wire` here (an HTTP/1.1 upgrade: the handshake is wsproto's, the frames go over
the connection's :class:`Transport`), and the HTTP/2 stream's wire in ``_h2/_websocket.py`` (an
extended CONNECT, RFC 8441: the answer is a ``200`` HEADERS frame and the frames travel in the
stream's DATA frames, under its flow control).
"""

from __future__ import annotations

import copy
from typing import Any, Final, Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, Event, RejectConnection, RejectData, Request
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from .._transport import Transport

__all__ = [
    "FrameConnection",
    "H11Wire",
    "PerMessageDeflateOnce",
    "WebSocketHandshakeError",
    "WebSocketWire",
]

# RFC 6455 section 4.1: the only version there is.
WEBSOCKET_VERSION: Final = b"13"


class WebSocketHandshakeError(Exception):
    """The upgrade request is not a valid websocket handshake."""


class FrameConnection(Protocol):
    """wsproto's frame layer: ``wsproto.connection.Connection``, or a ``WSConnection``."""

    @property
    def state(self) -> ConnectionState: ...

    def send(self, event: Event) -> bytes: ...

    def receive_data(self, data: bytes | None) -> None: ...

    def events(self) -> Any: ...


class WebSocketWire(Protocol):
    """One websocket's link to its client, whatever carries it.

    Every method raises :class:`ClientDisconnected` once the client is gone; writes are bounded
    by the write timeout.
    """

    #: The subprotocols the client offered, in its order.
    subprotocols: list[str]

    async def accept(
        self,
        subprotocol: str | None,
        extensions: list[Extension],
        headers: list[tuple[bytes, bytes]],
    ) -> FrameConnection:
        """Answer the handshake with yes; the frame layer to use from now on.

        Raises:
            wsproto.utilities.LocalProtocolError: a subprotocol the client did not offer.
        """

    async def send_rejection(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, end: bool
    ) -> None:
        """Answer the handshake with an HTTP response (its head and the first of its body)."""

    async def send_rejection_body(self, body: bytes, *, end: bool) -> None:
        """More of that response's body."""

    async def send(self, data: bytes) -> None:
        """Frames (whole ones) to the client."""

    async def receive(self, max_bytes: int) -> bytes:
        """At most ``max_bytes`` of the client's frames; ``b""`` once it has no more to say."""

    async def abort(self, *, reset: bool) -> None:
        """Drop the websocket without a close frame (fault injection): close the connection
        (with a TCP reset if ``reset``), or reset the HTTP/2 stream."""


class H11Wire:
    """A websocket upgraded from an HTTP/1.1 request, over the connection's transport.

    Args:
        transport: The connection's bytes (plain or TLS).
        headers: The upgrade request's headers.
        target: The upgrade request's target.
        buffered: Bytes the client sent after the upgrade request.

    Raises:
        WebSocketHandshakeError: the request is not a websocket handshake wsproto accepts.
    """

    def __init__(
        self,
        transport: Transport,
        headers: list[tuple[bytes, bytes]],
        target: bytes,
        buffered: bytes,
    ) -> None:
        self._transport = transport
        self._buffered = buffered
        self._ws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        try:
            self._ws.initiate_upgrade_connection(headers, target)
            for event in self._ws.events():
                if isinstance(event, Request):
                    request = event
        except RemoteProtocolError as exc:
            raise WebSocketHandshakeError(str(exc)) from None
        except UnicodeError as exc:
            # wsproto decodes the Connection, Host, Sec-WebSocket-* tokens and the target as
            # ASCII (the host as IDNA) and lets the codec's error out: a client error all the same.
            raise WebSocketHandshakeError(f"undecodable handshake header: {exc}") from None
        self.subprotocols = [] if request is None else list(request.subprotocols)

    async def accept(
        self,
        subprotocol: str | None,
        extensions: list[Extension],
        headers: list[tuple[bytes, bytes]],
    ) -> FrameConnection:
        event = AcceptConnection(
            subprotocol=subprotocol, extensions=extensions, extra_headers=headers
        )
        await self._transport.send(self._ws.send(event))
        return self._ws

    async def send_rejection(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, end: bool
    ) -> None:
        has_body = bool(body) or not end
        data = self._ws.send(
            RejectConnection(status_code=status, headers=headers, has_body=has_body)
        )
        if has_body:
            data += self._ws.send(RejectData(data=body, body_finished=end))
        await self._transport.send(data)

    async def send_rejection_body(self, body: bytes, *, end: bool) -> None:
        await self._transport.send(self._ws.send(RejectData(data=body, body_finished=end)))

    async def send(self, data: bytes) -> None:
        await self._transport.send(data)

    async def receive(self, max_bytes: int) -> bytes:
        if self._buffered:
            data, self._buffered = self._buffered, b""
            return data
        return bytes(await self._transport.receive(max_bytes))

    async def abort(self, *, reset: bool) -> None:
        if reset:
            await self._transport.reset()
        else:
            self._transport.gone = True
            await self._transport.close()


class PerMessageDeflateOnce(PerMessageDeflate):
    """wsproto's permessage-deflate, negotiating one offer as RFC 7692 section 5 asks.

    wsproto calls ``accept`` for every offer in the request and keeps the parameters of all of
    them in one object, while its response names only the last: a first offer with
    ``client_max_window_bits=9`` followed by a plain one leaves a 9-bit decompressor for a client
    told it may use 15 bits. Here the first acceptable offer wins, and a declined offer (an
    unsupported or invalid parameter value, which section 7 says to decline) changes nothing.
    """

    def accept(self, offer: str) -> bool | str | None:
        if self.enabled():
            return None
        trial = copy.copy(self)  # wsproto sets parameters before it finds a bad one
        try:
            accepted = PerMessageDeflate.accept(trial, offer)
        except ValueError:  # a parameter value that is not a number
            return None
        if accepted is not None:
            vars(self).update(vars(trial))
        return accepted
