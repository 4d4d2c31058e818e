"""A server-side TLS stream on a socket, lean enough for the per-request path.

Why not ``trio.SSLStream``: it is general (either side, renegotiation, any transport stream,
concurrent callers detected and coordinated with locks), and it pays for that on every call: a
small TLS request spent most of its extra time over plain HTTP in its Python, not in OpenSSL.
This stream serves one case, the server side of a TLS connection on a socket, and does the same
work in a few calls:

- receiving (:meth:`TLSStream.receive_nowait`, synchronous; ``receive_some``, which the
  :class:`~._transport.Transport` reads through, wraps it in the waits): when nothing
  undecrypted is buffered
  (the incoming BIO and OpenSSL are empty), read the socket first (``os.read`` into the incoming
  BIO), then decrypt (``read``): asking OpenSSL first would cost an ``SSLWantReadError``, an
  exception, on almost every read. After a read that drained the socket and left nothing
  undecrypted, :attr:`TLSStream.wait_first` says the next read should wait for readability
  first: on a keep-alive connection the socket is almost always empty right after a response,
  and a read that finds nothing is a wasted system call. A read that fills its whole buffer (an
  upload, a pipelining client) tries the socket again before waiting. Once the connection is
  watched by the server's :class:`~._readiness.Readiness` (:meth:`TLSStream.watch`, from its
  first keep-alive wait on), those waits go through the server's edge-triggered epoll as a
  plain-TCP connection's do (no ``epoll_ctl`` per wait); since a full read tries the socket
  again before it waits, no event is missed. An idle HTTP/1.1 connection's wait for its next
  request goes further: the Readiness round that finds the socket readable calls
  :meth:`TLSStream.receive_nowait` itself (``Transport.take_tls``), so the request is decrypted
  and parsed before the connection's task runs. A read that takes plaintext without waiting is
  still a schedule point (``cancel_shielded_checkpoint``: a cancellation there would lose the
  plaintext just decrypted; one pending is raised before the read instead);
- sending (:meth:`TLSStream.send_nowait`): encrypt into the outgoing memory BIO and write it out
  with ``os.write``, never waiting: what the socket does not take now is kept for
  :meth:`TLSStream.flush`, which waits with ``wait_writable``.
  Writers take turns through a lock only then (bytes of two records must never interleave); the
  common write never touches it.

The calls into OpenSSL go to the C object under ``ssl.SSLObject`` (``_sslobj``, there since
Python 3.7) directly: each of the stdlib's Python wrappers costs a function call (about 60 ns,
a few times per request) and adds nothing.

Errors follow trio's stream contract, so the :class:`~._transport.Transport` maps them like any
stream's: a vanished client or a TLS error is ``trio.BrokenResourceError`` (its cause says
which), use after :meth:`aclose` is ``trio.ClosedResourceError``, and the client's
``close_notify`` is the end of the stream (``b""``, remembered: every later read is ``b""``
too, without asking OpenSSL or the socket again). A client that closes TCP without
``close_notify`` (a truncation attack, or a careless client) is a broken stream, as with
``trio.SSLStream(https_compatible=False)``. A send cancelled half-way leaves the stream broken
(part of a record may be on the wire).
"""

from __future__ import annotations

import contextlib
import errno
import os
import ssl
from typing import Any, Final

import trio

from ._errors import GONE_ERRNOS
from ._readiness import Readiness

__all__ = ["TLSStream"]

# Bytes read from the socket at once: a TLS record is at most 16 KiB plus overhead, and one read
# takes several when a client pipelines or uploads.
_READ_SIZE: Final = 64 * 1024
# The most plaintext one TLS record carries (RFC 8446 section 5.1), and so the most one decrypt
# returns: asking for more only makes OpenSSL's buffer (a bytes object, shrunk afterwards)
# larger, on every read.
_RECORD_PLAINTEXT: Final = 16 * 1024


def _broken(exc: BaseException) -> trio.BrokenResourceError:
    broken = trio.BrokenResourceError(f"TLS connection broken: {exc!r}")
    broken.__cause__ = exc
    return broken


