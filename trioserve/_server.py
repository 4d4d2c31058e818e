"""``serve()``: listeners, one nursery per listener, one task per connection, and shutdown.

Theory of operation
-------------------
:func:`serve` opens the listeners, then runs the server *core* in a task whose cancel scope is
shielded, and itself waits for the shutdown trigger (or for its own cancellation). Either one
starts a graceful shutdown, in bounded phases:

1. stop accepting: every listener's accept loop is cancelled and the listener closed at once;
2. close idle keep-alive connections at once; busy ones answer their current request with
   ``Connection: close`` and then close;
3. give in-flight requests ``graceful_timeout`` seconds, then cancel what is left;
4. return (re-raising the cancellation if that is what started the shutdown).

The shield is what lets in-flight requests finish when the caller cancels the scope around
``serve()``; the deadline in phase 3 is what keeps that bounded. :meth:`Server.force_stop` skips
to the end (the CLI's second Ctrl-C).

Each listener gets its own nursery for its connections, and each connection runs in its own task
(:class:`~trioserve._connection.HTTPConnection`), which handles every exception of its own:
one bad client or one failing request never reaches the listener's nursery.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import trio

from ._accept import Acceptor, connection_protocol
from ._aio import AsyncioApp, asyncio_loop
from ._asgi import as_asgi, is_wsgi
from ._config import Config
from ._errors import ConfigError
from ._eviction import Evictor
from ._http._state import ServerState
from ._lifespan import Lifespan, LifespanFailure
from ._listeners import ACCEPT_BATCH, accept_loop, close_listener, open_listeners
from ._metrics import Metrics, MetricsApp, current_metrics
from ._tls import (
    DevCertificate,
    TLSConfig,
    build_context,
    default_state_dir,
    dev_certificate,
    dev_hosts,
)
from ._types import ASGIApp

__all__ = ["Server", "serve"]

error_log = logging.getLogger("trioserve.error")
tls_log = logging.getLogger("trioserve.error.tls")

# The first byte of a TLS record carrying a handshake (RFC 8446 section 5.1).
_TLS_HANDSHAKE_RECORD = 0x16

#: A bound address: ``(host, port)``, or a unix socket's path.
Address = tuple[str, int] | str


async def serve(
    app: ASGIApp,
    config: Config | None = None,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` over HTTP/1.1 until shut down.

    Use it with ``nursery.start`` to learn the bound addresses (so ``port=0`` works)::

        addresses = await nursery.start(trioserve.serve, app, trioserve.Config(port=0))

    The server shuts down gracefully when ``shutdown_trigger()`` returns or when the scope around
    ``serve`` is cancelled: it stops accepting at once, closes idle connections, lets in-flight
    requests finish for up to ``config.graceful_timeout`` seconds, then cancels the rest.

    Args:
        app: An ASGI 3 application.
        config: Settings; ``Config()`` when omitted.
        shutdown_trigger: An async callable; the server shuts down when it returns.
        task_status: Set by ``nursery.start``; receives the list of bound ``(host, port)``.

    The app's lifespan startup (when it supports lifespan) completes before any listener is
    opened; its shutdown runs after the last connection has closed.

    Raises:
        OSError: a listener could not be opened (for example, the address is in use).
        LifespanFailure: the app's lifespan startup failed or timed out.
    """
    server = Server(app, config or Config())
    await server.serve(shutdown_trigger=shutdown_trigger, task_status=task_status)


