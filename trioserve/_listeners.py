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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "AcceptingSocket",
    "Bind",
    "accept_loop",
    "close_listener",
    "open_listeners",
    "parse_bind",
]

error_log = logging.getLogger("trioserve.error")

# accept() failures that mean "out of a resource, try again soon" (as in trio.serve_listeners).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_BACKOFF: Final = 0.1
# accept() failures that concern only the client that was being accepted (it gave up).
_CLIENT_GONE_ERRNOS: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
# Connections accepted in a row before giving other tasks a turn. Processes sharing one
# listening socket (--workers) take small batches, so that a burst of new connections is spread
# over the workers instead of all landing on whichever woke first.
ACCEPT_BATCH: Final = 64
SHARED_ACCEPT_BATCH: Final = 4


@dataclass(frozen=True, slots=True)
class Bind:
    """Where to listen: ``tcp`` (host, port), ``unix`` (path) or ``fd`` (an inherited socket)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1


def parse_bind(text: str) -> Bind:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``unix:PATH`` or ``fd://N``.

    Raises:
        ValueError: none of those.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"no path in {text!r}")
        return Bind("unix", path=path)
    if text.startswith("fd://"):
        try:
            fd = int(text[len("fd://") :])
        except ValueError:
            raise ValueError(f"not a file descriptor number: {text!r}") from None
        if fd < 0:
            raise ValueError(f"not a file descriptor number: {text!r}")
        return Bind("fd", fd=fd)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N, not {text!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unclosed '[' in {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port_text}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port number in {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return Bind("tcp", host=host, port=port)


def open_listeners(config: Config) -> list[tuple[socket.socket, bool]]:
    """Open every listener ``config`` asks for; each comes with whether it speaks TLS.

    ``config.binds`` (TLS when ``config.tls`` is set) and ``config.insecure_binds`` (always
    plain), or else ``config.host``/``config.port`` (or ``config.uds``). A unix socket path
    holding a stale socket file is reused; any other file there is an error. An inherited
    descriptor must be a listening stream socket.

    Raises:
        OSError: an address cannot be bound, or a descriptor is not a listening socket.
    """
    secure = config.tls is not None
    binds = [(parse_bind(text), secure) for text in config.binds]
    binds += [(parse_bind(text), False) for text in config.insecure_binds]
    if not binds:
        default = (
            Bind("unix", path=config.uds)
            if config.uds is not None
            else Bind("tcp", host=config.host, port=config.port)
        )
        binds = [(default, secure)]
    # "::" is dual-stack unless an IPv4 bind shares its port (the two would collide).
    ipv4_ports = {b.port for b, _ in binds if b.kind == "tcp" and ":" not in b.host and b.port}
    opened: list[tuple[socket.socket, bool]] = []
    try:
        for bind, tls in binds:
            dual = bind.port not in ipv4_ports
            try:
                opened.extend((sock, tls) for sock in _open_bind(bind, config, dual_stack=dual))
            except OSError as exc:
                # Say which bind failed: there may be several.
                raise OSError(exc.errno, f"{_describe(bind)}: {_reason(exc)}") from None
    except BaseException:
        for sock, _ in opened:
            close_listener(sock)
        raise
    return opened


def _describe(bind: Bind) -> str:
    if bind.kind == "unix":
        return f"unix:{bind.path}"
    if bind.kind == "fd":
        return f"fd://{bind.fd}"
    host = f"[{bind.host}]" if ":" in bind.host else bind.host
    return f"{host}:{bind.port}"


def _reason(exc: OSError) -> str:
    reasons = {
        errno.EADDRINUSE: "address already in use",
        errno.EACCES: "permission denied",
        errno.EADDRNOTAVAIL: "address not available on this machine",
    }
    if exc.errno in reasons:
        return reasons[exc.errno]
    text = str(exc.strerror or exc)
    return text[:1].lower() + text[1:]


def _open_bind(bind: Bind, config: Config, *, dual_stack: bool) -> list[socket.socket]:
    if bind.kind == "unix":
        sock = _open_unix_listener(bind.path, config.backlog)
        if config.uds_mode is not None:
            os.chmod(bind.path, config.uds_mode)
        return [sock]
    if bind.kind == "fd":
        return [_inherit(bind.fd)]
    return _open_tcp(bind.host, bind.port, config.backlog, dual_stack=dual_stack)


def _inherit(fd: int) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise OSError(errno.EBADF, "not an open file descriptor") from None
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.ENOTSOCK, "not a socket")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    ):
        sock.detach()
        raise OSError(errno.EINVAL, "not a listening stream socket")
    sock.setblocking(False)
    return sock


# RFC 6761 (6.3): "localhost" names the loopback interface, whatever /etc/hosts lists (often
# only 127.0.0.1): bind both loopbacks, so that clients resolving it to ::1 reach us too.
_LOOPBACKS: Final = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
# Tries at finding one free port on every address of a host, for port 0 (another process may
# take the port picked on the first address before we bind the others).
_SAME_PORT_TRIES: Final = 5


def _tcp_addresses(host: str, port: int) -> list[tuple[int, str]]:
    """The ``(family, address)`` pairs to listen on for ``host``, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    pairs = [(int(family), str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    if host == "localhost":
        pairs += [
            (family, address)
            for family, address in _LOOPBACKS
            if socket.has_ipv6 or family != socket.AF_INET6
        ]
    return list(dict.fromkeys(pairs))


def _open_tcp(host: str, port: int, backlog: int, *, dual_stack: bool) -> list[socket.socket]:
    """Listen on every address ``host`` resolves to, all on the same port.

    ``dual_stack``: the IPv6 wildcard ``::`` accepts IPv4 clients too (IPV6_V6ONLY off, as
    uvicorn does); other IPv6 listeners are IPv6 only, so that no v4-mapped surprise arises.
    """
    pairs = _tcp_addresses(host, port)
    for attempt in range(_SAME_PORT_TRIES):
        listeners: list[socket.socket] = []
        chosen = port
        try:
            for family, address in pairs:
                sock = _bind_tcp(family, address, chosen, dual_stack=dual_stack)
                if sock is None:
                    continue
                listeners.append(sock)
                chosen = int(sock.getsockname()[1])
            for sock in listeners:
                sock.listen(backlog)
                sock.setblocking(False)
        except OSError as exc:
            for sock in listeners:
                sock.close()
            retry = port == 0 and listeners and exc.errno == errno.EADDRINUSE
            if not retry or attempt == _SAME_PORT_TRIES - 1:
                raise
            continue
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
        if not listeners:
            raise OSError(errno.EADDRNOTAVAIL, "address not available on this machine")
        return listeners
    raise AssertionError("unreachable")


def _bind_tcp(family: int, address: str, port: int, *, dual_stack: bool) -> socket.socket | None:
    """A socket bound to ``address``; ``None`` for a loopback this machine lacks (no IPv6)."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if (family, address) in _LOOPBACKS and exc.errno == errno.EAFNOSUPPORT:
            return None
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            v6only = 0 if dual_stack and address == "::" else 1
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if (family, address) in _LOOPBACKS and exc.errno == errno.EADDRNOTAVAIL:
            return None
        raise
    except BaseException:
        sock.close()
        raise
    return sock


# Unix socket files this process created (and so removes when it closes them); sockets
# inherited from a supervisor or systemd are left alone.
_created_paths: set[str] = set()


def _open_unix_listener(path: str, backlog: int) -> socket.socket:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, "exists and is not a socket")
        if _socket_answers(path):
            raise OSError(errno.EADDRINUSE, "address already in use")
        os.unlink(path)  # a stale socket from an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        _created_paths.add(os.path.abspath(path))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _socket_answers(path: str) -> bool:
    """Whether a server is listening on the unix socket at ``path`` (else it is stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def close_listener(sock: socket.socket, *, unlink: bool = True) -> None:
    """Close a listener (idempotent); a unix socket's file is removed too, unless ``unlink``
    is false (a socket shared with other processes: its owner removes the file)."""
    if sock.fileno() == -1:
        return
    path = sock.getsockname() if sock.family == socket.AF_UNIX else None
    sock.close()
    if unlink and isinstance(path, str) and path and os.path.abspath(path) in _created_paths:
        _created_paths.discard(os.path.abspath(path))
        with contextlib.suppress(OSError):
            os.unlink(path)


class AcceptingSocket(Protocol):
    """What :func:`accept_loop` uses of a listening socket (tests pass a fake one)."""

    def fileno(self) -> int: ...

    def accept(self) -> tuple[socket.socket, Any]: ...


async def accept_loop(
    sock: AcceptingSocket,
    slots: trio.Semaphore,
    *,
    spawn: Callable[[socket.socket, object], None],
    batch_size: int = ACCEPT_BATCH,
    make_room: Callable[[], float] | None = None,
) -> None:
    """Accept connections forever and hand each to ``spawn(client, address)``.

    Returns when ``sock`` is closed (``fileno() == -1``, or closed while waiting for it to be
    readable): that is how ``Server.refuse_connections`` stops it.

    Resource handling:
      A connection takes one of ``slots`` before it is accepted; ``spawn`` starts the
      connection's task, must not block, and that task must release the slot. While no slot is
      free, clients wait in the kernel's backlog (backpressure at accept). At most
      ``batch_size`` connections are accepted in a row before a checkpoint gives other tasks a
      turn.

    Error handling:
      ``accept()`` errors that concern only the client being accepted (``ECONNABORTED``,
      ``EPROTO``, ``EPERM``: it gave up, or a firewall refused it) are skipped. Errors that
      mean the process or the system is out of a resource, :class:`OSError` with one of these
      errnos:

      * ``EMFILE``: the process is out of file descriptors
      * ``ENFILE``: the system is out of file descriptors
      * ``ENOBUFS``, ``ENOMEM``: the kernel ran short of memory for a socket

      are logged to ``trioserve.error`` (level ERROR), and the loop waits 100 ms before it
      calls ``accept()`` again, in the hope that the system recovers, as
      ``trio.serve_listeners`` does. Any other error propagates out, ending the loop. The slot
      taken for a failed ``accept()`` is released in every case.
    """
    batch = 0
    while True:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            if make_room is None:
                await slots.acquire()
            elif not await _wait_for_slot(sock, slots, make_room):
                return  # the listener was closed under us
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
        if batch >= batch_size:
            batch = 0
            await trio.lowlevel.checkpoint()


async def _wait_for_slot(
    sock: AcceptingSocket, slots: trio.Semaphore, make_room: Callable[[], float]
) -> bool:
    """Take a slot, making room once a client waits in the backlog; ``False``: sock closed."""
    while True:
        if sock.fileno() == -1:
            return False
        try:
            # Readable: a client waits to be accepted. Until then, nobody needs room.
            await trio.lowlevel.wait_readable(sock)
        except trio.ClosedResourceError:
            return False
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            pass
        else:
            return True
        with trio.move_on_after(make_room()):
            await slots.acquire()
            return True
