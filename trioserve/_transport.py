"""One connection's bytes: reads, writes, files, and closing, for every wire protocol.

Theory of operation
-------------------
A :class:`Transport` wraps the trio stream of one accepted connection (plain TCP, TLS, or an
in-memory stream in tests). On plain TCP the hot paths skip trio's stream layer: reads and
writes are single ``os.read``/``os.write`` calls on the socket's descriptor (trio's
``wait_readable``/``wait_writable`` only when the kernel says "not now"), and file bodies go out
with ``sendfile``. Any other stream goes through the trio stream API, and file bodies are read in
a worker thread and written as bytes.

This is the one place where the ways a client can vanish (``trio.BrokenResourceError``,
``trio.ClosedResourceError``, ``EPIPE``, ``ECONNRESET``, a write that stalls past
``write_timeout``) become :class:`ClientDisconnected` (on writes) or the end of the stream (on
reads): see :func:`map_disconnects`. Callers never catch trio's errors themselves.

Every wait is bounded: a write by ``write_timeout`` of no progress, closing by a short linger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator
from typing import Final

import trio

from ._errors import GONE_ERRNOS, ClientDisconnected
from ._readiness import READ_SIZE, Readiness, read_now
from ._tls_stream import TLSStream

__all__ = [
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "READ_SIZE",
    "Transport",
    "disconnected",
    "map_disconnects",
]

error_log = logging.getLogger("trioserve.error")

# When the server closes a connection while the client may still be sending (an error, an unread
# body), it stops writing and reads for a little while before closing, so that the kernel does
# not answer the client's in-flight bytes with a reset that destroys our response (nginx's
# "lingering close"). Both bounds are small: it is a courtesy, not a service.
LINGER_SECONDS: Final = 2.0
# A write that does not fit the socket's buffer goes out in pieces of this size, each with its
# own write_timeout: 64 KiB is about what a socket's send buffer takes at once, so a client
# reading at all makes progress within every piece's deadline.
_WRITE_PIECE: Final = 64 * 1024
# send_pieces(): below this total the pieces are joined (one copy of a small response costs less
# than a gathering write's set-up); at most this many pieces per writev (Linux's IOV_MAX).
_GATHER_FROM: Final = 64 * 1024
_IOV_MAX: Final = 1024
LINGER_BYTES: Final = 1024 * 1024
# What write_now() leaves when our TLS stream took the data whole but the socket not all of its
# records: send_rest() then flushes the stream (a marker, never written: only its identity is
# looked at).
_TLS_QUEUED: Final = memoryview(b"\x00")


def disconnected(exc: BaseException) -> ClientDisconnected | None:
    """The :class:`ClientDisconnected` that ``exc`` stands for, or ``None`` if it is not a
    vanished client (a bug, an unexpected OS error: let it propagate)."""
    if isinstance(exc, ClientDisconnected):
        return exc
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError) or (
        isinstance(exc, OSError) and exc.errno in GONE_ERRNOS
    ):
        gone = ClientDisconnected("the client disconnected")
        gone.__cause__ = exc
        return gone
    return None


@contextlib.contextmanager
def map_disconnects() -> Iterator[None]:
    """Turn the errors of a vanished client into :class:`ClientDisconnected` (see
    :func:`disconnected`); anything else propagates as it is."""
    try:
        yield
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        gone = disconnected(exc)
        if gone is None:
            raise
        raise gone from exc


class Transport:
    """The bytes of one connection.

    Args:
        stream: The accepted connection (TLS-wrapped if need be).
        write_timeout: Seconds a write may make no progress before the client is given up on.
        readiness: The server's watcher of idle sockets (see :meth:`watch`), if any.
    """

    __slots__ = (
        "_readiness",
        "_socket",
        "_stream",
        "_tls",
        "_write_timeout",
        "fd",
        "gone",
        "watched",
        "woken",
    )

    def __init__(
        self, stream: trio.abc.Stream, write_timeout: float, readiness: Readiness | None = None
    ) -> None:
        self._stream = stream
        self._readiness = readiness
        #: Whether the socket is registered with the server's :class:`Readiness`.
        self.watched = False
        self._write_timeout = write_timeout
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        # Our own TLS stream has a write that does not wait (TLS's fast path).
        self._tls = stream if isinstance(stream, TLSStream) else None
        #: The socket's descriptor for the plain-TCP fast path, or -1 (use the stream API).
        self.fd = -1 if self._socket is None else self._socket.fileno()
        #: Set once a read or write has found the client gone (or the connection was reset).
        self.gone = False
        #: On TLS: how many connections the server's Readiness woke together with the last
        #: read's wait (1: alone, or no wait; see ``Readiness.wait``).
        self.woken = 1

    # -- reading -----------------------------------------------------------------------------

    async def receive(self, max_bytes: int = READ_SIZE) -> bytes | bytearray:
        """What the client sent next (waiting for it); ``b""`` once it has gone or closed."""
        fd = self.fd
        if fd < 0:
            # A plain try, not map_disconnects(): this runs for every read on TLS.
            try:
                data = await self._stream.receive_some(max_bytes)
                if self._tls is not None:
                    self.woken = self._tls.woken
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if disconnected(exc) is None:
                    raise
                data = b""
            if not data:
                self.gone = True
            return data
        readiness = self._readiness
        while True:
            try:
                if self.watched and readiness is not None and readiness.running:
                    await readiness.wait(fd)
                else:
                    await trio.lowlevel.wait_readable(fd)
            except trio.ClosedResourceError:
                # Fixed (review): another task closed the connection meanwhile (a fault
                # injection's close while cancel_on_disconnect's watcher, or HTTP/2's reader,
                # waits here): the end of the stream, not an error with a traceback.
                self.gone = True
                return b""
            got = self.read_nowait(max_bytes)
            if got is not None:
                return got

    def read_nowait(self, max_bytes: int = READ_SIZE) -> bytes | None:
        """Read from the socket (fast path only) without waiting: ``None`` if nothing is there."""
        data = read_now(self.fd, max_bytes)
        if data is None:
            return None
        if not data:
            self.gone = True
        elif self.watched and len(data) == max_bytes:
            # More may wait, and an edge-triggered watch would not say so.
            assert self._readiness is not None
            self._readiness.mark(self.fd)
        return data

    @property
    def tls_fd(self) -> int:
        """Our TLS stream's socket descriptor (-1 elsewhere; plain TCP has :attr:`fd`)."""
        tls = self._tls
        return -1 if tls is None else tls.fd

    @property
    def tls_drained(self) -> bool:
        """On our TLS stream: whether its next read has to wait (the socket was drained and
        nothing is left undecrypted), so that a :meth:`Readiness.read` with :meth:`take_tls`
        may serve it."""
        tls = self._tls
        return tls is not None and tls.wait_first

    def take_tls(self, fd: int) -> bytes | None:
        """The ``take`` of a :meth:`Readiness.read` on our TLS stream's socket ``fd``: read the
        socket into the stream and return the plaintext, without waiting. ``None``: nothing
        whole to decrypt and the socket drained; ``b""``: the client closed or is gone (as
        :meth:`receive` says it)."""
        tls = self._tls
        assert tls is not None
        assert fd == tls.fd
        try:
            data = tls.receive_nowait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if disconnected(exc) is None:
                raise
            data = b""
        if data is not None and not data:
            self.gone = True
        return data

    def watch(self) -> bool:
        """Have the server's :class:`Readiness` watch the socket (plain TCP, or our TLS stream's
        socket): from then on this transport's reads wait there; whether it does (else the
        reads wait in trio)."""
        readiness = self._readiness
        if not self.watched and readiness is not None:
            if self.fd >= 0:
                self.watched = readiness.watch(self.fd)
            elif self._tls is not None:
                self.watched = self._tls.watch(readiness)
            if not self.watched and readiness.running:
                # The kernel refused the registration (ENOSPC, ENOMEM): this connection keeps
                # trio's wait for good, without an epoll_ctl attempt on every wait.
                self._readiness = None
        return self.watched

    # -- writing -----------------------------------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``.

        Raises:
            ClientDisconnected: the client is gone, or it read nothing for ``write_timeout``.
        """
        data = self.write_now(data)  # what does not go out now waits below
        if data:
            await self.send_rest(data)

    async def send_rest(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``, what :meth:`write_now` left (on our TLS stream, maybe its
        marker for records encrypted already and not yet written: they are flushed), as
        :meth:`send` does, without a second ``write_now`` first (trio's write still tries the
        socket once before it waits for room)."""
        # Encrypted already (by write_now): what is left goes out with the flush below.
        tls_queued = data is _TLS_QUEUED
        if self.gone:
            raise ClientDisconnected("the client disconnected")
        # Fixed (review): write_timeout bounds a *stall*, not the whole write: one deadline for
        # all of ``data`` cut off a large body going steadily to a slow client. The data goes
        # out in pieces, and each piece that goes out buys another write_timeout.
        # Fixed (review): cancelled from outside part way (an app's own timeout, an HTTP/2
        # stream's app cancelled on its client's reset), the bytes on the wire end at an
        # unknown point: nothing more may be written on this connection.
        try:
            with (
                trio.CancelScope(deadline=trio.current_time() + self._write_timeout) as writing,
                map_disconnects(),
            ):
                if tls_queued:
                    assert self._tls is not None
                    await self._tls.flush()
                elif len(data) <= _WRITE_PIECE:
                    # One piece (a small response): no view, no slicing.
                    await self._stream.send_all(data)
                else:
                    view = memoryview(data)
                    while view:
                        writing.deadline = trio.current_time() + self._write_timeout
                        await self._stream.send_all(view[:_WRITE_PIECE])
                        view = view[_WRITE_PIECE:]
        except BaseException:
            self.gone = True
            raise
        if writing.cancelled_caught:
            self.gone = True
            raise ClientDisconnected("write timed out: the client stopped reading")

    def write_now(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """Write what can go out of ``data`` now, without waiting; what is left, for
        :meth:`send_rest` (empty: all went out).

        On plain TCP, what the socket takes. On our TLS stream, data up to one write piece is
        encrypted whole at once and its records written as far as the socket takes them (what
        is left waits in the stream: the rest is then a marker that tells :meth:`send_rest` to
        flush it). Elsewhere (larger TLS writes, other streams) nothing is written.

        The socket's send buffer almost always has room for a whole response: an exchange
        calls this first and awaits :meth:`send_rest` only for a rest.

        Raises:
            ClientDisconnected: the client is gone.
        """
        if self.gone:
            raise ClientDisconnected("the client disconnected")
        fd = self.fd
        # A plain try, not map_disconnects(): this runs for every response.
        try:
            if fd < 0:
                tls = self._tls
                if tls is None or len(data) > _WRITE_PIECE:
                    return data
                return b"" if tls.send_nowait(data) else _TLS_QUEUED
            sent = os.write(fd, data)
        except BlockingIOError:
            return data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            gone = disconnected(exc)
            if gone is None:
                raise
            self.gone = True
            raise gone from exc
        return data[sent:] if sent != len(data) else b""

    async def send_pieces(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        """Write ``pieces`` one after the other, like :meth:`send` of their concatenation.

        On plain TCP a large total goes out with ``writev`` (a gathering write: no copy of the
        pieces into one buffer); anything else is joined and sent.

        Raises:
            ClientDisconnected: as for :meth:`send`.
        """
        total = sum(map(len, pieces))
        if self.fd < 0 or total < _GATHER_FROM or len(pieces) > _IOV_MAX:
            await self.send(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            return
        if self.gone:
            raise ClientDisconnected("the client disconnected")
        sock = self._socket
        assert sock is not None
        # Fixed (review): a write cut off by any means (the caller's cancellation too: an
        # HTTP/2 stream's app cancelled on its client's reset, while its task held the write
        # lock) leaves a torn frame, or frames lost, on the wire: the connection is unusable.
        try:
            with trio.CancelScope() as writing, map_disconnects():
                while True:
                    # A stall timeout, as in send(): each bit of progress buys another one.
                    writing.deadline = trio.current_time() + self._write_timeout
                    fd = self.fd
                    if fd < 0:
                        # Fixed (review): closed meanwhile (the descriptor may be reused).
                        raise ClientDisconnected("the connection was closed")
                    try:
                        sent = os.writev(fd, pieces)
                    except BlockingIOError:
                        sent = 0
                    total -= sent
                    if not total:
                        return
                    pieces = _after(pieces, sent)
                    await trio.lowlevel.wait_writable(sock)
        except BaseException:
            self.gone = True
            raise
        self.gone = True
        raise ClientDisconnected("write timed out: the client stopped reading")

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """Write ``count`` bytes of the open file ``fd`` from ``offset`` (sendfile on TCP).

        Raises:
            ClientDisconnected: as for :meth:`send`.
            RuntimeError: the file is shorter than ``count`` bytes from ``offset``.
        """
        if self._socket is None:
            end = offset + count
            while offset < end:
                size = min(READ_SIZE, end - offset)
                chunk = await trio.to_thread.run_sync(os.pread, fd, size, offset)
                if not chunk:
                    raise RuntimeError("file is shorter than its declared length")
                await self.send(chunk)
                offset += len(chunk)
            return
        sock = self._socket
        out_fd = self.fd
        remaining = count
        with trio.CancelScope() as stall:
            while remaining:
                # A stall timeout: each bit of progress buys another write_timeout.
                stall.deadline = trio.current_time() + self._write_timeout
                try:
                    with map_disconnects():
                        sent = os.sendfile(out_fd, fd, offset, remaining)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except ClientDisconnected:
                    self.gone = True
                    raise
                if sent == 0:
                    raise RuntimeError("file is shorter than its declared length")
                offset += sent
                remaining -= sent
                await trio.lowlevel.checkpoint()
        if stall.cancelled_caught:
            self.gone = True
            raise ClientDisconnected("write timed out: the client stopped reading")

    # -- closing -----------------------------------------------------------------------------

    async def close(self, *, linger: bool = False) -> None:
        """Close the connection (shielded and bounded: safe in a cancelled task).

        Args:
            linger: Send EOF first and read (and drop) what the client still sends for a
                moment, so that unread input does not make the kernel reset our response away.
        """
        self._forget()
        self.fd = -1  # the descriptor may be reused once closed: no more fd-level I/O
        stream = self._stream
        with trio.CancelScope(shield=True, deadline=trio.current_time() + LINGER_SECONDS):
            try:
                if linger and not self.gone and isinstance(stream, trio.abc.HalfCloseableStream):
                    with map_disconnects():
                        await stream.send_eof()
                        budget = LINGER_BYTES
                        while budget > 0:
                            data = await stream.receive_some(READ_SIZE)
                            if not data:
                                break
                            budget -= len(data)
            except ClientDisconnected:
                error_log.debug("The client left while the connection was closing")
            finally:
                await stream.aclose()

    def _forget(self) -> None:
        """Before the socket closes: out of the :class:`Readiness` watch (a descriptor number
        reused by a new connection must start afresh)."""
        if self.watched:
            self.watched = False
            assert self._readiness is not None
            if self._tls is None:
                self._readiness.forget(self.fd)
            # (A TLS stream forgets its socket itself, as it closes it.)

    async def reset(self) -> None:
        """Close at once with a TCP reset (RST instead of FIN) where the stream is a socket."""
        self.gone = True
        stream = self._stream
        sock = self._socket
        if sock is None and isinstance(stream, TLSStream):
            sock = stream.transport_stream.socket
        elif sock is None and isinstance(stream, trio.SSLStream):
            inner = stream.transport_stream
            if isinstance(inner, trio.SocketStream):
                sock = inner.socket
        if sock is not None:
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._forget()
        self.fd = -1
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _after(
    pieces: list[bytes | bytearray | memoryview], sent: int
) -> list[bytes | bytearray | memoryview]:
    """What is left of ``pieces`` once their first ``sent`` bytes are written."""
    for index, piece in enumerate(pieces):
        size = len(piece)
        if sent < size:
            rest = pieces[index:]
            if sent:
                rest[0] = memoryview(piece)[sent:]
            return rest
        sent -= size
    return []