class Server:
    """One server: its listeners, their connections, TLS, and shutdown.

    :func:`serve` is ``Server(app, config).serve(...)``; keep the object to control a running
    server::

        server = trioserve.Server(app, config)
        addresses = await nursery.start(server.serve)
        ...
        server.reload_tls()        # new certificate for new connections (what SIGHUP does)
        server.begin_shutdown()    # graceful, bounded; serve() returns when it is done
    """

    def __init__(self, app: ASGIApp, config: Config) -> None:
        """Prepare a server; builds the TLS context, so certificate problems raise here.

        Raises:
            ConfigError: a TLS certificate or key cannot be used (the message names the file).
        """
        self.config = config
        # A WSGI app (config.interface says so, or tells it from the callable) gets its adapter;
        # an ASGI app (or one adapted already) is served as it is.
        if config.interface == "wsgi" or (config.interface == "auto" and is_wsgi(app)):
            app = as_asgi(app, interface="wsgi", wsgi_threads=config.wsgi_threads)
        if config.asyncio_app:
            app = AsyncioApp(app)
        self.state = ServerState(app, config)
        if config.max_requests is not None:
            self.state.request_limit = config.max_requests + random.randint(
                0, config.max_requests_jitter
            )
            self.state.on_request_limit = self._request_limit_reached
        self._lifespan = Lifespan(
            app,
            config.lifespan,
            self.state.lifespan_state,
            startup_timeout=config.lifespan_startup_timeout,
            shutdown_timeout=config.lifespan_shutdown_timeout,
        )
        #: The development certificate in use, when TLS runs without certificate files.
        self.dev_certificate: DevCertificate | None = None
        self._ssl_context: ssl.SSLContext | None = None
        if config.tls is not None:
            self._ssl_context = self._build_ssl_context(config.tls)
        if config.metrics_bind is not None:
            self.state.metrics = Metrics(self.state, connection_protocol)
        #: Where metrics are served, once serving (``--metrics-bind``).
        self.metrics_bound: Address | None = None
        self._slots = trio.Semaphore(config.max_connections)
        self._acceptor = Acceptor(self.state, self._slots.release)
        self._acceptor.ssl_context = self._ssl_context
        self._evictor = Evictor(
            self.state.connections,
            self.state.evictions,
            min_head_rate=config.min_head_rate,
            min_head_rate_after=config.min_head_rate_after,
        )
        self._accept_scopes: list[trio.CancelScope] = []
        self._connection_scopes: list[trio.CancelScope] = []
        self._core_scope: trio.CancelScope | None = None
        self._shutting_down = False
        self._stop_requested = trio.Event()
        self._listeners: list[socket.socket] = []
        self._owns_listeners = True
        #: Connections accepted per wake-up (smaller when processes share the listeners).
        self.accept_batch = ACCEPT_BATCH
        #: ``(address, scheme)`` of every listener, once serving.
        self.bound: list[tuple[Address, str]] = []

    async def serve(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
        listeners: Sequence[tuple[socket.socket, bool]] | None = None,
    ) -> None:
        """Run until ``shutdown_trigger()`` returns or this task is cancelled; see :func:`serve`.

        Args:
            shutdown_trigger: As for :func:`serve`.
            task_status: As for :func:`serve`.
            listeners: ``(socket, speaks TLS)`` pairs opened beforehand; by default they are
                opened from the config.
        """
        if self.config.asyncio_app:
            async with asyncio_loop():
                await self._serve(shutdown_trigger, task_status, listeners)
        else:
            await self._serve(shutdown_trigger, task_status, listeners)

    async def _serve(
        self,
        shutdown_trigger: Callable[[], Awaitable[Any]] | None,
        task_status: trio.TaskStatus[list[Address]],
        listeners: Sequence[tuple[socket.socket, bool]] | None,
    ) -> None:
        failure: BaseException | None = None
        lifespan = self._lifespan
        async with trio.open_nursery() as lifespan_nursery:
            try:
                # Startup first, listeners after: an app that fails to start never has a port
                # accepting connections.
                await lifespan.startup(lifespan_nursery)
            except BaseException as exc:
                # The lifespan task is shielded: end it, or this nursery would wait for it.
                lifespan.close()
                if not isinstance(exc, LifespanFailure):
                    raise
                failure = exc  # raised below, outside the nursery, unwrapped
            else:
                try:
                    # Listeners handed in (a supervisor's, inherited) belong to someone else:
                    # closing them must not remove a unix socket file others still serve.
                    self._owns_listeners = listeners is None
                    if listeners is None:
                        listeners = open_listeners(self.config)
                except OSError as exc:
                    failure = exc
                    with trio.CancelScope(shield=True):
                        await lifespan.shutdown()  # startup succeeded: the app gets its shutdown
                    lifespan.close()
            if failure is None:
                assert listeners is not None
                try:
                    async with trio.open_nursery() as nursery:
                        addresses = await nursery.start(self._run_core, listeners)
                        task_status.started(addresses)
                        try:
                            async with trio.open_nursery() as waiting:
                                if shutdown_trigger is not None:
                                    waiting.start_soon(self._wait_for_trigger, shutdown_trigger)
                                # Set by begin_shutdown(), whoever calls it.
                                await self._stop_requested.wait()
                                waiting.cancel_scope.cancel()
                        finally:
                            self.begin_shutdown()
                finally:
                    # After the last connection; shielded, so that it also runs when the
                    # shutdown was a cancellation, and bounded by its own timeout.
                    with trio.CancelScope(shield=True):
                        await lifespan.shutdown()
                    lifespan.close()
        if failure is not None:
            raise failure

    async def _wait_for_trigger(self, shutdown_trigger: Callable[[], Awaitable[Any]]) -> None:
        await shutdown_trigger()
        self.begin_shutdown()

    async def _run_core(
        self,
        listeners: Sequence[tuple[socket.socket, bool]],
        task_status: trio.TaskStatus[list[Address]],
    ) -> None:
        addresses: list[Address] = [_bound(listener) for listener, _ in listeners]
        self._listeners = [listener for listener, _ in listeners]
        self.bound = [
            (address, "https" if secure and self._ssl_context is not None else "http")
            for address, (_, secure) in zip(addresses, listeners, strict=True)
        ]
        https_port = next(
            (
                address[1]
                for address, scheme in self.bound
                if scheme == "https" and not isinstance(address, str)
            ),
            None,
        )
        if self.config.redirect_to_https:
            self._acceptor.redirect_port = https_port
        # Every task this server starts finds its metrics here (the request cycle counts).
        current_metrics.set(self.state.metrics)
        with trio.CancelScope(shield=True) as core:
            self._core_scope = core
            async with self._serving_metrics(), trio.open_nursery() as timing:
                timing.start_soon(self.state.idle_timer.run)
                timing.start_soon(self.state.readiness.run)
                async with trio.open_nursery() as nursery:
                    for listener, secure in listeners:
                        await nursery.start(self._serve_listener, listener, secure)
                    task_status.started(addresses)
                # Every listener and connection is done: no idle wait is left to time or watch.
                timing.cancel_scope.cancel()

    @contextlib.asynccontextmanager
    async def _serving_metrics(self) -> AsyncIterator[None]:
        """With ``metrics_bind``: serve the metrics on their own listener, and on until this
        server's last connection has closed (so the final figures can still be read)."""
        metrics = self.state.metrics
        if metrics is None or self.config.metrics_bind is None:
            yield
            return
        server = Server(
            MetricsApp(metrics.collect, metrics.finished),
            Config(
                binds=(self.config.metrics_bind,),
                access_log=False,
                lifespan="off",
                interface="asgi",
                graceful_timeout=self.config.graceful_timeout,
            ),
        )
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve)
            self.metrics_bound = bound[0]
            where = format_url(self.metrics_bound)
            error_log.log(
                logging.DEBUG if isinstance(self.metrics_bound, str) else logging.INFO,
                "Metrics at %s/metrics",
                where,
            )
            try:
                yield
            finally:
                metrics.finished.set()
                server.begin_shutdown()

    async def _serve_listener(
        self, listener: socket.socket, secure: bool, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            async with trio.open_nursery() as connections:
                self._connection_scopes.append(connections.cancel_scope)
                with trio.CancelScope() as accepting:
                    self._accept_scopes.append(accepting)
                    if self._shutting_down:
                        accepting.cancel()
                    task_status.started()
                    await accept_loop(
                        listener,
                        self._slots,
                        spawn=functools.partial(self._acceptor.spawn, connections, secure),
                        batch_size=self.accept_batch,
                        make_room=self._evictor.make_room,
                    )
                # Stop listening at once; the connections nursery goes on draining.
                close_listener(listener, unlink=self._owns_listeners)
        finally:
            close_listener(listener, unlink=self._owns_listeners)

    def _build_ssl_context(self, tls: TLSConfig) -> ssl.SSLContext:
        dev = None
        if tls.uses_dev_certificate:
            state_dir = tls.state_dir if tls.state_dir is not None else default_state_dir()
            dev = dev_certificate(state_dir, dev_hosts(self.config.host))
        context = build_context(tls, dev=dev, http2=self.config.http2)
        self.dev_certificate = dev
        return context

    def reload_tls(self) -> bool:
        """Rebuild the TLS context from its files; new handshakes use it, open connections go on.

        A context that fails to build is logged and the current one stays.

        Returns:
            Whether a new context is in use.
        """
        tls = self.config.tls
        if tls is None:
            tls_log.warning("TLS reload requested, but this server does not use TLS")
            return False
        if tls.context is not None:
            tls_log.warning("TLS reload requested, but the SSLContext was given ready-made")
            return False
        try:
            self._ssl_context = self._acceptor.ssl_context = self._build_ssl_context(tls)
        except ConfigError as exc:
            tls_log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        tls_log.info("TLS certificate reloaded; new connections use it")
        return True

    def begin_shutdown(self, *, soft: bool = False) -> None:
        """Start a graceful shutdown (idempotent); see :func:`serve`.

        Args:
            soft: Leave idle keep-alive connections open (their next request is answered with
                ``Connection: close``, or they time out) instead of closing them at once: for
                rolling restarts, where a client sending on an idle connection must not see it
                closed. Websockets still get their 1001.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        self._stop_requested.set()
        self.state.soft_drain = soft
        self.state.draining = True
        for scope in self._accept_scopes:
            scope.cancel()
        for connection in list(self.state.connections):
            if soft:
                connection.stop_websocket()
            else:
                connection.stop_idle()
        deadline = trio.current_time() + self.config.graceful_timeout
        for scope in self._connection_scopes:
            scope.deadline = min(scope.deadline, deadline)

    def _request_limit_reached(self) -> None:
        error_log.info("Served %d requests (--max-requests): draining", self.state.requests)
        self.begin_shutdown(soft=True)

    def refuse_connections(self) -> None:
        """Close the listeners now (new clients are refused); open connections carry on.

        Call it from the server's trio thread (``trio.from_thread.run_sync`` from others).
        """
        for scope in self._accept_scopes:
            scope.cancel()
        for listener in self._listeners:
            # Closed here and now, not when the accept loop next runs: a client connecting
            # right after this call is refused, deterministically.
            trio.lowlevel.notify_closing(listener)
            close_listener(listener, unlink=self._owns_listeners)

    def force_stop(self) -> None:
        """Cancel everything now, in-flight requests included."""
        self.begin_shutdown()
        if self._core_scope is not None:
            self._core_scope.cancel()

    @property
    def open_connections(self) -> int:
        """How many connections are open."""
        return len(self.state.connections)


def _bound(listener: socket.socket) -> Address:
    name = listener.getsockname()
    if isinstance(name, str):
        return name
    return (str(name[0]), int(name[1]))


def format_url(address: Address, scheme: str = "http") -> str:
    """``http://host:port`` for an address (brackets around IPv6 hosts); ``unix:PATH`` as is."""
    if isinstance(address, str):
        return f"{scheme}+unix:{address}"
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
