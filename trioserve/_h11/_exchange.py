"""The wire side of one HTTP/1.1 request: the request cycle's :class:`Exchange`.

One :class:`H11Exchange` per connection serves each request in turn (no per-request object): it
reads the body through the protocol when the app asks (``100 Continue`` sent lazily), frames
the response, and writes through the transport, head and a small body in one write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import trio

from .._errors import ClientDisconnected, RequestRefused
from .._http._access import log_error_response
from .._http._events import END_OF_BODY, NEED_DATA, BodyChunk
from .._http._exchange import Body
from .._http._scope import ConnectionInfo, format_address
from .._http._state import ServerState
from .._transport import Transport
from ._files import open_file, write_file
from ._protocol import ServerProtocol

__all__ = ["H11Exchange"]

error_log = logging.getLogger("trioserve.error")


class H11Exchange:
    """The :class:`Exchange` of the current request on one HTTP/1.1 connection.

    Args:
        proto: The connection's protocol state.
        transport: The connection's bytes.
        state: The server-wide state.
    """

    __slots__ = ("_body_timeout", "_proto", "_state", "_transport", "wire_taken", "written")

    # HTTP/1.1 sees the client's EOF only past the request body (see the Exchange).
    sees_disconnect_before_body = False

    def __init__(self, proto: ServerProtocol, transport: Transport, state: ServerState) -> None:
        self._proto = proto
        self._transport = transport
        self._state = state
        self._body_timeout = state.config.body_timeout
        #: Whether the current request's response has reached the transport (an error can no
        #: longer be answered then); the connection resets it between requests.
        self.written = False
        #: Set once something other than a framed response took the wire (a websocket, a
        #: fault, HTTP/2): the connection ends after the current request.
        self.wire_taken = False

    async def receive_body(self) -> tuple[bytes, bool] | None:
        proto = self._proto
        if proto.request_bodyless:
            return b"", False
        transport = self._transport
        go_ahead = proto.continue_response()
        if go_ahead:
            try:
                await transport.send(go_ahead)
            except ClientDisconnected:
                return None
        while True:
            event = proto.next_event()
            if type(event) is BodyChunk:
                # Hand over everything already received as one message, and say so when
                # that is the whole body (the common case: one message, not two).
                pieces = [event.data]
                more_body = True
                while True:
                    following = proto.next_event()
                    if type(following) is BodyChunk:
                        pieces.append(following.data)
                        continue
                    if following is END_OF_BODY:
                        more_body = False
                    break
                body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                return bytes(body), more_body
            if event is END_OF_BODY:
                return b"", False
            if event is NEED_DATA:
                with trio.move_on_after(self._body_timeout) as reading:
                    data = await transport.receive()
                if reading.cancelled_caught:
                    raise RequestRefused(408, "Timed out waiting for the request body.")
                if not data:
                    return None
                proto.receive_data(data)
                continue
            raise RequestRefused(400, "Malformed request body.")  # pragma: no cover

    async def wait_disconnected(self) -> None:
        transport = self._transport
        proto = self._proto
        while True:
            data = await transport.receive()
            if not data or not proto.receive_pipelined(data):
                return

    async def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body, *, end: bool
    ) -> int:
        proto = self._proto
        if self._state.draining:
            proto.close_after_response()
        if type(body) is not bytes:
            # The protocol takes bytes (compiled, it checks its arguments' types).
            body = bytes(body)
        if end:
            # The whole body in one message: say how long it is rather than chunk it.
            out, sent = proto.send_whole_response(status, headers, body)
        else:
            out = proto.send_response(status, headers) + proto.send_data(body)
            sent = 0 if proto.discards_body else len(body)
        self.written = True
        transport = self._transport
        rest = transport.write_now(out)  # no coroutine for the common whole write
        if rest:
            await transport.send_rest(rest)
        return sent

    async def send_body(self, body: Body, *, end: bool) -> int:
        proto = self._proto
        if type(body) is not bytes:
            body = bytes(body)  # as in send_response
        out = proto.send_data(body)
        if end:
            out += proto.send_end()
        if out:
            await self._transport.send(out)
        return 0 if proto.discards_body else len(body)

    async def send_trailers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        # The protocol drops them unless the body is chunked and the client said TE: trailers.
        out = self._proto.send_end(headers)
        if out:
            await self._transport.send(out)

    async def send_file(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], path: str
    ) -> int:
        fd, size = open_file(path)
        try:
            proto = self._proto
            if self._state.draining:
                proto.close_after_response()
            head = proto.send_response(
                status, headers, body_length=size, length_is_resource_size=True
            )
            self.written = True
            return await write_file(proto, self._transport, fd, size, head)
        finally:
            os.close(fd)

    async def send_raw(self, data: bytes) -> None:
        self.wire_taken = True
        await self._transport.send(data)

    async def abort(self, *, reset: bool) -> None:
        self.wire_taken = True
        if reset:
            await self._transport.reset()
        else:
            self._transport.gone = True
            await self._transport.close()

    async def drain_body(self) -> bool:
        """Read and discard what is left of a request body the app did not read.

        Returns:
            Whether the body was drained (so the connection can be kept alive).
        """
        proto = self._proto
        # Usually the rest (often just the end of a GET) is already here: no waiting.
        drained = proto.drain_body()
        if drained is not None:
            return drained
        with trio.move_on_after(self._body_timeout):
            while drained is None:
                data = await self._transport.receive()
                if not data:
                    return False
                proto.receive_data(data)
                drained = proto.drain_body()
        return bool(drained)

    async def write_error(
        self, status: int, reason: str, info: ConnectionInfo, since: float
    ) -> None:
        """Answer a refused request with ``status`` (unless a response or something else took
        the wire already), and log it; ``since``: when the request began, for the log."""
        if self.written or self.wire_taken or self._transport.gone:
            return
        proto = self._proto
        data = proto.error_response(status, reason)
        peer = format_address(info.client)
        if status >= 500 or status == 408:
            error_log.debug("Answering %d to %s: %s", status, peer, reason)
        state = self._state
        if state.access_log:
            body_bytes = len(data) - (data.index(b"\r\n\r\n") + 4)  # 0 for a HEAD
            duration = trio.current_time() - since
            log_error_response(state.config, info, proto.head, status, body_bytes, duration)
        try:
            await self._transport.send(data)
        except ClientDisconnected:
            error_log.debug("%s left before its %d answer was written", peer, status)
