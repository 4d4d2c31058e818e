"""One HTTP/2 stream: the request cycle's :class:`Exchange` (or a websocket's wire).

The connection's reader (``_connection.py``) feeds each stream its body bytes, window updates
and resets; the stream's task runs the request cycle (or, for an extended CONNECT, the
websocket: ``_websocket.py``) and writes through the connection, in pieces that fit the windows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import trio

from .._errors import ClientDisconnected, RequestRefused
from .._http._access import log_error_response
from .._http._builtin import answer_health
from .._http._cycle import RequestCycle
from .._http._events import RequestHead
from .._http._exchange import Body
from .._http._problem import VARY, negotiate_error
from .._http._scope import build_scope
from ._websocket import serve_websocket

if TYPE_CHECKING:
    from .._websocket import WebSocketSession
    from ._connection import H2Connection

__all__ = ["H2Stream"]

error_log = logging.getLogger("trioserve.error")

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_NO_ERROR: Final = 0x0
# File bodies are read in pieces of at most this size, each written at once as the frames the
# windows allow: large enough that a big file costs few reads and writes, small enough that
# 100 streams sending files hold at most 25 MiB between them.
_FILE_PIECE: Final = 256 * 1024


class H2Stream:
    """One request on an HTTP/2 connection: the request cycle's :class:`Exchange`."""

    # A reset stream is known at once, read body or not.
    sees_disconnect_before_body = True

    def __init__(
        self, connection: H2Connection, stream_id: int, head: RequestHead, end_stream: bool
    ) -> None:
        self._connection = connection
        self._proto = connection.proto
        self._config = connection.state.config
        self._opened_at = trio.current_time()
        self.stream_id = stream_id
        self._head = head
        self._head_request = head.method == b"HEAD"
        self._bodyless = end_stream
        self._buffer: list[bytes] = []
        self._body_ended = end_stream
        # Request body bytes received so far, held to max_body_size as they arrive.
        self._body_received = 0
        self._body_too_large = False
        self._body_event = trio.Event()
        self._window_event = trio.Event()
        self._gone = trio.Event()
        self._written = False
        self._no_body = False
        # The Content-Length the app declared, and the body bytes it has sent so far.
        self._declared: int | None = None
        self._body_sent = 0
        #: The websocket this stream carries (an extended CONNECT), once its app runs.
        self.websocket: WebSocketSession | None = None

    @property
    def connection(self) -> H2Connection:
        return self._connection

    # -- the reader's side -------------------------------------------------------------------

    def feed(self, data: bytes, end_stream: bool) -> None:
        if self._body_too_large:
            return
        limit = self._config.max_body_size
        self._body_received += len(data)
        if limit is not None and self._body_received > limit:
            # max_body_size on HTTP/2: the bytes under the limit are still handed over (as on
            # HTTP/1.1); receive_body() then refuses with 413.
            self._body_too_large = True
            self._body_event.set()
            return
        if data:
            self._buffer.append(data)
        if end_stream:
            self._body_ended = True
        self._body_event.set()

    def window_opened(self) -> None:
        self._window_event.set()

    def client_gone(self) -> None:
        self._gone.set()
        self._body_event.set()
        self._window_event.set()

    # -- the stream's task -------------------------------------------------------------------

    async def run(self, refusal: tuple[int, str] | None, websocket: bool = False) -> None:
        connection = self._connection
        state = connection.state
        config = self._config
        head = self._head
        cycle: RequestCycle | None = None
        try:
            if refusal is not None:
                raise RequestRefused(*refusal)
            if self._declares_too_large():
                raise RequestRefused(413, "Request body too large.")
            health = config.health_path
            if health is not None and head.target.partition(b"?")[0] == health.encode():
                await answer_health(self, draining=state.draining)
                return
            if websocket:
                await serve_websocket(self, head)
                return
            scope = build_scope(head, connection.info, config, state.lifespan_state)
            cycle = RequestCycle(self, scope, config, head.target, bodyless=self._bodyless)
            await cycle.run(state.app)
            if cycle.status != 499:
                state.count_request()
        except RequestRefused as exc:
            # Fixed (review): a disconnect while answering (the stream's window kept shut past
            # write_timeout, the stream reset) escaped this handler, and the task, and took
            # every other stream of the connection down with it.
            try:
                await self._answer_error(exc.status, exc.reason)
            except ClientDisconnected:
                error_log.debug("HTTP/2 stream %d: the client left", self.stream_id)
        except ClientDisconnected:
            error_log.debug("HTTP/2 stream %d: the client left", self.stream_id)
        except Exception:
            error_log.exception(
                "Unexpected error on an HTTP/2 stream from %s", connection.describe()
            )
        finally:
            try:
                if self._proto.stream_open(self.stream_id) and not self._gone.is_set():
                    # An unfinished response must not pass for a whole one (INTERNAL_ERROR);
                    # after a whole one, the client may stop sending (NO_ERROR, RFC 9113
                    # section 8.1: a websocket whose client has not ended its side, say).
                    if self._proto.response_ended(self.stream_id):
                        self._proto.reset(self.stream_id, code=_NO_ERROR)
                    else:
                        self._proto.reset(self.stream_id)
                    # Fixed (review): not shielded. A stream is cancelled only when its
                    # connection is going away (the grace period over, the client gone), and a
                    # shielded write to a client that stopped reading held shutdown for another
                    # write_timeout past the grace period.
                    with contextlib.suppress(ClientDisconnected):
                        await connection.flush()
            finally:
                connection.stream_done(self)

    def _declares_too_large(self) -> bool:
        """A declared Content-Length over max_body_size: refused before the app runs (as on
        HTTP/1.1). A malformed one is left to the count in feed()."""
        limit = self._config.max_body_size
        if limit is None or self._bodyless:
            return False
        for name, value in self._head.headers:
            if name == b"content-length":
                return value.isdigit() and int(value) > limit
        return False

    async def _answer_error(self, status: int, reason: str) -> None:
        if self._written or self._gone.is_set():
            return
        accept = [value for name, value in self._head.headers if name == b"accept"]
        content_type, body = negotiate_error(status, reason, b", ".join(accept) or None)
        headers = [(b"content-type", content_type), (b"vary", VARY)]
        sent = await self.send_response(status, headers, body, end=True)
        if self._connection.state.access_log:
            # Refusals and 500s, in the access format of every other response.
            log_error_response(
                self._config,
                self._connection.info,
                self._head,
                status,
                sent,
                trio.current_time() - self._opened_at,
            )

    # -- the Exchange (see _http/_cycle.py) ----------------------------------------------------

    async def _wait_for_body(self, patience: float) -> None:
        while not self._buffer and not self._body_ended and not self._gone.is_set():
            if self._body_too_large:
                raise RequestRefused(413, "Request body too large.")
            self._body_event = trio.Event()
            with trio.move_on_after(patience) as waiting:
                await self._body_event.wait()
            if waiting.cancelled_caught:
                raise RequestRefused(408, "Timed out waiting for the request body.")

    async def receive_body(self) -> tuple[bytes, bool] | None:
        if self._bodyless:
            return b"", False
        await self._wait_for_body(self._config.body_timeout)
        if self._gone.is_set():
            return None
        pieces, self._buffer = self._buffer, []
        body = b"".join(pieces)
        more = not self._body_ended
        if more and body:
            # Credit the window only as the app reads: backpressure per stream.
            self._proto.consumed(self.stream_id, len(body))
            await self._connection.flush()
        return body, more

    async def receive_data(self, max_bytes: int) -> bytes:
        """A websocket's next bytes (at most ``max_bytes``), waiting as long as it takes;
        ``b""`` once the client has ended or reset the stream."""
        await self._wait_for_body(math.inf)
        if self._gone.is_set() or not self._buffer:
            return b""
        data = self._buffer[0]
        if len(data) > max_bytes:
            data, self._buffer[0] = data[:max_bytes], data[max_bytes:]
        else:
            self._buffer.pop(0)
        self._proto.consumed(self.stream_id, len(data))
        await self._connection.flush()
        return data

    async def end(self) -> None:
        """End our side of the stream (a websocket's, once it is closed)."""
        if self._proto.stream_open(self.stream_id) and not self._gone.is_set():
            await self._send_data(b"", True)

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    async def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body, *, end: bool
    ) -> int:
        no_body = self._head_request or status in _NO_BODY_STATUSES
        extra = self._connection.response_extras()
        if end and not no_body and not _has(headers, b"content-length"):
            extra.append((b"content-length", b"%d" % len(body)))
        if not no_body:
            self._declared = _content_length(headers)
            self._count_body(len(body), end)
        self._check_open()
        ended = no_body or (end and not body)
        self._proto.send_headers(self.stream_id, status, headers, end_stream=ended, extra=extra)
        self._written = True
        self._no_body = no_body
        if ended:
            # The HEADERS frame carried END_STREAM: the stream is closed on our side, and
            # nothing is left to send but that frame.
            await self._connection.flush()
            return 0
        await self._send_data(body, end)
        return len(body)

    async def send_body(self, body: Body, *, end: bool) -> int:
        if self._no_body:
            return 0
        self._count_body(len(body), end)
        await self._send_data(body, end)
        return len(body)

    def _count_body(self, size: int, end: bool) -> None:
        """Fixed (review): a body that contradicts its declared Content-Length is the app's
        error (as on HTTP/1.1: a 500 before the head, else a reset stream), not a malformed
        response that the client must reject (RFC 9113 section 8.1.1)."""
        declared = self._declared
        if declared is None:
            return
        self._body_sent += size
        if self._body_sent > declared:
            raise RuntimeError("response body longer than its Content-Length")
        if end and self._body_sent < declared:
            raise RuntimeError(
                f"response body shorter than its Content-Length ({declared - self._body_sent} "
                "missing)"
            )

    async def send_file(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], path: str
    ) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RuntimeError(f"http.response.pathsend needs a regular file: {path!r}")
            size = info.st_size
            no_body = self._head_request or status in _NO_BODY_STATUSES
            extra = self._connection.response_extras()
            if not _has(headers, b"content-length") and status not in _NO_BODY_STATUSES:
                extra.append((b"content-length", b"%d" % size))
            self._check_open()
            ended = no_body or not size
            self._proto.send_headers(self.stream_id, status, headers, end_stream=ended, extra=extra)
            self._written = True
            if no_body or not size:
                await self._connection.flush()
                return 0
            offset = 0
            while offset < size:
                # Page-cache reads on the event loop, as for HTTP/1.1's small files; a piece
                # never exceeds what the windows let through next (nor _FILE_PIECE).
                window = await self._wait_for_window()
                piece = os.pread(fd, min(window, _FILE_PIECE, size - offset), offset)
                if not piece:
                    raise RuntimeError("file is shorter than its declared length")
                offset += len(piece)
                await self._send_data(piece, offset >= size)
            return size
        finally:
            os.close(fd)

    async def send_trailers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if self._no_body:
            return  # HEAD, 204, 304: the stream ended with the head
        self._check_open()
        if headers:
            self._proto.send_trailers(self.stream_id, headers)
        else:
            self._proto.send_data(self.stream_id, b"", end_stream=True)
        await self._connection.flush()

    async def send_raw(self, data: bytes) -> None:
        # HTTP/2 has no unframed bytes: the nearest misbehaviour is a reset stream.
        self._proto.reset(self.stream_id)
        await self._connection.flush()

    async def abort(self, *, reset: bool) -> None:
        transport = self._connection.transport
        if reset:
            await transport.reset()
        else:
            transport.gone = True
            await transport.close()

    # -- flow control ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._gone.is_set() or not self._proto.stream_open(self.stream_id):
            raise ClientDisconnected("the client reset the stream")

    async def _wait_for_window(self) -> int:
        """The send window available now, waiting (bounded) while it is shut."""
        proto = self._proto
        while True:
            self._check_open()
            window = proto.window(self.stream_id)
            if window > 0:
                return window
            self._window_event = trio.Event()
            with trio.move_on_after(self._config.write_timeout) as waiting:
                await self._window_event.wait()
            if waiting.cancelled_caught:
                proto.reset(self.stream_id)
                await self._connection.flush()
                raise ClientDisconnected("the client kept the stream's window shut")

    async def _send_data(self, data: Body, end: bool) -> None:
        """Send ``data`` (and the end of the body when ``end``): as many frames as the windows
        allow per write, then wait for the client to open them again. An empty piece still
        writes what is queued (a head with no body bytes yet, a websocket's 200)."""
        proto = self._proto
        view = memoryview(data)
        while True:
            if view:
                await self._wait_for_window()
                sent = proto.send_data(self.stream_id, view, end_stream=end)
                view = view[sent:]
            elif end:
                self._check_open()
                proto.send_data(self.stream_id, view, end_stream=True)
            await self._connection.flush()
            if not view:
                return


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length the app declared (``None``: none, or not a number h2 checks)."""
    for key, value in headers:
        if key.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _has(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key.lower() == name for key, _ in headers)
