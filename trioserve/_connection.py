"""One HTTP/1.1 connection: the trio loop around :class:`ServerProtocol` and the ASGI app.

Theory of operation
-------------------
Each accepted connection runs :meth:`HTTPConnection.run` in its own task. The task reads a
request head (bounded by ``header_timeout``; between requests by ``keep_alive_timeout``), builds
the ASGI scope, and calls the app *in the same task*: there is no per-request task, so a
keep-alive request costs no spawn. ``receive()`` reads the request body from the socket only when
the app asks for it (backpressure), sends ``100 Continue`` lazily on the first call, and once
the body is complete waits for the client to go away, which it reports as ``http.disconnect``.
``send()`` holds the response head back until the first body bytes so that head and a small body
leave in one write, and raises :class:`ClientDisconnected` (an ``OSError``, as ASGI HTTP spec 2.4
promises) once the client is gone.

Every wait is bounded: reads by the head/keep-alive/body timeouts, every write by
``write_timeout`` (a client that stops reading is cut off), and closing by a short linger. A
request the server refuses raises :class:`HTTPError` from the protocol layer; it is answered
here, in one place, and the connection closes. Any other exception, from the app or from a bug,
is logged and closes this connection only: nothing escapes to the listener's nursery.

Shutdown: the server sets ``ServerState.draining`` and calls :meth:`HTTPConnection.stop_idle`.
An idle connection closes at once; a busy one answers its current request with
``Connection: close`` and then closes. What is still running when the grace period ends is
cancelled by the server.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

import h11
import trio

from ._accesslog import AccessRecord
from ._config import Config
from ._errors import ClientDisconnected, only_disconnects
from ._protocol import HTTPError, ServerProtocol, error_response
from ._proxy import TrustedPeers, read_forwarded
from ._types import ASGIApp, Message, Scope
from ._websocket import WebSocketHandshakeError, WebSocketSession

__all__ = ["ASGIApp", "HTTPConnection", "ServerState", "format_address"]


error_log = logging.getLogger("trioserve.error")
access_log = logging.getLogger("trioserve.access")

# 64 KiB: one read is enough for any ordinary request head and keeps per-read overhead low on
# bodies; it is also the largest file sent inline, read in one go together with the response head
# (one write, no sendfile set-up for the small files that dominate static traffic).
READ_SIZE: Final = 64 * 1024
INLINE_FILE_SIZE: Final = 64 * 1024
# When the server closes a connection while the client may still be sending (an error, an unread
# body), it stops writing and reads for a little while before closing, so that the kernel does
# not answer the client's in-flight bytes with a reset that destroys our response (nginx's
# "lingering close"). Both bounds are small: it is a courtesy, not a service.
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 1024 * 1024
# Bytes of an unread request body the server will read and discard to keep the connection alive.
DRAIN_BYTES: Final = 256 * 1024

_ASGI_INFO: Final = {"version": "3.0", "spec_version": "2.4"}
_DISCONNECT: Final = {"type": "http.disconnect"}
_HTTP_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}


class ServerState:
    """What every connection of one server shares."""

    __slots__ = (
        "access_log",
        "app",
        "config",
        "connection_ids",
        "connections",
        "draining",
        "lifespan_state",
        "on_request_limit",
        "request_limit",
        "requests",
        "soft_drain",
        "trusted",
    )

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config
        self.connections: set[HTTPConnection] = set()
        self.draining = False
        #: A soft drain leaves idle connections open for their next request.
        self.soft_drain = False
        self.lifespan_state: dict[str, Any] = {}
        self.access_log = config.access_log
        #: Numbers the connections 1, 2, 3... (shown to apps by the trioserve.fault extension).
        self.connection_ids = itertools.count(1)
        #: Requests answered, and the count at which on_request_limit() is called (max_requests).
        self.requests = 0
        self.request_limit: int | None = None
        self.on_request_limit: Callable[[], None] | None = None
        #: The peers whose proxy headers are believed (None: proxy headers are off).
        self.trusted: TrustedPeers | None = (
            TrustedPeers(config.forwarded_allow_ips)
            if config.proxy_headers != "off" or config.proxy_protocol
            else None
        )


class HTTPConnection:
    """Serves the HTTP/1.1 requests of one client connection to an ASGI app.

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

    __slots__ = (
        "_accepted_at",
        "_app_scope",
        "_body_done",
        "_body_event",
        "_bytes_sent",
        "_client",
        "_config",
        "_disconnect_scope",
        "_disconnected",
        "_fd",
        "_forwarded",
        "_gone",
        "_head",
        "_head_written",
        "_id",
        "_idle",
        "_on_close",
        "_proto",
        "_raw",
        "_redirect",
        "_refusal",
        "_response_done",
        "_response_started",
        "_scheme",
        "_server",
        "_socket",
        "_state",
        "_status",
        "_stream",
        "_timer",
        "_tls",
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
        self._stream = stream
        self._state = state
        self._config = config
        self._client = client
        self._server = server
        self._scheme = scheme
        self._id = next(state.connection_ids)
        # Proxy headers count only from a trusted peer; decided once per connection.
        self._forwarded = (
            config.proxy_headers
            if state.trusted is not None
            and config.proxy_headers != "off"
            and state.trusted.trusts(None if client is None else client[0])
            else None
        )
        self._tls = tls
        self._on_close = on_close
        self._redirect = redirect_https_port
        # On plain TCP the hot paths use the socket's file descriptor directly (one read or
        # write system call, no trio stream bookkeeping), and large files go out with sendfile;
        # any other stream (TLS, in-memory) goes through the trio stream API.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._fd = -1 if self._socket is None else self._socket.fileno()
        self._proto = ServerProtocol(
            max_header_size=config.max_header_size,
            max_body_size=config.max_body_size,
            server_header=None if config.server_header is None else config.server_header.encode(),
            date_header=config.date_header,
        )
        self._accepted_at = trio.current_time()
        # One cancel scope for the connection's own waits (the request head, keep-alive idle):
        # its deadline is set while the server waits for a request and is infinite while the
        # app runs. Cheaper than a fresh scope per wait, and what stop_idle() cancels.
        self._timer = trio.CancelScope()
        self._idle = False
        self._disconnect_scope: trio.CancelScope | None = None
        self._gone: trio.Event | None = None
        self._app_scope: trio.CancelScope | None = None
        self._body_event: trio.Event | None = None
        self._websocket: WebSocketSession | None = None
        self._disconnected = False
        self._reset_request()

    def _reset_request(self) -> None:
        self._raw = False
        self._response_started = False
        self._head: tuple[int, Any] | None = None
        self._head_written = False
        self._response_done = False
        self._body_done = False
        self._bytes_sent = 0
        self._status = 0
        self._refusal: HTTPError | None = None

    # -- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests until the connection ends; never raises but ``trio.Cancelled``."""
        connections = self._state.connections
        connections.add(self)
        proto = self._proto
        try:
            try:
                with self._timer:
                    first = True
                    while True:
                        request = await self._read_head(first)
                        if request is None:
                            break
                        first = False
                        if proto.websocket:
                            # A websocket never goes back to HTTP: the connection ends with it.
                            await self._serve_websocket(request)
                            break
                        await self._respond(request)
                        if self._disconnected or proto.closing:
                            break
                        if not proto.request_complete and not await self._drain_body():
                            break
                        if not proto.start_next_cycle():
                            break
                        self._reset_request()
                if self._timer.cancelled_caught and not self._idle:
                    raise HTTPError(408, "Timed out waiting for the request head.")
            except HTTPError as exc:
                await self._write_error(exc.status, exc.reason)
        except (ClientDisconnected, trio.BrokenResourceError, trio.ClosedResourceError):
            self._disconnected = True
        except Exception:
            error_log.exception("Unexpected error on the connection from %s", self._peer())
        finally:
            connections.discard(self)
            try:
                await self._close()
            finally:
                if self._on_close is not None:
                    self._on_close()

    def stop_websocket(self) -> None:
        """Shutdown: close a websocket with 1001 (anything else carries on)."""
        if self._websocket is not None:
            self._websocket.shut_down()

    def stop_idle(self) -> None:
        """Shutdown: close now if waiting for a request; close a websocket with 1001."""
        if self._idle:
            self._timer.cancel()
        elif self._websocket is not None:
            self._websocket.shut_down()

    async def _serve_websocket(self, request: h11.Request) -> None:
        scope = self._build_scope(request)
        if self._forwarded is not None:
            self._apply_forwarded(scope)
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        del scope["method"]
        scope["extensions"] = {"websocket.http.response": {}}
        if self._tls is not None:
            scope["extensions"]["tls"] = self._tls
        started = time.perf_counter()
        try:
            session = WebSocketSession(
                self._stream,
                self._config,
                scope,
                list(request.headers),
                request.target,
                self._proto.take_buffered(),
                draining=lambda: self._state.draining,
            )
        except WebSocketHandshakeError as exc:
            raise HTTPError(400, f"Bad websocket handshake: {exc}") from None
        self._websocket = session
        self._head_written = True  # the session owns the wire from here on
        try:
            status = await session.run(self._state.app)
        finally:
            self._websocket = None
            self._disconnected = True  # nothing more to say on this connection
        self._status = 101 if status is None else status
        if self._state.access_log:
            scope["method"] = "GET"
            self._log_access(scope, request, started)

    async def _read_head(self, first: bool) -> h11.Request | None:
        proto = self._proto
        config = self._config
        event = proto.next_event()
        if event is h11.NEED_DATA:
            timer = self._timer
            if first:
                timer.deadline = self._accepted_at + config.header_timeout
            elif proto.has_buffered_data:
                # The start of a pipelined head is already here.
                timer.deadline = trio.current_time() + config.header_timeout
            else:
                timer.deadline = trio.current_time() + config.keep_alive_timeout
            if not proto.has_buffered_data:
                # Idle: no byte of the next request yet. A (hard) shutdown closes us here, and
                # when the deadline passes the timer's cancellation ends the connection quietly.
                # A soft drain waits for the next request (answered with Connection: close).
                if self._state.draining and not self._state.soft_drain:
                    return None
                self._idle = True
                fd = self._fd
                if fd < 0:
                    data = await self._stream.receive_some(READ_SIZE)
                else:
                    # Inlined _recv(): an idle connection's stack is what idle memory is made of.
                    while True:
                        await trio.lowlevel.wait_readable(fd)
                        got = self._read_nowait()
                        if got is not None:
                            data = got
                            break
                self._idle = False
                if not data:
                    return None
                proto.receive_data(data)
                event = proto.next_event()
                if event is h11.NEED_DATA and not first:
                    # Only a head that did not arrive whole needs its own deadline.
                    timer.deadline = trio.current_time() + config.header_timeout
            # Part of a head has arrived: the rest must follow before the deadline (else 408).
            while event is h11.NEED_DATA:
                proto.receive_data(await self._recv())
                event = proto.next_event()
            timer.deadline = math.inf
            if timer.cancel_called:
                # The keep-alive deadline or a shutdown fired just as the request arrived: it
                # cannot be served under a cancelled scope, so close as if it came a moment
                # late (a client retries a request that got no response on a reused connection).
                return None
        elif not first:
            # The next request was already buffered (pipelining): let other connections have a
            # turn first.
            await trio.lowlevel.checkpoint()
        if type(event) is h11.Request:
            return event
        if type(event) is h11.ConnectionClosed:
            return None
        raise HTTPError(400, "Unexpected bytes before the request head.")  # pragma: no cover

    async def _recv(self) -> bytes | bytearray:
        """Read what the client sent (waiting for it); ``b""`` at the end of the stream."""
        fd = self._fd
        if fd < 0:
            return await self._stream.receive_some(READ_SIZE)
        while True:
            await trio.lowlevel.wait_readable(fd)
            data = self._read_nowait()
            if data is not None:
                return data

    def _read_nowait(self) -> bytes | None:
        """Read from the socket without waiting: ``None`` if nothing is there yet."""
        try:
            return os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return b""

    async def _respond(self, request: h11.Request) -> None:
        state = self._state
        started = time.perf_counter() if state.access_log else 0.0
        health_path = self._config.health_path
        if health_path is not None and request.target.partition(b"?")[0] == health_path.encode():
            await self._answer_health()
            return
        if self._redirect is not None:
            await self._answer_redirect(request)
            return
        scope = self._build_scope(request)
        if self._forwarded is not None:
            self._apply_forwarded(scope)
        failed = False
        try:
            if self._config.cancel_on_disconnect:
                await self._run_app_cancellable(scope)
            else:
                await state.app(scope, self._receive, self._send)
        except Exception as exc:
            if only_disconnects(exc):
                # send() said the client had gone and the app let that propagate (possibly
                # out of a task group): the ordinary end of a request whose client left.
                error_log.debug("Client %s left during %s %s", self._peer(), *_what(scope))
            else:
                failed = True
                if self._refusal is None:
                    error_log.exception(
                        "Exception in ASGI application (%s %s from %s)",
                        *_what(scope),
                        self._peer(),
                    )
        if not self._head_written:
            if self._disconnected and self._refusal is None:
                # Nobody to answer; logged like nginx's 499 "client closed request".
                self._status = 499
                if state.access_log:
                    self._log_access(scope, request, started)
                return
            if self._refusal is not None:
                raise self._refusal
            if not failed:
                error_log.error(
                    "ASGI application returned without completing a response (%s %s)",
                    scope["method"],
                    scope["path"],
                )
            raise HTTPError(500, "Internal Server Error")
        if not self._response_done:
            # Started but unfinished: the client must not take a truncated body for a whole one.
            if not failed and not self._disconnected and not self._raw:
                error_log.error(
                    "ASGI application returned before finishing its response (%s %s)",
                    scope["method"],
                    scope["path"],
                )
            self._disconnected = True
        if state.access_log:
            self._log_access(scope, request, started)
        if state.request_limit is not None:
            state.requests += 1
            if state.requests == state.request_limit and state.on_request_limit is not None:
                state.on_request_limit()

    async def _answer_redirect(self, request: h11.Request) -> None:
        """A plain listener with --redirect-to-https: 308 to the same URL over HTTPS."""
        raw_host = next((value for name, value in request.headers if name == b"host"), b"")
        authority = raw_host.decode("latin-1")
        if authority.startswith("["):
            host = authority[: authority.find("]") + 1]
        else:
            host = authority.rsplit(":", 1)[0]
        if not host or any(char in host for char in "/\\@ "):
            raise HTTPError(400, "A redirect to HTTPS needs a valid Host header.")
        port = "" if self._redirect == 443 else f":{self._redirect}"
        target = request.target.decode("ascii")
        if not target.startswith("/"):
            target = _origin_form(request.target).decode("ascii")
        self._response_started = True
        self._status = 308
        self._head = (308, [(b"location", f"https://{host}{port}{target}".encode())])
        await self._send({"type": "http.response.body", "body": b""})

    async def _answer_health(self) -> None:
        """The server's own health answer: 200, or 503 once it is shutting down."""
        status, body = (503, b"draining\n") if self._state.draining else (200, b"ok\n")
        self._response_started = True
        self._status = status
        self._head = (
            status,
            [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")],
        )
        await self._send({"type": "http.response.body", "body": body})

    async def _run_app_cancellable(self, scope: Scope) -> None:
        """Run the app in a cancel scope that a disconnect of its client cancels.

        A watcher task waits for the client to go once the request body is in (while the body
        is being read, receive() itself notices); send() failing does the same. Only this
        opt-in mode pays for the extra task.
        """
        self._body_event = trio.Event()
        if self._body_done or self._proto.request_bodyless:
            self._body_event.set()
        try:
            async with trio.open_nursery() as nursery:
                self._app_scope = nursery.cancel_scope
                nursery.start_soon(self._watch_for_disconnect)
                await self._state.app(scope, self._receive, self._send)
                nursery.cancel_scope.cancel()
        finally:
            self._app_scope = None
            self._body_event = None
        if self._disconnected and not self._response_done:
            error_log.debug("Cancelled %s %s: the client disconnected", *_what(scope))

    def _log_access(self, scope: Scope, request: h11.Request, started: float) -> None:
        config = self._config
        if config.access_log_format is not None or config.access_log_json:
            record = AccessRecord(
                client=format_address(scope.get("client") or self._client),
                method=scope["method"],
                target=request.target.decode("ascii", "replace"),
                status=self._status,
                bytes_sent=self._bytes_sent,
                duration=time.perf_counter() - started,
                http_version=scope["http_version"],
                scheme=scope["scheme"],
                tls_version=None if self._tls is None else self._tls.get("tls_version"),
                request_headers=scope["headers"],
                response_headers=[] if self._head is None else self._head[1],
            )
            if config.access_log_json:
                access_log.info("%s", record.json())
            else:
                assert config.access_log_format is not None
                access_log.info("%s", record.format(config.access_log_format))
            return
        access_log.info(
            '%s - "%s %s HTTP/%s" %d %d %.1fms',
            format_address(scope.get("client") or self._client),
            scope["method"],
            request.target.decode("ascii", "replace"),
            scope["http_version"],
            self._status,
            self._bytes_sent,
            (time.perf_counter() - started) * 1000.0,
        )

    def _build_scope(self, request: h11.Request) -> Scope:
        target = request.target
        if target[:1] != b"/":
            target = _origin_form(target)
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        root_path = self._config.root_path
        state = self._state
        return {
            "type": "http",
            "asgi": _ASGI_INFO,
            "http_version": _HTTP_VERSIONS[request.http_version],
            "server": self._server,
            "client": self._client,
            "scheme": self._scheme,
            "method": request.method.decode("ascii"),
            "root_path": root_path,
            "path": root_path + path if root_path else path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": list(request.headers),
            "state": state.lifespan_state.copy(),
            "extensions": self._extensions(),
        }

    def _apply_forwarded(self, scope: Scope) -> None:
        """Rewrite client, scheme and Host from a trusted proxy's headers."""
        assert self._forwarded is not None
        assert self._state.trusted is not None
        info = read_forwarded(scope["headers"], self._forwarded, self._state.trusted)
        if info.client is not None:
            scope["client"] = (info.client, 0)
        if info.scheme in ("http", "https"):
            scope["scheme"] = info.scheme
        if info.host is not None:
            host = info.host.encode("latin-1")
            scope["headers"] = [
                (name, host if name == b"host" else value) for name, value in scope["headers"]
            ]

    def _extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"http.response.pathsend": {}}
        if self._tls is not None:
            extensions["tls"] = self._tls
        if self._config.fault_injection:
            extensions["trioserve.fault"] = {"connection_id": self._id}
        return extensions

    # -- ASGI receive ------------------------------------------------------------------------

    async def _receive(self) -> Message:
        if self._body_done or self._disconnected or self._refusal is not None:
            # Loop: a wait can end without a verdict (another task's read was cancelled).
            while not (self._disconnected or self._response_done or self._refusal is not None):
                await self._wait_for_disconnect()
            return _DISCONNECT
        proto = self._proto
        if proto.request_bodyless:
            self._mark_body_done()
            return {"type": "http.request", "body": b"", "more_body": False}
        try:
            if proto.waiting_for_100_continue and not self._head_written:
                await self._write(proto.send_continue())
            while True:
                event = proto.next_event()
                if type(event) is h11.Data:
                    # Hand over everything already received as one message, and say so when
                    # that is the whole body (the common case: one message, not two).
                    pieces = [event.data]
                    more_body = True
                    while True:
                        following = proto.next_event()
                        if type(following) is h11.Data:
                            pieces.append(following.data)
                            continue
                        if type(following) is h11.EndOfMessage:
                            more_body = False
                            self._mark_body_done()
                        break
                    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    return {"type": "http.request", "body": bytes(body), "more_body": more_body}
                if type(event) is h11.EndOfMessage:
                    self._mark_body_done()
                    return {"type": "http.request", "body": b"", "more_body": False}
                if event is h11.NEED_DATA:
                    with trio.move_on_after(self._config.body_timeout) as reading:
                        data = await self._recv()
                    if reading.cancelled_caught:
                        raise HTTPError(408, "Timed out waiting for the request body.")
                    if not data:
                        self._disconnected = True
                        self._cancel_app()
                        return _DISCONNECT
                    proto.receive_data(data)
                    continue
                # ConnectionClosed or PAUSED cannot happen before EndOfMessage.
                raise HTTPError(400, "Malformed request body.")  # pragma: no cover
        except HTTPError as exc:
            # The request is refused (body too large, malformed, too slow): the app sees the
            # client go, and the server answers with the error once the app has returned.
            self._refusal = exc
            return _DISCONNECT
        except (trio.BrokenResourceError, trio.ClosedResourceError, ClientDisconnected):
            self._disconnected = True
            return _DISCONNECT

    def _mark_body_done(self) -> None:
        self._body_done = True
        if self._body_event is not None:
            self._body_event.set()

    async def _wait_for_disconnect(self) -> None:
        """Block until the client closes or the response is complete.

        One task reads the socket; any other task that asks meanwhile (the app's, and the
        cancel-on-disconnect watcher) waits for that reader's verdict.
        """
        if self._disconnect_scope is not None:
            if self._gone is None:
                self._gone = trio.Event()
            await self._gone.wait()
            return
        proto = self._proto
        limit = self._config.max_header_size
        with trio.CancelScope() as scope:
            self._disconnect_scope = scope
            try:
                discarded = 0
                while True:
                    data = await self._recv()
                    if not data:
                        break
                    if proto.closing:
                        # Past the buffer limit (below): keep watching for the client's EOF,
                        # but drop what it sends, and give up on a client that floods us.
                        discarded += len(data)
                        if discarded > LINGER_BYTES:
                            break
                    elif proto.buffered_size + len(data) > limit:
                        # A pipelining client far ahead of us: this response will be the
                        # connection's last, and pipelined requests past it go unanswered (a
                        # pipelining client retries them).
                        proto.closing = True
                    else:
                        # Bytes of the next pipelined request: keep them for after this response.
                        proto.receive_data(data)
                self._disconnected = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._disconnected = True
            finally:
                self._disconnect_scope = None
                if self._gone is not None:
                    self._gone.set()
                    self._gone = None
        if self._disconnected:
            self._cancel_app()

    def _cancel_app(self) -> None:
        """With cancel_on_disconnect, cancel the app's task (its client is gone)."""
        if self._app_scope is not None:
            self._app_scope.cancel()

    async def _watch_for_disconnect(self) -> None:
        """cancel_on_disconnect: once the request body is in, wait for the client to go."""
        if not self._body_done:
            assert self._body_event is not None
            await self._body_event.wait()
        while not (self._disconnected or self._response_done):
            await self._wait_for_disconnect()

    # -- ASGI send ---------------------------------------------------------------------------

    async def _send(self, message: Message) -> None:
        if self._disconnected or self._refusal is not None:
            raise ClientDisconnected("the client disconnected")
        message_type = message["type"]
        if message_type == "http.response.body":
            if not self._response_started or self._response_done:
                raise RuntimeError(_out_of_order(message_type, self._response_started))
            proto = self._proto
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self._head_written:
                out = proto.send_data(body)
            elif more_body:
                out = self._head_bytes() + proto.send_data(body)
            else:
                # The whole body in one message: say how long it is rather than chunk it.
                out = self._head_bytes(self._length_header(len(body)))
                out += proto.send_data(body)
            if not more_body:
                out += proto.send_end()
            if not proto.discards_body:
                self._bytes_sent += len(body)
            if out:
                self._head_written = True
                try:
                    await self._write(out)
                except ClientDisconnected:
                    self._cancel_app()
                    raise
            if not more_body:
                self._finish_response()
        elif message_type == "http.response.start":
            if self._response_started:
                raise RuntimeError(_out_of_order(message_type, True))
            self._response_started = True
            self._status = message["status"]
            self._head = (message["status"], message.get("headers", ()))
        elif message_type == "http.response.pathsend":
            if not self._response_started or self._response_done:
                raise RuntimeError(_out_of_order(message_type, self._response_started))
            try:
                await self._send_file(message["path"])
            except ClientDisconnected:
                self._cancel_app()
                raise
        elif message_type.startswith("trioserve.fault.") and self._config.fault_injection:
            await self._fault(message)
        else:
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} for an HTTP request")

    async def _fault(self, message: Message) -> None:
        """The ``trioserve.fault`` extension: misbehave on purpose, for test servers.

        ``trioserve.fault.raw`` writes bytes as they are (no framing: the app owns the wire for
        this response, and the connection closes after it); ``trioserve.fault.close`` closes the
        connection at once, with a TCP reset when ``reset`` is true.
        """
        if message["type"] == "trioserve.fault.raw":
            self._raw = True
            self._head_written = True
            await self._write(bytes(message.get("data", b"")))
        elif message["type"] == "trioserve.fault.close":
            self._raw = True
            self._head_written = True
            self._disconnected = True
            self._fd = -1  # the descriptor may be reused once closed: no more fd-level I/O
            stream = self._stream
            if message.get("reset"):
                sock = getattr(stream, "socket", None) or getattr(
                    getattr(stream, "transport_stream", None), "socket", None
                )
                if sock is not None:
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with trio.CancelScope(shield=True):
                await stream.aclose()
        else:
            raise RuntimeError(f"Unknown trioserve.fault message {message['type']!r}")

    def _length_header(self, length: int) -> list[tuple[bytes, bytes]] | None:
        """A Content-Length header for a body of ``length``, unless the app framed it already."""
        assert self._head is not None
        status, headers = self._head
        if self._proto.head_request or status < 200 or status in (204, 304):
            return None
        for name, _ in headers:
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                return None
        return [(b"content-length", b"%d" % length)]

    def _head_bytes(self, headers: Any = None) -> bytes:
        """The response head, built from the app's ``http.response.start`` (and written next)."""
        assert self._head is not None
        status, app_headers = self._head
        proto = self._proto
        if self._state.draining or (not proto.request_complete and proto.waiting_for_100_continue):
            # Shutting down, or the client still holds back a body we never asked for.
            proto.closing = True
        if headers is not None:
            app_headers = [*app_headers, *headers]
        return proto.send_response(status, app_headers)

    def _finish_response(self) -> None:
        self._response_done = True
        if self._disconnect_scope is not None:
            self._disconnect_scope.cancel()

    async def _send_file(self, path: str) -> None:
        # Opening, stat-ing, a 64 KiB read and sendfile run on the event loop, as in nginx without
        # its thread pool: from the page cache they take microseconds. A cold cache on a slow
        # disk (or NFS) stalls the loop for the read's duration; only non-socket streams (TLS)
        # read large files in a worker thread.
        # O_NONBLOCK: a FIFO handed over by mistake must not block the event loop at open().
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RuntimeError(f"http.response.pathsend needs a regular file: {path!r}")
            size = info.st_size
            assert self._head is not None
            extra = None
            if not any(name.lower() == b"content-length" for name, _ in self._head[1]):
                extra = [(b"content-length", b"%d" % size)]
            head = self._head_bytes(extra)
            proto = self._proto
            if proto.discards_body:
                out = head + proto.send_end()
                self._head_written = True
                await self._write(out)
            elif size <= INLINE_FILE_SIZE:
                data = os.pread(fd, size, 0)
                out = head + proto.send_data(data) + proto.send_end()
                self._head_written = True
                await self._write(out)
            else:
                self._head_written = True
                await self._write(head)
                for piece in proto.send_data_passthrough(_FileRange(fd, 0, size)):
                    if isinstance(piece, _FileRange):
                        await self._send_file_range(piece)
                    elif piece:
                        await self._write(piece)  # type: ignore[arg-type]
                end = proto.send_end()
                if end:
                    await self._write(end)
            self._bytes_sent += 0 if proto.discards_body else size
        finally:
            os.close(fd)
        self._finish_response()

    async def _send_file_range(self, piece: _FileRange) -> None:
        if self._socket is None:
            await self._copy_file_range(piece)
            return
        sock = self._socket
        out_fd = sock.fileno()
        offset, remaining = piece.offset, piece.count
        with trio.CancelScope() as stall:
            while remaining:
                # A stall timeout: each bit of progress buys another write_timeout.
                stall.deadline = trio.current_time() + self._config.write_timeout
                try:
                    sent = os.sendfile(out_fd, piece.fd, offset, remaining)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except (BrokenPipeError, ConnectionResetError) as exc:
                    self._disconnected = True
                    raise ClientDisconnected("the client disconnected") from exc
                if sent == 0:
                    raise RuntimeError("file is shorter than its declared length")
                offset += sent
                remaining -= sent
                await trio.lowlevel.checkpoint()
        if stall.cancelled_caught:
            self._disconnected = True
            raise ClientDisconnected("write timed out: the client stopped reading")

    async def _copy_file_range(self, piece: _FileRange) -> None:
        offset, end = piece.offset, piece.offset + piece.count
        while offset < end:
            size = min(READ_SIZE, end - offset)
            chunk = await trio.to_thread.run_sync(os.pread, piece.fd, size, offset)
            if not chunk:
                raise RuntimeError("file is shorter than its declared length")
            await self._write(chunk)
            offset += len(chunk)

    # -- writing and closing -----------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd >= 0:
            # Fast path: the socket's send buffer almost always has room for the whole response.
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._disconnected = True
                self._cancel_app()
                raise ClientDisconnected("the client disconnected") from exc
            if sent == len(data):
                return
            data = data[sent:]
        with trio.move_on_after(self._config.write_timeout) as writing:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._disconnected = True
                raise ClientDisconnected("the client disconnected") from exc
        if writing.cancelled_caught:
            self._disconnected = True
            raise ClientDisconnected("write timed out: the client stopped reading")

    async def _write_error(self, status: int, reason: str) -> None:
        if self._head_written or self._disconnected:
            return
        proto = self._proto
        proto.closing = True
        self._status = status
        config = self._config
        data = error_response(
            status,
            reason,
            head_only=proto.head_request,
            date=config.date_header,
            server=None if config.server_header is None else config.server_header.encode(),
        )
        self._head_written = True
        if status >= 500 or status == 408:
            error_log.debug("Answering %d to %s: %s", status, self._peer(), reason)
        if self._state.access_log:
            request = proto.request
            line = (
                "-" if request is None else f"{request.method.decode()} {request.target.decode()}"
            )
            access_log.info('%s - "%s" %d %d', self._peer(), line, status, len(data))
        with contextlib.suppress(ClientDisconnected):
            await self._write(data)

    async def _drain_body(self) -> bool:
        """Read and discard what is left of a request body the app did not read.

        Returns:
            Whether the body was drained (so the connection can be kept alive).
        """
        proto = self._proto
        budget = DRAIN_BYTES
        try:
            # Usually the rest (often just the end of a GET) is already here: no waiting.
            while not proto.request_complete:
                event = proto.next_event()
                if type(event) is h11.Data:
                    budget -= len(event.data)
                    if budget < 0:
                        return False
                elif event is h11.NEED_DATA:
                    break
                elif type(event) is not h11.EndOfMessage:
                    return False
            else:
                return True
            with trio.move_on_after(self._config.body_timeout):
                while budget >= 0 and not proto.request_complete:
                    event = proto.next_event()
                    if type(event) is h11.Data:
                        budget -= len(event.data)
                    elif event is h11.NEED_DATA:
                        data = await self._recv()
                        if not data:
                            break
                        proto.receive_data(data)
                    elif type(event) is not h11.EndOfMessage:
                        break
        except (HTTPError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return budget >= 0 and proto.request_complete

    async def _close(self) -> None:
        stream = self._stream
        proto = self._proto
        # Linger only to protect a response we wrote from a reset caused by unread input.
        linger = (
            self._head_written
            and not self._disconnected
            and (not proto.request_complete or proto.has_buffered_data)
        )
        # Shielded, so that a cancelled connection still closes properly, and bounded.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + LINGER_SECONDS):
            try:
                if linger and isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                    budget = LINGER_BYTES
                    while budget > 0:
                        data = await stream.receive_some(READ_SIZE)
                        if not data:
                            break
                        budget -= len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # The client is gone already: nothing left to be polite to.
            finally:
                await stream.aclose()

    def _peer(self) -> str:
        return format_address(self._client)


class _FileRange:
    """A byte range of an open file, standing in for body bytes so h11 can frame it."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count


def _origin_form(target: bytes) -> bytes:
    """The path-and-query part of an absolute-form (or asterisk-form) request target."""
    if target == b"*":
        return target
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise HTTPError(400, "Malformed request target.")
    for index, char in enumerate(rest):
        if char in b"/?":
            rest = rest[index:]
            break
    else:
        return b"/"
    return rest if rest[:1] == b"/" else b"/" + rest


def format_address(address: tuple[str, int] | str | None) -> str:
    """``host:port`` (brackets around IPv6 hosts), ``unix:PATH``, or ``-`` when unknown."""
    if address is None:
        return "-"
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _what(scope: Scope) -> tuple[str, str]:
    return scope["method"], scope["path"]


def _out_of_order(message_type: str, started: bool) -> str:
    if message_type == "http.response.start":
        return "ASGI app sent 'http.response.start' twice"
    if not started:
        return f"ASGI app sent {message_type!r} before 'http.response.start'"
    return f"ASGI app sent {message_type!r} after the response was complete"
