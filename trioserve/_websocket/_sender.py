"""A websocket's way out to the client: whole writes one at a time, and deliberate faults.

Every write of a :class:`~trioserve._websocket._session.WebSocketSession` (the handshake's
answer, a denial, frames from the app, the reader's pongs, the keepalive's pings, close frames)
goes through one :class:`Sender`, under one lock and shielded, so that frames never interleave
and half a frame never goes out by accident.

Half a frame going out on purpose is the ``trioserve.fault`` extension (offered only with
``Config.fault_injection``), the websocket twin of the HTTP one in ``_http/_cycle.py``:

* ``trioserve.fault.raw`` (``data``) writes bytes as they are, after the accept: over HTTP/1.1
  straight onto the connection, over HTTP/2 in the stream's DATA frames. A test server sends a
  frame header announcing N payload bytes and fewer than N of them, say.
* ``trioserve.fault.close`` (``reset``) drops the connection without a close frame: over HTTP/1.1
  it closes the TCP connection (with an RST when ``reset`` is true); over HTTP/2 it resets the
  stream (RST_STREAM), since the connection carries other streams.

From the first fault on the app owns the wire: the session sends no frame of its own any more
(no pong, no close frame), and drops the connection when the app returns if the app did not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

from .._errors import ClientDisconnected
from .._types import Message
from ._wire import FrameConnection, WebSocketWire

__all__ = ["ABNORMAL", "Sender"]

ABNORMAL: Final = 1006  # never sent on the wire: "the connection went away without a close frame"


class Sender:
    """The one writer of a websocket.

    Args:
        wire: What carries the websocket.
        gone: Called with 1006 once a write finds the client gone (or a fault dropped it).
    """

    def __init__(self, wire: WebSocketWire, gone: Callable[[int], None]) -> None:
        self.wire = wire
        #: wsproto's frame layer, once the app has accepted.
        self.ws: FrameConnection | None = None
        self.close_sent = trio.Event()
        #: A fault took the wire over: no more frames of the session's own.
        self.taken = False
        self._dropped = False
        self._gone = gone
        self._lock = trio.StrictFIFOLock()

    def open(self) -> bool:
        """Whether frames may still be sent (accepted, no close frame sent yet, no fault)."""
        ws = self.ws
        return (
            not self.taken
            and ws is not None
            and ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
        )

    async def write(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run one write to the wire: one at a time, and whole.

        The write is shielded from the caller's cancellation, since half a frame would corrupt
        the stream; the wire bounds it by ``write_timeout`` instead.
        """
        async with self._lock:
            with trio.CancelScope(shield=True):
                try:
                    await action()
                except LocalProtocolError as exc:
                    raise ClientDisconnected(f"the websocket cannot send now: {exc}") from exc
                except ClientDisconnected:
                    self._gone(ABNORMAL)
                    raise

    async def send_event(self, event: Any) -> None:
        """A wsproto event (a message, a ping or pong, a close) as frames."""

        async def send_frame() -> None:
            # Frames are produced under the lock (permessage-deflate's context must see them
            # in wire order).
            assert self.ws is not None
            data = self.ws.send(event)
            if isinstance(event, CloseConnection):
                self.close_sent.set()
            await self.wire.send(data)

        await self.write(send_frame)

    async def send_quietly(self, event: Any) -> None:
        """:meth:`send_event`, unless the client is gone or a fault owns the wire."""
        if self.taken:
            return
        with contextlib.suppress(ClientDisconnected):
            await self.send_event(event)

    async def fault(self, message: Message) -> None:
        """Answer a ``trioserve.fault`` message (see the module's docstring).

        Raises:
            RuntimeError: an unknown fault, or raw bytes before the accept.
            ClientDisconnected: the client is gone already.
        """
        kind = message["type"]
        if kind == "trioserve.fault.raw":
            if self.ws is None:
                raise RuntimeError(
                    "ASGI app sent 'trioserve.fault.raw' before 'websocket.accept' "
                    "(a websocket fault breaks frames; deny with an HTTP response instead)"
                )
            if self._dropped:
                raise ClientDisconnected("a trioserve.fault.close dropped the websocket")
            self.taken = True
            data = bytes(message.get("data", b""))
            await self.write(lambda: self.wire.send(data))
        elif kind == "trioserve.fault.close":
            self.taken = True
            await self.drop(reset=bool(message.get("reset")))
        else:
            raise RuntimeError(f"Unknown trioserve.fault message {kind!r}")

    async def drop(self, *, reset: bool = False) -> None:
        """Drop the connection (or HTTP/2 stream) without a close frame, once."""
        if self._dropped:
            return
        self._dropped = True
        with contextlib.suppress(ClientDisconnected):
            await self.write(lambda: self.wire.abort(reset=reset))
        self._gone(ABNORMAL)
