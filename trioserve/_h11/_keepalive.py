"""The wait for an HTTP/1.1 connection's next request head: keep-alive idle, the head's own
deadline, and the epoll round that reads and parses a request before its task runs.

Theory of operation
-------------------
:class:`HeadReading` is the part of :class:`~._connection.H11Connection` that waits for a
request head (its slots hold the wait's own state; the rest it reads from the connection).
Before the first request the wait is bounded by ``header_timeout`` from the accept; between
requests by the keep-alive timeout, kept by the server's :class:`~.._http._idle.IdleTimer`
(cheaper than moving the connection's cancel scope twice per request); once a head has started
to arrive, by ``header_timeout`` from its first bytes (else 408).

On plain TCP an idle connection waits in the server's :class:`~.._readiness.Readiness`: the
epoll round that finds its socket readable reads it and calls :meth:`HeadReading._arrived`,
which parses the head there, before any app of the round runs (see docs/architecture.md,
"Reading a round before answering it"). Over TLS the task reads for itself and, when woken
with others, yields once so that they read first. A head that did not come whole is read on
in the task.

An idle connection's stack is what idle memory is made of: the wait is inlined here rather
than a call of ``Transport.receive``.
"""

from __future__ import annotations

import math

import trio

from .._config import Config
from .._errors import RequestRefused
from .._http._events import CLIENT_CLOSED, HTTP2_PREFACE, NEED_DATA, Event, RequestHead
from .._http._state import ServerState
from .._transport import Transport
from ._protocol import ServerProtocol

__all__ = ["HeadReading"]


