"""One HTTP/2 connection: the trio loop around :class:`H2Protocol`, one task per stream.

Theory of operation
-------------------
:meth:`H2Connection.serve` runs a reader loop in the connection's task and a nursery of stream
tasks beside it. The reader reads, feeds :class:`H2Protocol`, dispatches its events (a new
request starts an :class:`H2Stream` task; body bytes go to that stream's bounded buffer; a reset
or a window update wakes the stream), and writes what the protocol has to say *before reading
again*: a client that does not read our answers stops being read (its writes then time out),
instead of making us buffer them.

Each stream runs the same :class:`RequestCycle` as HTTP/1.1, with the stream as its
:class:`Exchange`: a slow stream never delays another. Response bodies go out in pieces that fit
the stream's and the connection's send windows; a stream whose window stays shut longer than
``write_timeout`` is reset, and the connection lives on. Writes from every task go through one
lock, each taking whatever frames are queued.

Idle (no open stream) for ``keep_alive_timeout``: GOAWAY, then close. Shutdown
(:meth:`stop_idle`): GOAWAY with the last stream id at once; streams in flight finish (the server
bounds them by its grace period); then close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import Final

import trio

from .._errors import ClientDisconnected, RequestRefused, only_disconnects
from .._eviction import Kind, Reason, Snapshot
from .._http._builtin import answer_health
from .._http._cycle import RequestCycle, log_error_response
from .._http._date import http_date
from .._http._events import RequestHead
from .._http._problem import VARY, negotiate_error
from .._http._scope import ConnectionInfo, build_scope, format_address
from .._http._state import ServerState
from .._transport import Transport
from ._protocol import (
    BodyData,
    ConnectionEnded,
    H2Protocol,
    StreamOpened,
    StreamReset,
    WindowOpened,
)

__all__ = ["H2Connection", "H2Stream"]

error_log = logging.getLogger("trioserve.error")

_NO_BODY_STATUSES: Final = frozenset({204, 304})
# File bodies are read in pieces of at most this size, each written at once as the frames the
# windows allow: large enough that a big file costs few reads and writes, small enough that
# 100 streams sending files hold at most 25 MiB between them.
_FILE_PIECE: Final = 256 * 1024
# The RST_STREAM error code that only asks the client to stop sending (RFC 9113 section 7).
_NO_ERROR: Final = 0


class H2Connection:
    """Serves the HTTP/2 streams of one client connection.

    Args:
        transport: The connection's bytes (TLS with ALPN ``h2``, or cleartext with the preface).
        state: The server-wide state.
        info: What every request of this connection shares in its scope.
        received: Bytes already read from the client (the preface, when HTTP/1.1 handed over).
        on_close: Called once :meth:`run` has closed the connection (the server's slot).
    """

    def __init__(
        self,
        transport: Transport,
        state: ServerState,
        info: ConnectionInfo,
        *,
        received: bytes = b"",
        on_close: Callable[[], object] | None = None,
    ) -> None:
        config = state.config
        self._transport = transport
        self._state = state
        self._config = config
        self._info = info
        self._received = received
        self._on_close = on_close
        self._proto = H2Protocol(
            clock=trio.current_time,
            max_concurrent_streams=config.h2_max_concurrent_streams,
            max_header_block=config.max_header_size,
            max_headers=config.max_headers,
        )
        self._streams: dict[int, H2Stream] = {}
        self._write_lock = trio.StrictFIFOLock()
        # The reader's current wait: its deadline is the idle timeout while no stream is open;
        # stop_idle() cancels it, and so does the last stream's end once stopping.
        self._reading: trio.CancelScope | None = None
        self._stopping = False
        self._goaway_sent = False
        # The connection ended with a protocol error or a flood (not by the client's choice).
        self._failed = False
        self._server_headers: list[tuple[bytes, bytes]] = []
        if config.server_header is not None:
            self._server_headers.append((b"server", config.server_header.encode()))

    # -- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve, then close; never raises but ``trio.Cancelled`` (the connection's own task)."""
        connections = self._state.connections
        connections.add(self)
        try:
            await self.serve()
        except Exception as exc:
            # Fixed: a disconnect found by the reader while streams ran came out of serve()'s
            # nursery in an exception group, and was logged as an unexpected error.
            if only_disconnects(exc):
                error_log.debug("HTTP/2 client %s left", self._peer())
            else:
                error_log.exception(
                    "Unexpected error on the HTTP/2 connection from %s", self._peer()
                )
        finally:
            connections.discard(self)
            try:
                await self._transport.close()
            finally:
                if self._on_close is not None:
                    self._on_close()

    async def serve(self) -> None:
        """Serve streams until the connection ends.

        Raises:
            ClientDisconnected: the client went away (the caller closes the transport).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.flush()
                if self._received:
                    await self._feed(self._received)
                    self._received = b""
                await self._read_loop()
                if self._failed:
                    # A protocol error or a flood: nothing more can be sent on this connection
                    # (h2 has closed it), so the streams' apps are cancelled, not waited for.
                    # Fixed: they ran on (an attacker's reset streams, to their end), and the
                    # connection stayed open until the last one returned.
                    nursery.cancel_scope.cancel()
                elif not self._stopping:
                    # Fixed: the client left (EOF or its GOAWAY): tell the streams now, as
                    # HTTP/1.1 does, instead of once their apps return (an app waiting for
                    # http.disconnect waited forever).
                    for stream in self._streams.values():
                        stream.client_gone()
                # Otherwise (shutdown, idle): let the streams in flight finish (the server
                # bounds that with its grace period), then close.
        finally:
            for stream in self._streams.values():
                stream.client_gone()

    async def _read_loop(self) -> None:
        proto = self._proto
        transport = self._transport
        while not proto.ended:
            with trio.CancelScope() as reading:
                self._reading = reading
                if self._stopping:
                    reading.cancel()
                elif not self._streams:
                    reading.deadline = trio.current_time() + self._config.keep_alive_timeout
                data = await transport.receive()
            self._reading = None
            if reading.cancelled_caught:
                # Idle past the keep-alive timeout, or shutting down: GOAWAY (once), and stop
                # reading as soon as no stream is left.
                if not self._goaway_sent:
                    self._goaway_sent = self._stopping = True
                    proto.goaway()
                    await self.flush()
                if not self._streams:
                    return
                # Streams in flight still need their window updates and bodies: read on until
                # the last one ends (stream_done() cancels this read then).
                continue
            if not data:
                return
            await self._feed(data)

    async def _feed(self, data: bytes | bytearray) -> None:
        for event in self._proto.receive_data(bytes(data)):
            kind = type(event)
            if kind is BodyData:
                assert isinstance(event, BodyData)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.feed(event.data, event.end_stream)
                else:
                    # The stream's request is answered already: credit the window right away.
                    self._proto.consumed(event.stream_id, len(event.data))
            elif kind is StreamOpened:
                assert isinstance(event, StreamOpened)
                self._open(event)
            elif kind is WindowOpened:
                assert isinstance(event, WindowOpened)
                if event.stream_id == 0:
                    for stream in self._streams.values():
                        stream.window_opened()
                elif (stream := self._streams.get(event.stream_id)) is not None:
                    stream.window_opened()
            elif kind is StreamReset:
                assert isinstance(event, StreamReset)
                if (stream := self._streams.get(event.stream_id)) is not None:
                    stream.client_gone()
            elif kind is ConnectionEnded:
                assert isinstance(event, ConnectionEnded)
                self._failed = not event.by_client
                log = error_log.warning if event.calm else error_log.debug
                log("HTTP/2 connection from %s ended: %s", self._peer(), event.reason)
        await self.flush()

    def _open(self, event: StreamOpened) -> None:
        stream = H2Stream(self, event.stream_id, event.head, event.end_stream)
        self._streams[event.stream_id] = stream
        self._nursery.start_soon(stream.run, event.refusal)

    def stream_done(self, stream: H2Stream) -> None:
        """A stream's task has ended."""
        self._streams.pop(stream.stream_id, None)
        reading = self._reading
        if not self._streams and reading is not None:
            if self._stopping or self._proto.ended:
                reading.cancel()  # the reader may stop now
            else:
                # Restart the idle clock.
                reading.deadline = trio.current_time() + self._config.keep_alive_timeout

    def stop_idle(self) -> None:
        """Shutdown: GOAWAY now; streams in flight finish; then the connection closes."""
        self._stopping = True
        if self._reading is not None:
            self._reading.cancel()

    def stop_websocket(self) -> None:
        """Shutdown, soft: HTTP/2 carries no websockets here; nothing to do."""

    def snapshot(self) -> Snapshot | None:
        """Eviction: idle while no stream is open (since its idle deadline was last set)."""
        if self._stopping:
            return None
        if self._streams or self._reading is None:
            return Snapshot(Kind.BUSY, 0.0)
        return Snapshot(Kind.IDLE, self._reading.deadline - self._config.keep_alive_timeout)

    def evict(self, reason: Reason) -> None:
        """Eviction (idle only): GOAWAY and close, as at shutdown."""
        self.stop_idle()

    def describe(self) -> str:
        return self._peer()

    async def flush(self) -> None:
        """Write whatever frames are queued (one writer at a time)."""
        async with self._write_lock:
            data = self._proto.data_to_send()
            if data:
                await self._transport.send(data)

    def _peer(self) -> str:
        return format_address(self._info.client)

    # -- what the streams use ----------------------------------------------------------------

    @property
    def proto(self) -> H2Protocol:
        return self._proto

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def info(self) -> ConnectionInfo:
        return self._info

    @property
    def transport(self) -> Transport:
        return self._transport

    def response_extras(self) -> list[tuple[bytes, bytes]]:
        """The ``date`` and ``server`` fields every response carries."""
        extras = list(self._server_headers)
        if self._config.date_header:
            extras.insert(0, (b"date", http_date()))
        return extras


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
        # END_STREAM has gone out: the response is whole (the request may still be arriving).
        self._response_ended = False
        self._no_body = False

    # -- the reader's side -------------------------------------------------------------------

    def feed(self, data: bytes, end_stream: bool) -> None:
        if self._body_too_large:
            return
        limit = self._config.max_body_size
        self._body_received += len(data)
        if limit is not None and self._body_received > limit:
            # Fixed: max_body_size was not enforced on HTTP/2 at all. The bytes under the limit
            # are still handed over (as HTTP/1.1 does); receive_body() then refuses with 413.
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

    async def run(self, refusal: tuple[int, str] | None) -> None:
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
            scope = build_scope(head, connection.info, config, state.lifespan_state)
            cycle = RequestCycle(self, scope, config, head.target, bodyless=self._bodyless)
            await cycle.run(state.app)
            if cycle.status != 499:
                state.count_request()
        except RequestRefused as exc:
            await self._answer_error(exc.status, exc.reason)
        except ClientDisconnected:
            error_log.debug("HTTP/2 stream %d: the client left", self.stream_id)
        except Exception:
            error_log.exception("Unexpected error on an HTTP/2 stream from %s", connection._peer())
        finally:
            with trio.CancelScope(shield=True):
                if self._proto.stream_open(self.stream_id) and not self._gone.is_set():
                    # An unfinished response must not pass for a whole one. Fixed: a whole
                    # response sent before the request body ended (a 413, an app that answers
                    # without reading an upload) was reset with INTERNAL_ERROR, an error after
                    # the fact; NO_ERROR only asks the client to stop sending (RFC 9113 8.1).
                    if self._response_ended:
                        self._proto.reset(self.stream_id, code=_NO_ERROR)
                    else:
                        self._proto.reset(self.stream_id)
                    with contextlib.suppress(ClientDisconnected):
                        await connection.flush()
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

    async def receive_body(self) -> tuple[bytes, bool] | None:
        if self._bodyless:
            return b"", False
        while not self._buffer and not self._body_ended:
            if self._gone.is_set():
                return None
            if self._body_too_large:
                raise RequestRefused(413, "Request body too large.")
            self._body_event = trio.Event()
            with trio.move_on_after(self._config.body_timeout) as waiting:
                await self._body_event.wait()
            if waiting.cancelled_caught:
                raise RequestRefused(408, "Timed out waiting for the request body.")
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

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    async def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, *, end: bool
    ) -> int:
        no_body = self._head_request or status in _NO_BODY_STATUSES
        extra = self._connection.response_extras()
        if end and not no_body and not _has(headers, b"content-length"):
            extra.append((b"content-length", b"%d" % len(body)))
        self._check_open()
        ended = no_body or (end and not body)
        self._proto.send_headers(self.stream_id, status, headers, end_stream=ended, extra=extra)
        self._written = True
        self._response_ended = ended
        self._no_body = no_body
        if ended:
            # The HEADERS frame carried END_STREAM: the stream is closed on our side, and
            # nothing is left to send but that frame.
            await self._connection.flush()
            return 0
        await self._send_data(body, end)
        return len(body)

    async def send_body(self, body: bytes, *, end: bool) -> int:
        if self._no_body:
            return 0
        await self._send_data(body, end)
        return len(body)

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
            self._response_ended = ended
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

    async def _send_data(self, data: bytes | memoryview, end: bool) -> None:
        """Send ``data`` (and the end of the body when ``end``): as many frames as the windows
        allow per write, then wait for the client to open them again."""
        proto = self._proto
        view = memoryview(data)
        if not view and not end:
            return
        while True:
            if view:
                await self._wait_for_window()
            else:
                self._check_open()
            sent = proto.send_data(self.stream_id, view, end_stream=end)
            view = view[sent:]
            self._response_ended = end and not view
            await self._connection.flush()
            if not view:
                return


def _has(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key.lower() == name for key, _ in headers)
