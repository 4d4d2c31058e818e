"""Listening sockets, and the accept loop that feeds connections to the server.

The accept loop is our own rather than ``trio.serve_listeners`` for one reason: trio's loop
accepts one connection per scheduling round (each ``accept()`` ends with a checkpoint), so under
load a burst of new clients is accepted at the pace of the busy connections' rounds and waits
there for hundreds of milliseconds. This loop accepts every queued connection it has a slot for
each time the socket is readable, like asyncio's and nginx's, and keeps trio's policy of backing
off for 100 ms when the process runs out of file descriptors or memory.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import Final

import trio

from ._config import Config

__all__ = ["accept_loop", "open_listeners"]

error_log = logging.getLogger("trioserve.error")

# accept() failures that mean "out of a resource, try again soon" (as in trio.serve_listeners).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_BACKOFF: Final = 0.1
# accept() failures that concern only the client that was being accepted (it gave up).
_CLIENT_GONE_ERRNOS: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
# Connections accepted in a row before giving other tasks a turn.
_ACCEPT_BATCH: Final = 64


def open_listeners(config: Config) -> list[socket.socket]:
    """Bind and listen on ``config.host`` and ``config.port`` (every address the host names).

    With ``config.uds``, one unix domain socket at that path instead (a stale socket file left
    there is replaced; any other file is an error).

    Raises:
        OSError: an address cannot be bound (in use, not available, permission denied).
    """
    if config.uds is not None:
        return [_open_unix_listener(config.uds, config.backlog)]
    infos = socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[socket.socket] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One listener per address family, as trio does: no v4-mapped surprises.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(config.backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def _open_unix_listener(path: str, backlog: int) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        os.unlink(path)  # a stale socket from an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def close_listener(sock: socket.socket) -> None:
    """Close a listener (idempotent); a unix socket's file is removed too."""
    if sock.fileno() == -1:
        return
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if isinstance(path, str) and path:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def accept_loop(
    sock: socket.socket,
    slots: trio.Semaphore,
    *,
    spawn: Callable[[socket.socket, object], None],
) -> None:
    """Accept connections forever and hand each to ``spawn(client, address)``.

    ``spawn`` starts the connection's task and must not block. A connection takes one of
    ``slots`` before it is accepted; its task must release it.
    While no slot is free, clients wait in the kernel's backlog (backpressure at accept).
    """
    batch = 0
    while True:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await slots.acquire()
            batch = 0
        if sock.fileno() == -1:
            slots.release()
            return  # closed (Server.refuse_connections)
        try:
            client, address = sock.accept()
        except BlockingIOError:
            slots.release()
            batch = 0
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return  # the listener was closed under us (Server.refuse_connections)
            continue
        except OSError as exc:
            slots.release()
            if exc.errno in _CLIENT_GONE_ERRNOS:
                continue
            if exc.errno in _CAPACITY_ERRNOS:
                error_log.error(
                    "accept() failed (%s); pausing %g s",
                    errno.errorcode[exc.errno],
                    _CAPACITY_BACKOFF,
                )
                await trio.sleep(_CAPACITY_BACKOFF)
                continue
            raise
        spawn(client, address)
        batch += 1
        if batch >= _ACCEPT_BATCH:
            batch = 0
            await trio.lowlevel.checkpoint()