class HeadReading:
    """The keep-alive and head waits of an HTTP/1.1 connection (a base of ``H11Connection``,
    whose slots hold the attributes below)."""

    # The wait's own state, set up by the connection's __init__ and read by its eviction
    # snapshot: how many bytes of the head came so far; whether the connection waits for a
    # next request (idle) or for the rest of a head, and since when; the cancel scope of the
    # connection's own waits, and whether it was cancelled for good (not a deadline passing).
    __slots__ = ("_head_bytes", "_idle", "_reading_head", "_since", "_stopped", "_timer")

    _head_bytes: int
    _idle: bool
    _reading_head: bool
    _since: float
    _stopped: bool
    _timer: trio.CancelScope

    # The connection's (see H11Connection).
    _accepted_at: float
    _config: Config
    _proto: ServerProtocol
    _state: ServerState
    _transport: Transport

    def idle_expired(self) -> None:
        """The server's IdleTimer: the keep-alive timeout passed since the connection went
        idle; close quietly if it still is (a busy connection leaves its entry in place)."""
        if self._idle:
            self._stop()

    def _stop(self) -> None:
        """Cancel the connection's own waits (see ``_timer``) for good."""
        self._stopped = True
        self._timer.cancel()

    def _arrived(self, data: bytes) -> Event | None:
        """The next request's first bytes, read by the server's Readiness round while this
        connection waited (see ``_read_head``): no longer idle; parse them (``None``: the
        client closed).

        Raises:
            RequestRefused: as ``next_event`` (the connection's task answers it).
        """
        self._idle = False  # busy from here on: not for the idle sweep or eviction as idle
        if not data:
            self._transport.gone = True
            return None
        return self._proto.receive_next(data)

    async def _read_head(self, first: bool, buffered: bool = True) -> RequestHead | None:
        """The next request head; ``None`` when the connection ends quietly (the client closed
        or went idle past the keep-alive timeout, a shutdown, an HTTP/2 preface).

        ``buffered=False``: the protocol holds nothing of the next request (its
        ``start_next_cycle()`` said ``NEXT``), so the wait starts without asking it.

        Raises:
            RequestRefused: a refused head (the connection answers it).
        """
        proto = self._proto
        config = self._config
        event = proto.next_event() if buffered else NEED_DATA
        if event is NEED_DATA:
            timer = self._timer
            transport = self._transport
            self._head_bytes = 0
            # The keep-alive wait is timed by the server's IdleTimer (cheaper than moving the
            # timer's deadline twice per request); the others, and a connection served without
            # a server's timer running (tests), by the timer's deadline.
            swept = False
            idle_timer = self._state.idle_timer
            # trio's clock (IdleTimer.now), read into a local: called straight off the instance
            # attribute, the method is looked up the slow way.
            now = idle_timer.now
            buffered = buffered and proto.has_buffered_data
            if first:
                self._since = self._accepted_at
                timer.deadline = self._accepted_at + config.header_timeout
            elif buffered:
                # The start of a pipelined head is already here.
                self._since = now()
                timer.deadline = self._since + config.header_timeout
            else:
                self._since = now()
                swept = idle_timer.arm(self, self._since, timer)
            if not buffered:
                # Idle: no byte of the next request yet. A (hard) shutdown closes us here, and
                # when the deadline passes the timer's cancellation ends the connection quietly.
                # A soft drain waits for the next request (answered with Connection: close).
                if self._state.draining and not self._state.soft_drain:
                    return None
                self._idle = True
                fd = transport.fd
                # What arrived, parsed already when the Readiness round read it (plain TCP).
                parsed: Event | None = None
                data: bytes | bytearray
                crowd = 1
                if fd < 0:
                    readiness = self._state.readiness
                    if not first and not transport.watched and readiness.running:
                        transport.watch()  # TLS: its reads wait in the server's Readiness too
                    if transport.watched and readiness.running and transport.tls_drained:
                        # As on plain TCP below: the round that finds the socket readable
                        # reads it into the TLS stream, decrypts and parses (take_tls,
                        # _arrived) before any app of the round runs.
                        try:
                            data, parsed = await readiness.read(
                                transport.tls_fd, self._arrived, transport.take_tls
                            )
                        except trio.ClosedResourceError:
                            transport.gone = True
                            data = b""
                    else:
                        data = await transport.receive()
                        crowd = transport.woken
                else:
                    # Inlined receive(): an idle connection's stack is what idle memory is
                    # made of. A keep-alive wait is the server's Readiness's once it runs (no
                    # epoll_ctl per wait), and the round that finds the request reads and
                    # parses it (_arrived), before any app of the round runs: see _readiness.
                    readiness = self._state.readiness
                    watched = (
                        not first and readiness.running and (transport.watched or transport.watch())
                    )
                    while True:
                        try:
                            if watched and readiness.running:
                                data, parsed = await readiness.read(fd, self._arrived)
                                break
                            await trio.lowlevel.wait_readable(fd)
                        except trio.ClosedResourceError:
                            # Closed by another task meanwhile (as in Transport.receive).
                            transport.gone = True
                            data = b""
                            break
                        got = transport.read_nowait()
                        if got is not None:
                            data = got
                            break
                # No longer idle. The IdleTimer's entry stays (no call to take it out on every
                # request): the next wait replaces it, a close takes it out, and if its
                # deadline comes first, idle_expired() passes over a busy connection.
                self._idle = False
                if not data:
                    return None
                event = parsed if parsed is not None else proto.receive_next(data)
                if event is NEED_DATA and not first:
                    # Only a head that did not arrive whole needs its own deadline.
                    self._since = now()
                    timer.deadline = self._since + config.header_timeout
                    swept = False
                self._head_bytes = len(data)
                if crowd > 1:
                    # TLS read outside a round (the stream had undecrypted bytes, or the
                    # connection is not watched), woken together with other connections: let
                    # them read and parse their requests before this one's app runs, so that
                    # the responses of one round go out back to back (as uvicorn's do: its
                    # parser runs in the read callback, the app in a task of the loop's next
                    # round; a read in the round parses there, see _arrived). A client that reads
                    # many connections is then woken once for a burst of responses rather than
                    # once per response: see docs/architecture.md for the figures. A connection
                    # woken alone is not delayed. Shielded: a cancellation here would lose the
                    # request just read (the next schedule point sees it).
                    await trio.lowlevel.cancel_shielded_checkpoint()
            # Part of a head has arrived: the rest must follow before the deadline (else 408).
            self._reading_head = True
            while event is NEED_DATA:
                data = await transport.receive()
                self._head_bytes += len(data)
                proto.receive_data(data)
                event = proto.next_event()
            self._reading_head = False
            if not swept:
                timer.deadline = math.inf
            # (The flag, not ``timer.cancel_called``, which reads the clock on every call: only
            # a deadline of the timer's own can pass unnoticed by the flag.)
            if self._stopped or (not swept and timer.cancel_called):
                # The keep-alive deadline or a shutdown fired just as the request arrived: it
                # cannot be served under a cancelled scope, so close as if it came a moment
                # late (a client retries a request that got no response on a reused connection).
                return None
        elif not first:
            # The next request was already buffered (pipelining): let other connections have a
            # turn first.
            await trio.lowlevel.checkpoint()
        if type(event) is RequestHead:
            return event
        if event is CLIENT_CLOSED or event is HTTP2_PREFACE:
            return None
        raise RequestRefused(400, "Unexpected bytes before the request head.")  # pragma: no cover