class TLSStream(trio.abc.Stream):
    """The server side of TLS over ``transport_stream`` (see the module docstring).

    Args:
        transport_stream: The accepted TCP connection.
        context: The server's TLS context.
    """

    def __init__(self, transport_stream: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport_stream = transport_stream
        self._socket = transport_stream.socket
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        #: The TLS state (peer certificate, cipher, version, ALPN are read from it).
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # The C object behind ssl_object, called directly on the hot paths (see the module).
        self._sslobj: Any = self.ssl_object._sslobj  # type: ignore[attr-defined]
        #: The socket's descriptor.
        self.fd = self._socket.fileno()
        #: Whether a read would find nothing now: nothing decryptable is buffered (at most
        #: part of a record) and the last socket read drained the socket. Then wait for the
        #: socket to become readable before :meth:`receive_nowait` (else try it first).
        self.wait_first = False
        #: How many tasks the server's Readiness woke together with this stream's last wait
        #: (1: alone, or no wait; see ``Readiness.wait``).
        self.woken = 1
        # Whether the last socket read took less than it asked for (see receive_nowait).
        self._drained = False
        # The client's close_notify came: every read from now on is the end of the stream.
        self._eof = False
        # The server's watcher of this socket, once watch() registered it.
        self._readiness: Readiness | None = None
        self._send_lock = trio.Lock()
        # Tasks in flush()'s waiting path (holding the lock or queued for it): while there are
        # any, a write may not go straight to the socket.
        self._flushing = 0
        # Encrypted bytes the socket did not take, to go out before anything else.
        self._pending: memoryview | None = None
        self._closed = False
        self._broken: BaseException | None = None

    # -- the handshake -------------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the TLS handshake.

        Raises:
            trio.BrokenResourceError: the client left, or the handshake failed (its cause is the
                ``ssl.SSLError``; an alert for the client has been sent where there was one).
        """
        sslobj = self._sslobj
        while True:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                await self._read_handshake()
            except ssl.SSLError as exc:
                # Tell the client why (the alert OpenSSL queued), if it still listens.
                self._write_nowait(self._outgoing.read())
                self._broken = _broken(exc)
                raise self._broken from exc
        await self.flush()

    async def _read_handshake(self) -> None:
        """Read the client's next handshake bytes from the socket into the incoming BIO."""
        while self._read_socket() is None:
            await trio.lowlevel.wait_readable(self.fd)
            self._check()

    def _read_socket(self) -> int | None:
        """Move what the socket holds into the incoming BIO (its EOF too): how many bytes came
        (0: the client closed TCP), or ``None`` when there was nothing to read."""
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno not in GONE_ERRNOS:
                raise
            self._broken = _broken(exc)
            raise self._broken from exc
        if chunk:
            self._incoming.write(chunk)
        else:
            # OpenSSL reads this as an EOF without close_notify: SSLEOFError from what follows.
            self._incoming.write_eof()
        return len(chunk)

    def selected_alpn_protocol(self) -> str | None:
        """The protocol agreed by ALPN (``"h2"``, ``"http/1.1"``), or ``None``."""
        return self.ssl_object.selected_alpn_protocol()

    # -- receiving ---------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next plaintext from the client; ``b""`` after its ``close_notify``."""
        fd = self.fd
        woken = 1
        must_wait = self.wait_first
        if not must_wait:
            await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if must_wait:
                readiness = self._readiness
                if readiness is not None and readiness.running:
                    woken = await readiness.wait(fd)
                else:
                    await trio.lowlevel.wait_readable(fd)
                waited = True
            data = self.receive_nowait(max_bytes)
            if data is not None:
                break
            must_wait = True
        self.woken = woken
        if not waited:
            # Still a schedule point (a client uploading faster than we decrypt must not
            # starve the other connections), one that cannot lose the plaintext just decrypted.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def receive_nowait(self, max_bytes: int | None = None) -> bytes | None:
        """The next plaintext, without waiting: ``None`` when the socket has nothing (wait
        until it is readable and call again); ``b""`` after the client's ``close_notify``.

        Not a checkpoint: the caller makes one (see the module, and :meth:`receive_some`).
        """
        if self._closed or self._broken is not None:
            self._check()
        if self._eof:
            return b""
        sslobj = self._sslobj
        incoming = self._incoming
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        size = _RECORD_PLAINTEXT
        if max_bytes is not None and max_bytes < size:
            size = max_bytes
        # Nothing to decrypt (or only part of a record, after a wait): the socket first, since
        # OpenSSL would only say SSLWantReadError.
        from_socket = self.wait_first or not (incoming.pending or sslobj.pending())
        data: bytes
        while True:
            if from_socket:
                got = self._read_socket()
                if got is None:
                    self.wait_first = True
                    return None
                # A full read: more may be there already, and an edge-triggered watch would not
                # say so; the next read tries the socket before it waits.
                self._drained = got < _READ_SIZE
            try:
                data = sslobj.read(size)
            except ssl.SSLWantReadError:
                # Part of a record, or a record with no application data (a KeyUpdate).
                if self._outgoing.pending:
                    self._flush_nowait()  # a post-handshake message OpenSSL answered
                from_socket = True
                continue
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as exc:
                self._broken = _broken(exc)
                raise self._broken from exc
            break
        if not data:
            # The client's close_notify (_ssl's read returns b"" for it, or raises
            # SSLZeroReturnError). Remembered: the socket behind it may be closed or reset.
            self._eof = True
            self.wait_first = False  # every later read returns at once, without a wait
            return b""
        if self._outgoing.pending:
            # An answer OpenSSL queued (a KeyUpdate's): sent now if the socket takes it, else
            # ahead of our next write (RFC 8446 section 4.6.3 asks no more).
            self._flush_nowait()
        # Wait before the next read only if it would find nothing: the socket was drained and
        # nothing is left undecrypted.
        self.wait_first = self._drained and not incoming.pending and not sslobj.pending()
        return data

    def watch(self, readiness: Readiness) -> bool:
        """Have ``readiness`` (the server's, running) serve this stream's waits for the socket
        to become readable; whether it does (see the module). :meth:`aclose` forgets it."""
        if self._readiness is None and not self._closed and readiness.watch(self.fd):
            self._readiness = readiness
        return self._readiness is not None

    # -- sending -----------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and write all of it (a checkpoint, as trio's streams are: a large
        body written in pieces to a fast reader must still let other tasks run)."""
        if self.send_nowait(data):
            await trio.lowlevel.checkpoint()
        else:
            await self.flush()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt ``data`` and write what the socket takes now, without waiting.

        Returns:
            Whether all of it went out; if not, :meth:`flush` writes the rest (in order).
        """
        if self._closed or self._broken is not None:
            self._check()
        try:
            self._sslobj.write(data)
        except ssl.SSLError as exc:
            self._broken = _broken(exc)
            raise self._broken from exc
        # _flush_nowait(), inlined: this runs for every response.
        if self._pending is not None or self._flushing:
            return False
        out = self._outgoing.read()
        try:
            sent = os.write(self.fd, out)  # (not closed: checked above)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            if exc.errno not in GONE_ERRNOS:
                raise
            self._broken = _broken(exc)
            raise self._broken from exc
        if sent == len(out):
            return True
        self._pending = memoryview(out)[sent:]
        return False

    async def flush(self) -> None:
        """Write out everything encrypted so far, in order, whoever else is writing."""
        if self._flush_nowait():
            return
        self._flushing += 1
        try:
            async with self._send_lock:
                # A writer before us may have been cancelled half-way: then nothing more may go
                # out.
                self._check()
                try:
                    pending = self._pending
                    if pending is not None:
                        self._pending = None
                        await self._write_all(pending)
                    # What others (or we) queued meanwhile goes out behind it, still in order.
                    out = self._outgoing.read()
                    if out:
                        await self._write_all(memoryview(out))
                except BaseException as exc:
                    if self._broken is None:
                        self._broken = _broken(exc)
                    raise
        finally:
            self._flushing -= 1

    async def wait_send_all_might_not_block(self) -> None:
        self._check()
        await trio.lowlevel.wait_writable(self._socket)

    def _flush_nowait(self) -> bool:
        """Write the outgoing BIO if nobody is waiting to write and the socket takes it all
        (the common case); else keep what is left for :meth:`flush` and return ``False``."""
        if self._pending is not None or self._flushing:
            return False
        out = self._outgoing.read()
        if not out:
            return True
        sent = self._write_nowait(out)
        if sent == len(out):
            return True
        self._pending = memoryview(out)[sent:]
        return False

    def _write_nowait(self, data: bytes | memoryview) -> int:
        if not data:
            return 0
        try:
            return os.write(self._socket.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in GONE_ERRNOS and exc.errno != errno.EBADF:
                raise
            self._broken = _broken(exc)
            raise self._broken from exc

    async def _write_all(self, view: memoryview) -> None:
        while view:
            sent = self._write_nowait(view)
            view = view[sent:]
            if view:
                await trio.lowlevel.wait_writable(self._socket)

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Send ``close_notify`` if the socket takes it at once, then close (no waiting for
        the client's own ``close_notify``, as with ``trio.SSLStream(https_compatible=False)``)."""
        if self._closed:
            return
        self._closed = True
        self.wait_first = False  # a later read raises ClosedResourceError, without a wait
        try:
            if self._broken is None and self._pending is None and not self._send_lock.locked():
                # SSLWantReadError: it waits for the client's close_notify, which we do not do.
                with contextlib.suppress(ssl.SSLError):
                    self._sslobj.shutdown()
                self._write_nowait(self._outgoing.read())
        except (trio.BrokenResourceError, OSError):
            pass  # the client is gone: nothing to tell it
        finally:
            readiness = self._readiness
            if readiness is not None:
                # Before the close: a descriptor number reused by a new connection must start
                # afresh (and a task still waiting gets ClosedResourceError, as from trio).
                self._readiness = None
                readiness.forget(self.fd)
            await self.transport_stream.aclose()

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("this TLS stream is broken") from self._broken
