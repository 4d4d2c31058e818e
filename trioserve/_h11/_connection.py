"""One HTTP/1.1 connection: the trio loop around :class:`ServerProtocol` and the request cycle.

Theory of operation
-------------------
Each accepted HTTP/1.1 connection runs :meth:`H11Connection.run` in its own task. The task reads
a request head (bounded by ``header_timeout``; between requests by ``keep_alive_timeout``: the
wait is :class:`~._keepalive.HeadReading`'s, a base of the connection), then
runs a :class:`RequestCycle` for it *in the same task*: there is no per-request task, so a
keep-alive request costs no spawn. The connection is the cycle's :class:`Exchange`: it reads the
body when the app asks (sending ``100 Continue`` lazily), frames the response through the
protocol, and writes through the :class:`Transport`, head and a small body in one write.

After a response the protocol decides whether the connection lives on (keep-alive, pipelining,
how much of an unread body to drain); a websocket upgrade hands the connection to a
:class:`WebSocketSession` for good.

Every wait is bounded: reads by the head/keep-alive/body timeouts, writes by ``write_timeout``
(in the transport), and closing by a short linger. A request the server refuses raises
:class:`RequestRefused`; it is answered here, in one place, and the connection closes. Any other
exception, from the app or from a bug, is logged and closes this connection only: nothing escapes
to the listener's nursery.

Shutdown: the server sets ``ServerState.draining`` and calls :meth:`H11Connection.stop_idle`.
An idle connection closes at once; a busy one answers its current request with
``Connection: close`` and then closes. What is still running when the grace period ends is
cancelled by the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from .._errors import ClientDisconnected, RequestRefused
from .._eviction import Kind, Reason, Snapshot
from .._h2._connection import H2Connection
from .._http._access import log_access
from .._http._builtin import answer_health, answer_redirect
from .._http._cycle import RequestCycle
from .._http._date import http_date
from .._http._events import (
    RequestHead,
)
from .._http._response_state import DONE
from .._http._scope import build_scope, connection_info, format_address, websocket_scope
from .._http._state import ServerState
from .._transport import Transport
from .._websocket import WebSocketHandshakeError, WebSocketSession
from ._exchange import H11Exchange
from ._fast import protocol_class
from ._keepalive import HeadReading
from ._protocol import CLOSE, NEXT_BUFFERED, ServerProtocol

__all__ = ["H11Connection"]

error_log = logging.getLogger("trioserve.error")
access_log = logging.getLogger("trioserve.access")


class H11Connection(HeadReading):
    """Serves the HTTP/1.1 requests of one client connection.

    Args:
        stream: The connection, already accepted (and TLS-wrapped if need be).
        state: The server-wide state.
        client: The peer's ``(host, port)``, or ``None`` when unknown.
        server: Our ``(host, port)``, or ``None`` when unknown.
        scheme: ``"http"`` or ``"https"``.
        tls: The ASGI ``tls`` extension for a TLS connection.
        on_close: Called once the connection is closed (the server releases its slot).
        redirect_https_port: Answer every request with a redirect to HTTPS on this port.
    """

    # Dropped when the connection turns HTTP/2 (_serve_http2); mypyc compiles `del` of these
    # only.
    __deletable__ = ("_exchange", "_proto")

    __slots__ = (
        "_accepted_at",
        "_config",
        "_evicted",
        "_exchange",
        "_h2",
        "_info",
        "_on_close",
        "_proto",
        "_redirect",
        "_served",
        "_state",
        "_transport",
        "_websocket",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        state: ServerState,
        *,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        scheme: str = "http",
        tls: dict[str, Any] | None = None,
        on_close: Callable[[], object] | None = None,
        redirect_https_port: int | None = None,
    ) -> None:
        config = state.config
        self._state = state
        self._config = config
        self._transport = Transport(stream, config.write_timeout, state.readiness)
        self._info = connection_info(state, client, server, scheme, tls)
        self._on_close = on_close
        self._redirect = redirect_https_port
        self._proto: ServerProtocol = protocol_class(config.http_parser)(
            max_header_size=config.max_header_size,
            max_body_size=config.max_body_size,
            max_headers=config.max_headers,
            server_header=None if config.server_header is None else config.server_header.encode(),
            date=http_date if config.date_header else None,
            # Fixed (review): not with redirect_https_port, whose listener redirects every
            # request: a prior-knowledge HTTP/2 client was served by the app, in cleartext.
            h2c=config.http2 and scheme == "http" and redirect_https_port is None,
        )
        self._accepted_at = trio.current_time()
        # One cancel scope for the connection's own waits (the request head, keep-alive idle):
        # its deadline is set while the server waits for a request and is infinite while the
        # app runs. Cheaper than a fresh scope per wait, and what stop_idle() cancels.
        self._timer = trio.CancelScope()
        self._stopped = False  # the timer was cancelled (not just its deadline passed)
        self._idle = False
        # For eviction (see _eviction): reading the rest of a head, since when (or idle since
        # when), how many bytes of the head came so far, and whether it was evicted.
        self._reading_head = False
        self._since = self._accepted_at
        self._head_bytes = 0
        self._evicted = False
        # Whether a request has arrived (an idle wait before the first one is the head's); a
        # flag, not the last head: an idle connection keeps none of its last request.
        self._served = False
        self._websocket: WebSocketSession | None = None
        # The HTTP/2 connection this one became (cleartext with prior knowledge), if it did.
        self._h2: H2Connection | None = None
        # The wire side of the current request (it keeps the connection's written/taken flags).
        self._exchange = H11Exchange(self._proto, self._transport, state)

    # -- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests until the connection ends; never raises but ``trio.Cancelled``."""
        state = self._state
        connections = state.connections
        connections.add(self)
        proto = self._proto
        config = self._config
        health = None if config.health_path is None else config.health_path.encode()
        keep_open = True
        try:
            try:
                with self._timer:
                    first = True
                    buffered = True  # (the first wait asks the protocol)
                    while True:
                        head = await self._read_head(first, buffered)
                        if head is None:
                            break
                        first = False
                        self._served = True
                        if proto.websocket:
                            # A websocket never goes back to HTTP: the connection ends with it.
                            await self._serve_websocket(head)
                            break
                        # The request, answered here rather than in a method of its own: every
                        # await of the app resumes through each frame of this task's stack.
                        if health is not None and head.target.partition(b"?")[0] == health:
                            await answer_health(self._exchange, draining=state.draining)
                        elif self._redirect is not None:
                            await answer_redirect(
                                self._exchange, head.target, head.headers, self._redirect
                            )
                        else:
                            scope = build_scope(head, self._info, config, state.lifespan_state)
                            cycle = RequestCycle(
                                self._exchange,
                                scope,
                                config,
                                head.target,
                                bodyless=proto.request_bodyless,
                            )
                            await cycle.run(state.app)
                            if state.request_limit is not None and cycle.status != 499:
                                state.count_request()
                            # (Not cycle.complete: a property costs a call.)
                            complete = cycle.state is DONE and not cycle.disconnected
                            del scope, cycle  # not kept through the idle wait
                            if not complete:
                                # The response did not go out whole: the connection ends.
                                keep_open = False
                                break
                        if proto.will_close or self._exchange.wire_taken:
                            break
                        if (
                            not proto.request_bodyless  # (an attribute: spares a GET the property)
                            and not proto.request_complete
                            and not await self._exchange.drain_body()
                        ):
                            break
                        next_cycle = proto.start_next_cycle()
                        if next_cycle == CLOSE:
                            break
                        buffered = next_cycle == NEXT_BUFFERED
                        self._exchange.written = False
                        # Not kept through the idle wait: an idle connection holds nothing of
                        # its last request.
                        head = None
                self._reading_head = False
                if self._timer.cancelled_caught and not self._idle:
                    if self._evicted:
                        raise RequestRefused(408, "The request head came too slowly.")
                    raise RequestRefused(408, "Timed out waiting for the request head.")
                if proto.http2_preface:
                    del proto  # HTTP/2 may run for hours: let the HTTP/1.1 side go
                    await self._serve_http2()
            except RequestRefused as exc:
                if self._h2 is None:  # HTTP/2 answers its own errors
                    await self._exchange.write_error(
                        exc.status, exc.reason, self._info, self._since
                    )
        except ClientDisconnected:
            keep_open = False
        except BaseExceptionGroup as group:
            # From HTTP/2's nursery: disconnects (the ordinary end of a connection), maybe
            # mixed with cancellations. The cancellations go on to their scopes, the
            # disconnects end here, anything else is logged; nothing may reach the listener's
            # nursery. (Before the plain Exception below: an ExceptionGroup is one too.)
            keep_open = False
            cancelled = group.subgroup(trio.Cancelled)
            # (split() by types: subgroup() with a predicate tests the whole group first, and
            # compiled, a lambda is no function to ExceptionGroup.)
            _, rest = group.split((trio.Cancelled, ClientDisconnected))
            if rest is not None:
                error_log.error(
                    "Unexpected error on the connection from %s", self._peer(), exc_info=rest
                )
            if cancelled is not None:
                raise cancelled from None
        except Exception:
            error_log.exception("Unexpected error on the connection from %s", self._peer())
        finally:
            connections.discard(self)
            self._state.idle_timer.done(self)
            try:
                # Linger only to protect a response we wrote from a reset caused by unread
                # input.
                await self._transport.close(
                    linger=keep_open
                    and not self._evicted  # prompt: a new client waits for this slot
                    and self._unread_input_after_response()
                )
            finally:
                if self._on_close is not None:
                    self._on_close()

    def _unread_input_after_response(self) -> bool:
        """Whether a response went out while input may still be unread (linger to protect it)."""
        if self._h2 is not None:
            return True  # HTTP/2 wrote; its client may still be sending
        proto = self._proto
        return (proto.response_started or self._exchange.wire_taken) and (
            not proto.request_complete or proto.has_buffered_data
        )

    def stop_websocket(self) -> None:
        """Shutdown: close a websocket with 1001 (anything else carries on)."""
        if self._websocket is not None:
            self._websocket.shut_down()

    def stop_idle(self) -> None:
        """Shutdown: close now if waiting for a request; close a websocket with 1001."""
        if self._h2 is not None:
            self._h2.stop_idle()
        elif self._idle:
            self._stop()
        elif self._websocket is not None:
            self._websocket.shut_down()

    def snapshot(self) -> Snapshot | None:
        """Eviction: what this connection is doing (``None`` once evicted)."""
        if self._evicted:
            return None
        if self._h2 is not None:
            return self._h2.snapshot()
        if self._idle:
            # Before the first request, the wait for its first byte is the head's.
            if not self._served:
                return Snapshot(Kind.HEAD, self._since, 0)
            return Snapshot(Kind.IDLE, self._since)
        if self._reading_head:
            return Snapshot(Kind.HEAD, self._since, self._head_bytes)
        if self._websocket is not None:
            return Snapshot(Kind.WEBSOCKET, self._accepted_at)
        return Snapshot(Kind.BUSY, self._since)

    def evict(self, reason: Reason) -> None:
        """Eviction: close now (idle), or answer 408 and close (a head that came too slowly)."""
        if self._h2 is not None:
            self._h2.evict(reason)
            return
        self._evicted = True
        self._stop()

    def describe(self) -> str:
        """The client's address."""
        return self._peer()

    async def _serve_http2(self) -> None:
        """Hand the connection over to HTTP/2 (it opened with the preface: prior knowledge)."""
        received = self._proto.take_buffered()
        h2 = self._h2 = H2Connection(self._transport, self._state, self._info, received=received)
        # Nothing of HTTP/1.1 is needed again (every other method looks at _h2 first): an idle
        # HTTP/2 connection must not carry an HTTP/1.1 parser and exchange too.
        del self._proto, self._exchange
        await h2.serve()

    async def _serve_websocket(self, head: RequestHead) -> None:
        scope = websocket_scope(head, self._info, self._config, self._state.lifespan_state)
        started = time.perf_counter()
        try:
            session = WebSocketSession(
                self._transport,
                self._config,
                scope,
                list(head.headers),
                head.target,
                self._proto.take_buffered(),
                draining=lambda: self._state.draining,
            )
        except WebSocketHandshakeError as exc:
            raise RequestRefused(400, f"Bad websocket handshake: {exc}") from None
        state = self._state
        if state.websockets >= self._config.websocket_limit:
            state.refusals["websockets"] = state.refusals.get("websockets", 0) + 1
            error_log.debug("Refused a websocket from %s: --max-websockets reached", self._peer())
            raise RequestRefused(503, "Too many websockets open: try again later.")
        state.websockets += 1
        self._websocket = session
        # The session owns the wire from here on.
        self._exchange.written = self._exchange.wire_taken = True
        try:
            status = await session.run(self._state.app)
        finally:
            state.websockets -= 1
            self._websocket = None
            self._transport.gone = True  # nothing more to say on this connection
        if self._state.access_log:
            scope["method"] = "GET"
            log_access(
                self._config,
                scope,
                head.target,
                101 if status is None else status,
                0,
                time.perf_counter() - started,
                (),
            )

    # -- errors ------------------------------------------------------------------------------

    def _peer(self) -> str:
        return format_address(self._info.client)
