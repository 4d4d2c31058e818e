"""One ASGI HTTP request cycle, whatever wire protocol carries it.

Theory of operation
-------------------
A :class:`RequestCycle` is made for each request and runs the app once: it is the ASGI side of
the request (``receive``, ``send``, ``http.response.pathsend``, ``http.disconnect``,
cancel-on-disconnect, the ``trioserve.fault`` extension, the 500-or-close decision, the access
record) and knows nothing of any wire format. It talks to the wire through an :class:`Exchange`,
which the HTTP/1.1 connection implements for its current request (in the connection's own task:
no per-request spawn), and which an HTTP/2 stream implements for its stream.

The response goes through the states of :class:`ResponseState`. A response that announces
trailers (``"trailers": True`` in ``http.response.start``, the ``http.response.trailers``
extension) waits in ``TRAILERS`` after its last body message: its end goes out with the
trailer fields (:meth:`Exchange.send_trailers`, which drops them where the client cannot take
them). The head is held back from
``http.response.start`` until the first body message, so that an exchange can put the head and a
small body in one write and can give a one-message body a Content-Length.

``receive()`` reads the body only when the app asks (backpressure); once the body is complete it
waits for the client to go away, which it reports as ``http.disconnect``. Only one task at a time
waits on the exchange for that; others (the app's, the cancel-on-disconnect watcher) wait for its
verdict. ``send()`` raises :class:`ClientDisconnected` (an ``OSError``, as ASGI HTTP spec 2.4
promises) once the client is gone.

A request the wire protocol refuses while the app reads its body (too large, too slow,
malformed) raises :class:`RequestRefused` from :meth:`Exchange.receive_body`: the app sees the
client go, and once it returns, :meth:`RequestCycle.run` raises the refusal for the connection to
answer. An app that fails (or returns) before starting its response gets a 500 the same way; one
that fails halfway through leaves a response the connection must cut off (``complete`` is false).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Final

import trio

from .._config import Config
from .._errors import ClientDisconnected, RequestRefused, ResponseError, only_disconnects
from .._metrics import current_metrics
from .._types import ASGIApp, Message, Scope
from ._access import ASYNCIO_HINT, log_access, needs_asyncio
from ._exchange import Body, Exchange
from ._response_state import (
    ABORTED,
    DONE,
    HEAD_NOT_WRITTEN,
    STARTED,
    STREAMING,
    TRAILERS,
    UNFINISHED,
    WAITING,
    ResponseState,
    out_of_order,
)
from ._scope import format_address

__all__ = ["RequestCycle", "ResponseState"]

error_log = logging.getLogger("trioserve.error")

# current_metrics.get, bound once (docs/architecture.md, "What the pure-Python hot path avoids").
_current_metrics: Final = current_metrics.get

_DISCONNECT: Final = {"type": "http.disconnect"}
_NO_HEADERS: Final[Sequence[tuple[bytes, bytes]]] = ()


class RequestCycle:
    """One ASGI HTTP request: the app's ``receive`` and ``send`` over an :class:`Exchange`.

    Args:
        exchange: The wire side of this request.
        scope: The request's ``http`` scope.
        config: The server's settings.
        target: The raw request target (for the access log).
        bodyless: The request has no body at all (it ended with its head).
    """

    __slots__ = (
        "_app_scope",
        "_body_done",
        "_body_event",
        "_bodyless",
        "_config",
        "_disconnect_scope",
        "_exchange",
        "_gone",
        "_headers",
        "_target",
        "_trailer_fields",
        "_trailers",
        "_wire_ended",
        "bytes_sent",
        "disconnected",
        "refusal",
        "scope",
        "state",
        "status",
    )

    def __init__(
        self,
        exchange: Exchange,
        scope: Scope,
        config: Config,
        target: bytes,
        *,
        bodyless: bool = False,
    ) -> None:
        self._exchange = exchange
        self._bodyless = bodyless
        self._config = config
        self._target = target
        self.scope = scope
        self.state = WAITING
        #: The response status (499 when the client left before any response).
        self.status = 0
        self._headers: Sequence[tuple[bytes, bytes]] = _NO_HEADERS
        #: Body bytes that went out.
        self.bytes_sent = 0
        #: Whether the client has gone.
        self.disconnected = False
        #: A refusal found while the app read the body, answered once the app returns.
        self.refusal: RequestRefused | None = None
        self._body_done = False
        # Trailers announced; the fields received so far; whether the response has ended on
        # the wire all the same (a file body).
        self._trailers = False
        self._trailer_fields: list[tuple[bytes, bytes]] | None = None  # made when they come
        self._wire_ended = False
        self._body_event: trio.Event | None = None
        self._app_scope: trio.CancelScope | None = None
        self._disconnect_scope: trio.CancelScope | None = None
        self._gone: trio.Event | None = None

    @property
    def complete(self) -> bool:
        """Whether the response went out whole (else the connection must not be reused)."""
        return self.state is DONE and not self.disconnected

    # -- running the app ---------------------------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        """Run ``app`` for this request; write the access record (and count it in metrics).

        One coroutine for the whole cycle (metrics included): every await of the request
        resumes through each frame of the stack, so a wrapper frame costs on every request.

        Raises:
            RequestRefused: the server must answer with this error (a refused body, or a 500
                for an app that failed or returned before starting its response).
        """
        metrics = _current_metrics()
        timed = metrics is not None or self._config.access_log
        started = time.perf_counter() if timed else 0.0
        if metrics is not None:
            metrics.in_flight += 1
        refused = 0
        try:
            failed = False
            try:
                if self._config.cancel_on_disconnect:
                    await self._run_cancellable(app)
                else:
                    await app(self.scope, self.receive, self.send)
            except Exception as exc:
                failed = self._app_failed(exc)
            if self.state is not DONE:
                self._unfinished(failed)
        except RequestRefused as exc:
            refused = exc.status  # the server answers for the app
            raise
        finally:
            if metrics is not None:
                metrics.in_flight -= 1
                status = refused or self.status
                if status:  # else cancelled (shutdown) before any response: nothing answered
                    duration = time.perf_counter() - started
                    metrics.record(self.scope, status, self.bytes_sent, duration)
        if self._config.access_log:
            self._log(started)

    def _app_failed(self, exc: Exception) -> bool:
        """Log what the app raised; whether it failed (a client that left is no failure)."""
        if only_disconnects(exc):
            # send() said the client had gone and the app let that propagate (possibly out of a
            # task group): the ordinary end of a request whose client left.
            error_log.debug("Client %s left during %s %s", self._peer(), *_what(self.scope))
            return False
        if self.refusal is None:
            error_log.exception(
                "Exception in ASGI application (%s %s from %s)", *_what(self.scope), self._peer()
            )
            if not self._config.asyncio_app and needs_asyncio(exc):
                error_log.warning(ASYNCIO_HINT)
        return True

    def _unfinished(self, failed: bool) -> None:
        """The app returned before its response was done: raise the answer the server owes,
        note a client that left (499), or log a truncated response."""
        if self.state in HEAD_NOT_WRITTEN:
            if self.disconnected and self.refusal is None:
                # Nobody to answer; logged like nginx's 499 "client closed request".
                self.status = 499
                return
            if self.refusal is not None:
                raise self.refusal
            if not failed:
                error_log.error(
                    "ASGI application returned without completing a response (%s %s)",
                    *_what(self.scope),
                )
            raise RequestRefused(500, "Internal Server Error")
        if self.state in UNFINISHED and not failed and not self.disconnected:
            # Started but unfinished (a body, or its trailers): the client must not take a
            # truncated response for a whole one.
            error_log.error(
                "ASGI application returned before finishing its response (%s %s)",
                *_what(self.scope),
            )

    async def _run_cancellable(self, app: ASGIApp) -> None:
        """Run the app in a cancel scope that a disconnect of its client cancels.

        A watcher task waits for the client to go once the request body is in (while the body
        is being read, receive() itself notices); send() failing does the same. Only this
        opt-in mode pays for the extra task.
        """
        self._body_event = trio.Event()
        if self._body_done or self._bodyless:
            self._body_event.set()
        try:
            async with trio.open_nursery() as nursery:
                self._app_scope = nursery.cancel_scope
                nursery.start_soon(self._watch_for_disconnect)
                await app(self.scope, self.receive, self.send)
                nursery.cancel_scope.cancel()
        finally:
            self._app_scope = None
            self._body_event = None
        if self.disconnected and self.state is not DONE:
            error_log.debug("Cancelled %s %s: the client disconnected", *_what(self.scope))

    def _log(self, started: float) -> None:
        log_access(
            self._config,
            self.scope,
            self._target,
            self.status,
            self.bytes_sent,
            time.perf_counter() - started,
            self._headers,
        )

    # -- ASGI receive ------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The app's ``receive()``."""
        if self._body_done or self.disconnected or self.refusal is not None:
            # Loop: a wait can end without a verdict (another task's read was cancelled).
            while not (self.disconnected or self.state is DONE or self.refusal is not None):
                await self._wait_for_disconnect()
            return _DISCONNECT
        try:
            got = await self._exchange.receive_body()
        except RequestRefused as exc:
            # The request is refused (body too large, malformed, too slow): the app sees the
            # client go, and the server answers with the error once the app has returned.
            self.refusal = exc
            return _DISCONNECT
        if got is None:
            self._client_gone()
            return _DISCONNECT
        body, more_body = got
        if not more_body:
            self._body_done = True
            if self._body_event is not None:
                self._body_event.set()
        return {"type": "http.request", "body": body, "more_body": more_body}

    async def _wait_for_disconnect(self) -> None:
        """Block until the client closes or the response is complete (one waiter on the wire)."""
        if self._disconnect_scope is not None:
            if self._gone is None:
                self._gone = trio.Event()
            await self._gone.wait()
            return
        with trio.CancelScope() as scope:
            self._disconnect_scope = scope
            try:
                await self._exchange.wait_disconnected()
                self.disconnected = True
            finally:
                self._disconnect_scope = None
                if self._gone is not None:
                    self._gone.set()
                    self._gone = None
        if self.disconnected:
            self._cancel_app()

    async def _watch_for_disconnect(self) -> None:
        """cancel_on_disconnect: wait for the client to go (where needed, once the body is in)."""
        if not self._body_done and not self._exchange.sees_disconnect_before_body:
            assert self._body_event is not None
            await self._body_event.wait()
        while not (self.disconnected or self.state is DONE):
            await self._wait_for_disconnect()

    def _client_gone(self) -> None:
        self.disconnected = True
        self._cancel_app()

    def _cancel_app(self) -> None:
        """With cancel_on_disconnect, cancel the app's task (its client is gone)."""
        if self._app_scope is not None:
            self._app_scope.cancel()

    # -- ASGI send ---------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """The app's ``send()``."""
        if self.disconnected or self.refusal is not None:
            raise ClientDisconnected("the client disconnected")
        message_type = message["type"]
        state = self.state
        if message_type == "http.response.body":
            if state is not STARTED and state is not STREAMING:
                raise RuntimeError(out_of_order(message_type, state))
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = _buffer(body)
            end = not message.get("more_body", False)
            # With trailers to come, the body's end goes out with them.
            wire_end = end and not self._trailers
            try:
                if state is STARTED:
                    sent = await self._exchange.send_response(
                        self.status, self._headers, body, end=wire_end
                    )
                else:
                    sent = await self._exchange.send_body(body, end=wire_end)
            except ClientDisconnected:
                # The state stays as it was: a client gone before the head went out is a 499.
                self._client_gone()
                raise
            self.bytes_sent += sent
            if wire_end and self._disconnect_scope is None:
                self.state = DONE  # the common case of _finish(), inlined
            else:
                self._finish(end)
        elif message_type == "http.response.start":
            if state is not WAITING:
                raise RuntimeError(out_of_order(message_type, state))
            status = message["status"]
            if type(status) is not int:
                # Said here, the same in either build (compiled, the attribute below would
                # refuse it with a bare TypeError); its range is the wire protocol's to check.
                raise ResponseError(f"invalid status for a final response: {status!r}")
            self.state = STARTED
            self.status = status
            self._headers = message.get("headers", _NO_HEADERS)
            self._trailers = bool(message.get("trailers", False))
        elif message_type == "http.response.pathsend":
            if state is not STARTED:
                raise RuntimeError(out_of_order(message_type, state))
            try:
                self.bytes_sent += await self._exchange.send_file(
                    self.status, self._headers, _file_path(message["path"])
                )
            except ClientDisconnected:
                self._client_gone()
                raise
            self._wire_ended = True  # a file body ends with the file: its trailers are dropped
            self._finish(True)
        elif message_type == "http.response.trailers":
            if state is not TRAILERS:
                raise RuntimeError(out_of_order(message_type, state))
            fields = self._trailer_fields
            if fields is None:
                fields = self._trailer_fields = []
            fields.extend(message.get("headers", _NO_HEADERS))
            if message.get("more_trailers", False):
                return
            if not self._wire_ended:
                try:
                    await self._exchange.send_trailers(fields)
                except ClientDisconnected:
                    self._client_gone()
                    raise
            self._finish(True, trailers_sent=True)
        elif message_type.startswith("trioserve.fault.") and self._config.fault_injection:
            await self._fault(message)
        else:
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} for an HTTP request")

    def _finish(self, end: bool, *, trailers_sent: bool = False) -> None:
        if not end:
            self.state = STREAMING
            return
        if self._trailers and not trailers_sent:
            self.state = TRAILERS
            return
        self.state = DONE
        if self._disconnect_scope is not None:
            self._disconnect_scope.cancel()

    async def _fault(self, message: Message) -> None:
        """The ``trioserve.fault`` extension: misbehave on purpose, for test servers.

        ``trioserve.fault.raw`` writes bytes as they are (no framing: the app owns the wire for
        this response, and the connection closes after it); ``trioserve.fault.close`` closes the
        connection at once, with a TCP reset when ``reset`` is true.
        """
        if message["type"] == "trioserve.fault.raw":
            self.state = ABORTED
            await self._exchange.send_raw(bytes(message.get("data", b"")))
        elif message["type"] == "trioserve.fault.close":
            self.state = ABORTED
            self.disconnected = True
            await self._exchange.abort(reset=bool(message.get("reset")))
        else:
            raise RuntimeError(f"Unknown trioserve.fault message {message['type']!r}")

    def _peer(self) -> str:
        return format_address(self.scope.get("client"))


def _buffer(body: Any) -> Body:
    """An app's body that is not ``bytes``: a bytearray, or a flat memoryview of bytes, as it is
    (each exchange takes what it can without a copy); any other buffer as its bytes (a view of
    ints would count items, not bytes).

    Raises:
        ResponseError: not a buffer (``bytes(3)`` would have sent three NULs).
    """
    if isinstance(body, bytearray):
        return body
    try:
        view = body if isinstance(body, memoryview) else memoryview(body)
    except TypeError:
        raise ResponseError(
            f"'http.response.body' needs a bytes-like body, not {type(body).__name__}"
        ) from None
    if view.itemsize == 1 and view.ndim == 1 and view.c_contiguous:
        return view
    return view.tobytes()


def _file_path(path: object) -> str:
    """The ``path`` of ``http.response.pathsend``: a string (ASGI), or a path-like object.

    Raises:
        ResponseError: anything else.
    """
    if type(path) is not str:
        path = os.fspath(path) if isinstance(path, os.PathLike) else path
        if not isinstance(path, str):
            raise ResponseError(f"'http.response.pathsend' needs a str path, not {path!r}")
    return path


def _what(scope: Scope) -> tuple[str, str]:
    return scope["method"], scope["path"]
