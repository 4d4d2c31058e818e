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
lock, each taking whatever frames are queued. The streams live in ``_stream.py``.

Idle (no open stream) for ``keep_alive_timeout``: GOAWAY, then close. Shutdown
(:meth:`stop_idle`): GOAWAY with the last stream id at once; streams in flight finish (the server
bounds them by its grace period); then close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from .._errors import ClientDisconnected, only_disconnects
from .._eviction import Kind, Reason, Snapshot
from .._http._date import http_date
from .._http._scope import ConnectionInfo, format_address
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
from ._stream import H2Stream

__all__ = ["H2Connection", "H2Stream"]

error_log = logging.getLogger("trioserve.error")


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
        # One writer at a time; made on demand and dropped while no stream is served (an
        # idle connection keeps no lock: about 450 bytes).
        self._write_lock: trio.StrictFIFOLock | None = None
        # The reader's current wait: its deadline is the idle timeout while no stream is open;
        # stop_idle() cancels it, and so does the last stream's end once stopping.
        self._reading: trio.CancelScope | None = None
        # Since when no stream has been open (eviction's idle clock).
        self._idle_since = 0.0
        self._stopping = False
        self._goaway_sent = False
        # The connection ended with a protocol error or a flood (not by the client's choice).
        self._failed = False
        self._server_headers: tuple[tuple[bytes, bytes], ...] = ()
        if config.server_header is not None:
            self._server_headers = ((b"server", config.server_header.encode()),)

    # -- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve, then close; never raises but ``trio.Cancelled`` (the connection's own task)."""
        connections = self._state.connections
        connections.add(self)
        try:
            await self.serve()
        except Exception as exc:
            # A disconnect found by the reader while streams ran comes out of serve()'s nursery
            # in an exception group: still only a client that left.
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
                try:
                    await self.flush()
                    if self._received:
                        await self._feed(self._received)
                        self._received = b""
                    await self._read_loop()
                except ClientDisconnected:
                    # The reader's own writes found the client gone: end here, in this task,
                    # so that the disconnect never leaves the nursery in a group (mixed with
                    # the streams' cancellations, it escaped the connection's handlers).
                    error_log.debug("HTTP/2 client %s left", self._peer())
                    self._failed = True
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
        except BaseExceptionGroup as group:
            # Fixed (review): a disconnect found by the reader comes out of the nursery in a
            # group, which HTTP/1.1's prior-knowledge hand-over (it catches ClientDisconnected)
            # logged as an unexpected error with a traceback: raise what the docstring says.
            if only_disconnects(group):
                raise ClientDisconnected("the client disconnected") from group
            raise
        finally:
            self._state.idle_timer.done(self)
            for stream in self._streams.values():
                stream.client_gone()

    async def _read_loop(self) -> None:
        proto = self._proto
        transport = self._transport
        # The reads wait in the server's Readiness (no epoll_ctl per read), cleartext or TLS.
        transport.watch()
        while not proto.ended:
            with trio.CancelScope() as reading:
                self._reading = reading
                if self._stopping and not self._goaway_sent:
                    # Fixed: cancelled on every round once stopping, this loop spun without
                    # reading while streams were in flight (a websocket's close frame, a
                    # window update never arrived): only the first round goes straight to the
                    # GOAWAY; stream_done() ends the reading after the last stream.
                    reading.cancel()
                elif not self._streams:
                    self._go_idle(reading)
                data = await transport.receive()
            self._reading = None
            self._state.idle_timer.done(self)
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
        self._nursery.start_soon(stream.run, event.refusal, event.websocket)

    def stream_done(self, stream: H2Stream) -> None:
        """A stream's task has ended."""
        self._streams.pop(stream.stream_id, None)
        reading = self._reading
        if not self._streams:
            self._streams = {}  # a dict that held streams keeps its larger table
            self._proto.idle()
        if not self._streams and reading is not None:
            if self._stopping or self._proto.ended:
                reading.cancel()  # the reader may stop now
            else:
                self._go_idle(reading)  # start the idle clock

    def _go_idle(self, reading: trio.CancelScope) -> None:
        """No stream is open: the keep-alive timeout runs, on the server's IdleTimer (as for
        HTTP/1.1: no deadline to move per request) or, without one running, on ``reading``."""
        self._idle_since = trio.current_time()
        self._state.idle_timer.arm(self, self._idle_since, reading)

    def idle_expired(self) -> None:
        """The server's IdleTimer: idle past the keep-alive timeout (GOAWAY, then close)."""
        if self._reading is not None and not self._streams:
            self._reading.cancel()

    def stop_idle(self) -> None:
        """Shutdown: GOAWAY now; websockets close with 1001; streams in flight finish; then
        the connection closes."""
        self._stopping = True
        if self._reading is not None:
            self._reading.cancel()
        self.stop_websocket()

    def stop_websocket(self) -> None:
        """Shutdown: close the websockets with 1001 (anything else carries on)."""
        for stream in self._streams.values():
            if stream.websocket is not None:
                stream.websocket.shut_down()

    def snapshot(self) -> Snapshot | None:
        """Eviction: idle while no stream is open (since its idle deadline was last set)."""
        if self._stopping:
            return None
        if self._streams or self._reading is None:
            return Snapshot(Kind.BUSY, 0.0)
        return Snapshot(Kind.IDLE, self._idle_since)

    def evict(self, reason: Reason) -> None:
        """Eviction (idle only): GOAWAY and close, as at shutdown."""
        self.stop_idle()

    def describe(self) -> str:
        return self._peer()

    async def flush(self) -> None:
        """Write whatever frames are queued (one writer at a time)."""
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = trio.StrictFIFOLock()
        async with lock:
            pieces = self._proto.pieces_to_send()
            if pieces:
                await self._transport.send_pieces(pieces)
        if not self._streams and not lock.locked() and self._write_lock is lock:
            # Free and idle (a waiter would hold it already: the lock is handed over).
            self._write_lock = None

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
