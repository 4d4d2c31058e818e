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

import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ._config import Config
from ._connection import ASGIApp, HTTPConnection, ServerState
from ._listeners import accept_loop, open_listeners

__all__ = ["Server", "serve"]

error_log = logging.getLogger("trioserve.error")

Address = tuple[str, int]


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

    Raises:
        OSError: a listener could not be opened (for example, the address is in use).
    """
    server = Server(app, config or Config())
    await server.serve(shutdown_trigger=shutdown_trigger, task_status=task_status)


class Server:
    """One server: the listeners, their connections, and their shutdown."""

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.config = config
        self.state = ServerState(app, config)
        self._slots = trio.Semaphore(config.max_connections)
        self._accept_scopes: list[trio.CancelScope] = []
        self._connection_scopes: list[trio.CancelScope] = []
        self._core_scope: trio.CancelScope | None = None
        self._shutting_down = False

    async def serve(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
        task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
        listeners: Sequence[socket.socket] | None = None,
    ) -> None:
        """Run until ``shutdown_trigger()`` returns or this task is cancelled; see :func:`serve`.

        Args:
            shutdown_trigger: As for :func:`serve`.
            task_status: As for :func:`serve`.
            listeners: Listeners opened beforehand (by :func:`open_listeners`); by default they
                are opened from the config.
        """
        if listeners is None:
            # Opened outside any nursery, so that failing to bind raises a plain OSError.
            listeners = open_listeners(self.config)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(self._run_core, listeners)
            task_status.started(addresses)
            try:
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
            finally:
                self.begin_shutdown()

    async def _run_core(
        self,
        listeners: Sequence[socket.socket],
        task_status: trio.TaskStatus[list[Address]],
    ) -> None:
        addresses = [_address(listener.getsockname()) for listener in listeners]
        with trio.CancelScope(shield=True) as core:
            self._core_scope = core
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    await nursery.start(self._serve_listener, listener)
                task_status.started(addresses)

    async def _serve_listener(
        self, listener: socket.socket, *, task_status: trio.TaskStatus[None]
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
                        spawn=functools.partial(self._spawn_connection, connections),
                    )
                # Stop listening at once; the connections nursery goes on draining.
                listener.close()
        finally:
            listener.close()

    def _spawn_connection(self, nursery: trio.Nursery, client: socket.socket, peer: object) -> None:
        """Start the task of a newly accepted connection (called by the accept loop)."""
        try:
            server = _address(client.getsockname())
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
        except OSError:
            # The client is gone already (reset before we looked).
            client.close()
            self._slots.release()
            return
        connection = HTTPConnection(
            stream,
            self.state,
            client=_address(peer),
            server=server,
            on_close=self._slots.release,
        )
        # HTTPConnection.run handles every exception of its own: nothing reaches the nursery.
        nursery.start_soon(connection.run)

    def begin_shutdown(self) -> None:
        """Start a graceful shutdown (idempotent); see :func:`serve`."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self.state.draining = True
        for scope in self._accept_scopes:
            scope.cancel()
        for connection in list(self.state.connections):
            connection.stop_idle()
        deadline = trio.current_time() + self.config.graceful_timeout
        for scope in self._connection_scopes:
            scope.deadline = min(scope.deadline, deadline)

    def force_stop(self) -> None:
        """Cancel everything now, in-flight requests included."""
        self.begin_shutdown()
        if self._core_scope is not None:
            self._core_scope.cancel()

    @property
    def open_connections(self) -> int:
        """How many connections are open."""
        return len(self.state.connections)


def _address(sockname: object) -> Address:
    if isinstance(sockname, tuple):
        return (str(sockname[0]), int(sockname[1]))
    raise TypeError(f"not an internet socket address: {sockname!r}")  # pragma: no cover


def format_url(address: Address, scheme: str = "http") -> str:
    """``http://host:port`` for an address, with brackets around IPv6 hosts."""
    host, port = address
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
