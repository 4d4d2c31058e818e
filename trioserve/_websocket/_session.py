"""ASGI websockets over wsproto, whatever carries them (an HTTP/1.1 upgrade, an HTTP/2 stream).

Theory of operation
-------------------
The connection parsed the request that asks for a websocket and hands it over here with a
:class:`WebSocketWire` (see ``_wire.py``): an HTTP/1.1 connection's transport after an upgrade
request (a websocket never goes back to HTTP), or an HTTP/2 stream opened by an extended CONNECT
(RFC 8441). The wire answers the handshake; the frames are wsproto's either way. A
:class:`WebSocketSession` runs in a small nursery of its own:

* the app, called in the connection's task with a ``websocket`` scope;
* a reader task that feeds the wire's bytes to wsproto, answers pings, assembles fragmented messages
  (refusing those over ``ws_max_message_size`` with close code 1009) and queues
  ``websocket.receive`` / ``websocket.disconnect`` messages for the app's ``receive()``;
* with ``ws_ping_interval``, a task that pings the client and closes with 1011 when a pong does
  not come back in time.

Writes from these tasks go through one :class:`Sender` (``_sender.py``: one lock, each write
bounded by ``write_timeout``; the ``trioserve.fault`` extension lives there too). Close codes:
the app's own (``websocket.close``), 1000 when the app returns without closing, 1011 when it
crashes, 1001 when the server shuts down (within the grace period), 1009 for an oversized
message, 1002 or 1007 for a frame that breaks the protocol (wsproto reports those as a close event
while the connection is still open). In those last two cases the reader stops, and the messages
read before the bad frame are still delivered: the close frame follows once the app has taken them
and asks for more, so its answers to them go out first.

Before the app accepts, ``websocket.close`` is answered with HTTP 403, a crash with 500, and the
``websocket.http.response`` extension sends any HTTP response the app likes. A handshake the
wire refuses (or cannot decode) is a :class:`WebSocketHandshakeError`, which the connection
answers with 400.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any, Final

import trio
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.extensions import Extension
from wsproto.utilities import RemoteProtocolError

from .._config import Config
from .._errors import ClientDisconnected, only_disconnects
from .._transport import Transport
from .._types import Message
from ._sender import ABNORMAL as _ABNORMAL
from ._sender import Sender
from ._wire import H11Wire, PerMessageDeflateOnce, WebSocketWire

__all__ = ["WebSocketSession"]

error_log = logging.getLogger("trioserve.error")


# Small reads bound how much one read can inflate through permessage-deflate (a 16 KiB chunk
# of a deflate bomb is at most ~16 MiB) before the message-size check sees it.
_READ_SIZE: Final = 16 * 1024
# Messages queued for an app that is not reading yet; the reader waits beyond that.
_QUEUE: Final = 16
_CLOSE_WAIT: Final = 2.0  # seconds to wait for the client's close frame after ours
# After a protocol error, the messages that came before the bad frame are still the app's: it has
# this long to take them all and come back for more before the close frame goes out anyway (an
# echo server answers in microseconds; a client that broke the protocol gets no more than this).
_FAIL_GRACE: Final = 2.0
# RFC 6455 5.5: a control frame's payload is at most 125 bytes, 2 of which are the close code.
_MAX_REASON: Final = 123

_NORMAL = 1000
_GOING_AWAY = 1001
_TOO_BIG = 1009
_INTERNAL_ERROR = 1011


class WebSocketSession:
    """One websocket from upgrade request to close.

    Made for an HTTP/1.1 upgrade request, or by :meth:`on_wire` for any other wire.

    Args:
        transport: The connection's bytes (plain or TLS).
        config: Server settings.
        scope: The websocket ASGI scope (built by the connection).
        headers: The upgrade request's headers.
        target: The upgrade request's target.
        buffered: Bytes the client sent after the upgrade request.
        draining: Whether the server is shutting down (a websocket accepted then closes at once).

    Raises:
        WebSocketHandshakeError: not a valid upgrade request.
    """

    def __init__(
        self,
        transport: Transport,
        config: Config,
        scope: MutableMapping[str, Any],
        headers: list[tuple[bytes, bytes]],
        target: bytes,
        buffered: bytes,
        *,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self._setup(H11Wire(transport, headers, target, buffered), config, scope, draining)

    @classmethod
    def on_wire(
        cls,
        wire: WebSocketWire,
        config: Config,
        scope: MutableMapping[str, Any],
        *,
        draining: Callable[[], bool] = lambda: False,
    ) -> WebSocketSession:
        """A websocket over ``wire`` (whose handshake request has been checked)."""
        session = cls.__new__(cls)
        session._setup(wire, config, scope, draining)
        return session

    def _setup(
        self,
        wire: WebSocketWire,
        config: Config,
        scope: MutableMapping[str, Any],
        draining: Callable[[], bool],
    ) -> None:
        self._wire = wire
        self._config = config
        self._draining = draining
        self._queued_bytes = 0
        self._drained: trio.Event | None = None
        self._reader_blocked = False
        self._out = Sender(wire, self._gone)
        scope["subprotocols"] = list(wire.subprotocols)
        self.scope = scope
        self._inbox_send, self._inbox = trio.open_memory_channel[Message](_QUEUE)
        self._connect_delivered = False
        self._accepted = False
        self._closed = False  # we sent a close frame, or the connection is gone
        self._denied = False  # answered with HTTP instead of accepting
        self._response_started = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._final_code = _NORMAL  # the close code when the app returns without closing
        self._nursery: trio.Nursery | None = None
        self._pong = trio.Event()
        self._peer_closed = trio.Event()
        self._close_started = False
        self._close_done = trio.Event()
        self._failure: tuple[int, str] | None = None  # the close to send after a protocol error

    @property
    def accepted(self) -> bool:
        """Whether the app accepted the websocket."""
        return self._accepted

    async def run(self, app: Any) -> int | None:
        """Run the app on this websocket until both sides are done.

        Returns:
            The HTTP status sent instead of accepting (403, 500, or the app's), or ``None``.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await app(self.scope, self._receive, self._send)
            except Exception as exc:
                if not only_disconnects(exc):
                    error_log.exception(
                        "Exception in ASGI application (websocket %s)", self.scope["path"]
                    )
                    await self._finish(_INTERNAL_ERROR)
            else:
                if not (self._accepted or self._denied or self._out.taken):
                    error_log.error(
                        "ASGI application returned without accepting or closing the websocket (%s)",
                        self.scope["path"],
                    )
                await self._finish(self._final_code)
            nursery.cancel_scope.cancel()
        self._inbox_send.close()
        if self._denied:
            return self._deny_status
        return None

    async def _finish(self, code: int) -> None:
        """The app is done: close with ``code``, drop a wire a fault took over, or answer 500
        if nothing is on the wire yet (a denial is sent whole)."""
        if self._out.taken:
            await self._out.drop()
        elif self._accepted:
            await self._close(code, "")
        elif not self._denied:
            await self._deny(500, b"Internal Server Error\n")

    _deny_status = 0
    _denial_sent = False  # the whole HTTP response that denied the websocket is out

    def shut_down(self) -> None:
        """Server shutdown: close with 1001 and tell the app (it gets ``websocket.disconnect``)."""
        if self._accepted and not self._closed and self._nursery is not None:
            self._final_code = _GOING_AWAY
            self._nursery.start_soon(self._close, _GOING_AWAY, "server shutting down")
            self._close_code = _GOING_AWAY
            self._deliver_nowait(self._disconnect_message())

    # -- the app's receive ------------------------------------------------------------------------

    async def _receive(self) -> Message:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        try:
            message = await self._inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._failure is not None:
                # The app has taken (and answered) every message before the bad frame.
                await self._send_close_quietly(*self._failure)
            return self._disconnect_message()
        self._queued_bytes -= message.pop("_size", 0)
        if self._drained is not None:
            self._drained.set()
        return message

    def _deliver_nowait(self, message: Message) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._inbox_send.send_nowait(message)

    # -- the app's send ---------------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        message_type = message["type"]
        if message_type == "websocket.send":
            if not self._accepted:
                raise RuntimeError("ASGI app sent 'websocket.send' before 'websocket.accept'")
            if self._closed:
                raise ClientDisconnected("the websocket is closed")
            if self._out.taken:
                raise RuntimeError(
                    "ASGI app sent 'websocket.send' after a trioserve.fault took over the wire"
                )
            await self._out.send_event(_outgoing(message))
        elif message_type == "websocket.accept":
            if self._accepted or self._denied or self._response_started:
                raise RuntimeError("ASGI app sent 'websocket.accept' out of order")
            await self._accept(message)
        elif message_type == "websocket.close":
            if self._accepted:
                if not self._closed:
                    await self._close(message.get("code") or _NORMAL, message.get("reason") or "")
            elif not self._denied and not self._response_started:
                await self._deny(403, b"")
            else:
                raise RuntimeError("ASGI app sent 'websocket.close' after denying the websocket")
        elif message_type == "websocket.http.response.start":
            if self._accepted or self._denied or self._response_started:
                raise RuntimeError("ASGI app sent 'websocket.http.response.start' out of order")
            self._response_started = True  # sent with the first body message
            self._pending_response = (message["status"], list(message.get("headers", ())))
        elif message_type == "websocket.http.response.body":
            if not self._response_started or self._denial_sent:
                # Fixed: a body in several messages (more_body) was refused after its first.
                raise RuntimeError("ASGI app sent 'websocket.http.response.body' out of order")
            status, headers = self._pending_response
            await self._deny(
                status,
                message.get("body", b""),
                headers=headers,
                more=message.get("more_body", False),
            )
        elif message_type.startswith("trioserve.fault.") and self._config.fault_injection:
            await self._out.fault(message)
        else:
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} for a websocket")

    _pending_response: tuple[int, list[tuple[bytes, bytes]]] = (500, [])

    async def _accept(self, message: Message) -> None:
        extensions: list[Extension] = []
        if self._config.ws_per_message_deflate:
            extensions.append(PerMessageDeflateOnce())
        headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
        subprotocol = message.get("subprotocol")

        async def accept() -> None:
            self._out.ws = await self._wire.accept(subprotocol, extensions, headers)

        await self._out.write(accept)
        self._accepted = True
        assert self._nursery is not None
        self._nursery.start_soon(self._read_loop)
        if self._config.ws_ping_interval is not None:
            self._nursery.start_soon(self._keepalive, self._config.ws_ping_interval)
        if self._draining():
            self.shut_down()  # accepted while the server shuts down: 1001 at once

    async def _deny(
        self,
        status: int,
        body: bytes,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        more: bool = False,
    ) -> None:
        if not self._denied:
            self._denied = True
            self._deny_status = status
            fields = list(headers or [])
            framed = any(name.lower() == b"content-length" for name, _ in fields)
            if body and not more and not framed:
                fields.append((b"content-length", b"%d" % len(body)))
            await self._out.write(
                lambda: self._wire.send_rejection(status, fields, body, end=not more)
            )
        else:
            await self._out.write(lambda: self._wire.send_rejection_body(body, end=not more))
        if not more:
            self._denial_sent = True
            self._inbox_send.close()  # receive() now says websocket.disconnect (1006)

    async def _close(self, code: int, reason: str) -> None:
        if self._close_started:
            # Another task is closing (shutdown, say): let it finish before anyone cancels it.
            with trio.move_on_after(_CLOSE_WAIT + self._config.write_timeout):
                await self._close_done.wait()
            return
        self._close_started = True
        self._closed = True
        try:
            if not self._out.open():
                return
            try:
                await self._out.send_event(CloseConnection(code=code, reason=reason or None))
            except ClientDisconnected:
                return
            # Give the client a moment to answer with its own close frame (the reader consumes
            # it and sets _peer_closed).
            with trio.move_on_after(_CLOSE_WAIT):
                await self._peer_closed.wait()
        finally:
            self._close_done.set()

    def _gone(self, code: int) -> None:
        self._closed = True
        self._peer_closed.set()
        if self._close_code is None:
            self._close_code = code
        self._deliver_nowait(self._disconnect_message())
        self._inbox_send.close()

    def _disconnect_message(self) -> Message:
        return {
            "type": "websocket.disconnect",
            "code": self._close_code or _ABNORMAL,
            "reason": self._close_reason,
        }

    # -- reading ----------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        limit = self._config.ws_max_message_size
        parts: list[bytes | str] = []
        size = 0
        ws = self._out.ws
        assert ws is not None
        try:
            while True:
                data = await self._wire.receive(_READ_SIZE)
                if not data:
                    ws.receive_data(None)
                    self._gone(_ABNORMAL)
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, TextMessage | BytesMessage):
                        raw = event.data
                        size += len(raw.encode()) if isinstance(raw, str) else len(raw)
                        if size > limit:
                            await self._fail(_TOO_BIG, "message too big")
                            return
                        data_part = event.data
                        parts.append(data_part if isinstance(data_part, str) else bytes(data_part))
                        if event.message_finished:
                            message = _joined(parts, text=isinstance(event, TextMessage))
                            message_size, parts, size = size, [], 0
                            if not self._closed:
                                await self._deliver(message, message_size)
                    elif isinstance(event, Ping):
                        await self._out.send_quietly(event.response())
                    elif isinstance(event, Pong):
                        self._pong.set()
                    elif isinstance(event, CloseConnection):
                        if ws.state is ConnectionState.OPEN:
                            # wsproto reports a bad frame (invalid UTF-8, reserved bits or
                            # opcodes, a bad close frame, ...) as a close event without a change
                            # of state: the close frame is ours to send (1002 or 1007).
                            await self._fail(int(event.code), event.reason or "")
                            return
                        self._close_code = int(event.code)
                        self._close_reason = event.reason or ""
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._out.send_quietly(event.response())
                        self._gone(int(event.code))
                        return
        except RemoteProtocolError as exc:
            error_log.debug("Websocket protocol error from the client: %s", exc)
            hint = exc.event_hint
            await self._send_close_quietly(1002, "protocol error")
            self._gone(int(hint.code) if isinstance(hint, CloseConnection) else 1002)

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the websocket (RFC 6455 7.1.7): the client broke the protocol or a limit.

        Nothing more is read. The messages already queued stay ahead of the disconnect, and the
        close frame goes out when the app comes back for the next message (so its answers to
        those messages go out first), when it returns, or after ``_FAIL_GRACE``.
        """
        error_log.debug("Failing the websocket with %d: %s", code, reason)
        reason = reason.encode()[:_MAX_REASON].decode(errors="ignore")
        self._failure = (code, reason)
        self._final_code = code
        self._close_code = code  # what the app's websocket.disconnect says
        self._inbox_send.close()
        with trio.move_on_after(_FAIL_GRACE):
            await self._out.close_sent.wait()
        await self._send_close_quietly(code, reason)
        self._gone(code)

    async def _deliver(self, message: Message, size: int) -> None:
        """Queue a message for the app, holding at most ws_max_message_size bytes queued."""
        limit = self._config.ws_max_message_size
        self._reader_blocked = True
        try:
            while self._queued_bytes and self._queued_bytes + size > limit:
                self._drained = trio.Event()
                await self._drained.wait()
            self._queued_bytes += size
            message["_size"] = size
            await self._inbox_send.send(message)
        finally:
            self._reader_blocked = False

    async def _send_close_quietly(self, code: int, reason: str) -> None:
        self._closed = True
        if self._out.open():
            await self._out.send_quietly(CloseConnection(code=code, reason=reason))

    async def _keepalive(self, interval: float) -> None:
        timeout = self._config.ws_ping_timeout
        while True:
            await trio.sleep(interval)
            if self._closed:
                return
            self._pong = trio.Event()
            await self._out.send_quietly(Ping(payload=b"trioserve"))
            with trio.move_on_after(timeout) as waiting:
                await self._pong.wait()
            if not waiting.cancelled_caught or self._reader_blocked:
                # Answered; or the reader waits for a busy app and cannot see the pong.
                continue
            error_log.debug("Websocket client did not answer a ping within %g s", timeout)
            await self._send_close_quietly(_INTERNAL_ERROR, "keepalive ping timeout")
            self._gone(_INTERNAL_ERROR)
            return


def _outgoing(message: Message) -> TextMessage | BytesMessage:
    """The frames' event for a ``websocket.send`` message."""
    text = message.get("text")
    data = message.get("bytes")
    if text is not None and data is None:
        return TextMessage(data=str(text))
    if data is not None and text is None:
        return BytesMessage(data=bytes(data))
    raise RuntimeError("'websocket.send' needs exactly one of 'text' and 'bytes'")


def _joined(parts: list[bytes | str], *, text: bool) -> Message:
    if text:
        return {"type": "websocket.receive", "text": "".join(parts)}  # type: ignore[arg-type]
    return {"type": "websocket.receive", "bytes": b"".join(parts)}  # type: ignore[arg-type]
