"""From an accepted socket to a served connection: PROXY header, TLS, the protocol choice.

Theory of operation
-------------------
The accept loop hands each new socket to :meth:`Acceptor.spawn`, which starts one task for it in
the listener's connection nursery and does nothing slow itself. That task, in order:

1. reads the PROXY protocol header when ``proxy_protocol`` is on (from a trusted peer only,
   bounded by ``header_timeout``), which gives the real client and server addresses;
2. on a TLS listener, checks that the client speaks TLS at all (plain HTTP gets a short 400)
   and completes the handshake, bounded by the TLS ``handshake_timeout``;
3. chooses the wire protocol, and runs the connection, which from then on handles every error
   of its own: HTTP/2 when TLS negotiated ``h2`` by ALPN, else HTTP/1.1 (which itself hands a
   cleartext connection that opens with the HTTP/2 preface over to HTTP/2: prior knowledge).

With ``max_connections_per_ip``, a socket from an address that holds that many connections
already is closed at once, before any of this. While the PROXY header or the TLS handshake is
awaited, the connection is a request head that has sent nothing, as eviction sees it (see
``_eviction``): when the server is out of slots it can be closed for a new client.

Until the hand-over, this task owns the socket and the connection slot: whatever happens (a
client that leaves, a bad PROXY header, a failed handshake), the socket is closed and the slot
released here, and what went wrong is logged at the level it deserves (debug for a client that
left or could not speak TLS, warning for a bad or untrusted PROXY header).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, Final

import trio

from ._config import Config
from ._errors import ClientDisconnected
from ._eviction import Kind, Reason, Snapshot
from ._h2._connection import H2Connection
from ._h11._connection import H11Connection
from ._h11._protocol import error_response
from ._http._date import http_date
from ._http._scope import connection_info, format_address
from ._http._state import ServerState
from ._proxy import MAX_PROXY_HEADER, ProxyHeaderError, parse_proxy_header
from ._tls import tls_extension
from ._tls_stream import TLSStream
from ._transport import READ_SIZE, Transport, map_disconnects

__all__ = ["Acceptor", "connection_protocol"]

error_log = logging.getLogger("trioserve.error")
tls_log = logging.getLogger("trioserve.error.tls")

# The first byte of a TLS record carrying a handshake (RFC 8446 section 5.1).
_TLS_HANDSHAKE_RECORD: Final = 0x16

Address = tuple[str, int]


class Acceptor:
    """Serves accepted sockets; see the module docstring.

    Args:
        state: The server-wide state.
        release: Gives the connection slot back (called once per spawned socket).
    """

    def __init__(self, state: ServerState, release: Callable[[], object]) -> None:
        self._state = state
        self._config = state.config
        self._release = release
        #: The TLS context for new handshakes (the server swaps it on a reload).
        self.ssl_context: ssl.SSLContext | None = None
        #: With ``redirect_to_https``: the HTTPS port that plain listeners redirect to.
        self.redirect_port: int | None = None
        #: With ``max_connections_per_ip``: the connections open per client address.
        self._per_ip: dict[str, int] = {}

    def spawn(
        self, nursery: trio.Nursery, secure: bool, client: socket.socket, peer: object
    ) -> None:
        """Start the task of a newly accepted connection (called by the accept loop)."""
        try:
            if client.family == socket.AF_UNIX:
                server: Address | None = None
                peer_address: Address | None = None
            else:
                server = _address(client.getsockname())
                peer_address = _address(peer)
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(client))
        except OSError as exc:
            # The client is gone already (reset before we looked).
            error_log.debug("A client left before its connection was set up: %s", exc)
            client.close()
            self._release()
            return
        secure = secure and self.ssl_context is not None
        limit = self._config.max_connections_per_ip
        if limit is None or peer_address is None:
            if not secure and not self._config.proxy_protocol:
                # Nothing to set up: the connection's own task is the whole task (one frame
                # fewer on the stack of every idle connection, and of every request).
                try:
                    connection = self._plain(stream, peer_address, server)
                except Exception:  # pragma: no cover - a bug; never into the accept loop
                    error_log.exception("Could not set up the connection from %s", peer_address)
                    stream.socket.close()
                    self._release()
                    return
                nursery.start_soon(connection.run)
            else:
                nursery.start_soon(self._serve, stream, peer_address, server, secure)
            return
        host = peer_address[0]
        held = self._per_ip.get(host, 0)
        if held >= limit:
            refusals = self._state.refusals
            refusals["per-ip"] = refusals.get("per-ip", 0) + 1
            # Debug, not info: one line per refused socket is what a flood would make.
            error_log.debug("Refused a connection from %s: --max-connections-per-ip", host)
            stream.socket.close()
            self._release()
            return
        self._per_ip[host] = held + 1
        nursery.start_soon(self._serve_counted, stream, peer_address, server, secure, host)

    async def _serve_counted(
        self,
        stream: trio.SocketStream,
        client: Address | None,
        server: Address | None,
        secure: bool,
        host: str,
    ) -> None:
        try:
            await self._serve(stream, client, server, secure)
        finally:
            left = self._per_ip[host] - 1
            if left:
                self._per_ip[host] = left
            else:
                del self._per_ip[host]

    async def _serve(
        self,
        stream: trio.SocketStream,
        client: Address | None,
        server: Address | None,
        secure: bool,
    ) -> None:
        handed_over = False
        try:
            connected: trio.abc.Stream = stream
            tls: dict[str, Any] | None = None
            if self._config.proxy_protocol or secure:
                setup = _SettingUp(client)
                connections = self._state.connections
                connections.add(setup)
                try:
                    with setup.scope:
                        if self._config.proxy_protocol:
                            addresses = await self._read_proxy_header(stream, client)
                            if addresses is None:
                                return
                            client, server = addresses[0] or client, addresses[1] or server
                        if secure:
                            handshake = await self._handshake(stream, client)
                            if handshake is None:
                                return
                            connected, tls = handshake
                finally:
                    connections.discard(setup)
                if setup.scope.cancelled_caught:
                    return  # evicted
            connection: H11Connection | H2Connection
            if isinstance(connected, TLSStream) and connected.selected_alpn_protocol() == "h2":
                connection = H2Connection(
                    Transport(connected, self._config.write_timeout, self._state.readiness),
                    self._state,
                    connection_info(self._state, client, server, "https", tls),
                    on_close=self._release,
                )
            elif secure:
                connection = H11Connection(
                    connected,
                    self._state,
                    client=client,
                    server=server,
                    scheme="https",
                    tls=tls,
                    on_close=self._release,
                )
            else:
                connection = self._plain(connected, client, server)
            handed_over = True
            # The connection handles every exception of its own: nothing reaches the nursery.
            await connection.run()
        except ClientDisconnected:
            error_log.debug("%s left before its connection was set up", format_address(client))
        except Exception:
            error_log.exception("Unexpected error on the connection from %s", client)
        finally:
            if not handed_over:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                self._release()

    def _plain(
        self, stream: trio.abc.Stream, client: Address | None, server: Address | None
    ) -> H11Connection:
        """The connection for a cleartext socket (HTTP/1.1, or HTTP/2 by prior knowledge)."""
        return H11Connection(
            stream,
            self._state,
            client=client,
            server=server,
            on_close=self._release,
            redirect_https_port=self.redirect_port,
        )

    async def _read_proxy_header(
        self, stream: trio.SocketStream, client: Address | None
    ) -> tuple[Address | None, Address | None] | None:
        """The addresses a trusted proxy's PROXY header gives; ``None``: drop the connection.

        Raises:
            ClientDisconnected: the client left.
        """
        trusted = self._state.trusted
        assert trusted is not None
        if not trusted.trusts(None if client is None else client[0]):
            error_log.warning(
                "PROXY protocol connection from untrusted %s refused", format_address(client)
            )
            return None
        try:
            with trio.move_on_after(self._config.header_timeout) as reading, map_disconnects():
                header = await _read_proxy_header(stream.socket)
            if reading.cancelled_caught:
                error_log.debug("No PROXY header from %s in time", format_address(client))
                return None
            _, source, destination = parse_proxy_header(header)
        except ProxyHeaderError as exc:
            error_log.warning("Bad PROXY header from %s: %s", format_address(client), exc)
            return None
        return source, destination

    async def _handshake(
        self, stream: trio.SocketStream, client: Address | None
    ) -> tuple[TLSStream, dict[str, Any]] | None:
        """The TLS handshake (bounded); ``None`` when it did not happen (logged at debug)."""
        context = self.ssl_context
        tls = self._config.tls
        assert context is not None
        assert tls is not None
        counts = self._state.tls_handshakes
        with trio.move_on_after(tls.handshake_timeout) as handshaking:
            try:
                with map_disconnects():
                    if not await _looks_like_tls(stream):
                        counts["plain-http"] = counts.get("plain-http", 0) + 1
                        await _refuse_plain_http(stream, self._config)
                        return None
                    # Closing sends close_notify (bounded by the connection's close); a
                    # client's missing close_notify reads as a disconnect, as it should.
                    ssl_stream = TLSStream(stream, context)
                    await ssl_stream.do_handshake()
            except ClientDisconnected as exc:
                # Garbage, a wrong version, an unknown CA, a reset: the client's problem.
                reason = exc.__cause__
                if reason is not None and reason.__cause__ is not None:
                    reason = reason.__cause__
                tls_log.debug("TLS handshake from %s failed: %s", format_address(client), reason)
                counts["failed"] = counts.get("failed", 0) + 1
                return None
        if handshaking.cancelled_caught:
            tls_log.debug("TLS handshake from %s timed out", format_address(client))
            counts["timeout"] = counts.get("timeout", 0) + 1
            return None
        counts["ok"] = counts.get("ok", 0) + 1
        return ssl_stream, tls_extension(ssl_stream.ssl_object, context)


def connection_protocol(connection: object) -> str:
    """The protocol of one of the server's connections, as metrics label it."""
    if isinstance(connection, H11Connection):
        # A cleartext connection that opened with the HTTP/2 preface was handed over.
        return "HTTP/1.1" if connection._h2 is None else "HTTP/2"
    if isinstance(connection, H2Connection):
        return "HTTP/2"
    return "setup"  # a PROXY header or a TLS handshake under way


def _address(sockname: object) -> Address:
    if isinstance(sockname, tuple):
        return (str(sockname[0]), int(sockname[1]))
    raise TypeError(f"not an internet socket address: {sockname!r}")  # pragma: no cover


async def _looks_like_tls(stream: trio.SocketStream) -> bool:
    """Wait for the client's first byte (without consuming it): a TLS handshake record?"""
    first = await stream.socket.recv(1, socket.MSG_PEEK)
    return not first or first[0] == _TLS_HANDSHAKE_RECORD


async def _refuse_plain_http(stream: trio.SocketStream, config: Config) -> None:
    """Answer plain HTTP sent to the TLS port with a short plain-text 400, then close.

    Raises:
        ClientDisconnected: the client left meanwhile.
    """
    response = error_response(
        400,
        "This port speaks HTTPS: use an https:// URL.",
        date=http_date if config.date_header else None,
        server=None if config.server_header is None else config.server_header.encode(),
    )
    with trio.move_on_after(config.write_timeout), map_disconnects():
        await stream.send_all(response)
        await stream.send_eof()
        # Read what the client sent, so that closing does not reset our answer away.
        while await stream.receive_some(READ_SIZE):
            pass


async def _read_proxy_header(sock: trio.socket.SocketType) -> bytes:
    """Read exactly one PROXY protocol header (never a byte more: what follows is HTTP or TLS).

    Raises:
        ProxyHeaderError: the connection does not start with one.
    """
    data = await _recv_exactly(sock, 6)
    if data == b"PROXY ":
        # Version 1: a text line; read it a byte at a time, since its length is not known.
        while not data.endswith(b"\r\n"):
            if len(data) >= 107:
                raise ProxyHeaderError("PROXY v1 header without CRLF within 107 bytes")
            data += await _recv_exactly(sock, 1)
        return data
    if data == b"\r\n\r\n\x00\r":
        data += await _recv_exactly(sock, 10)
        length = int.from_bytes(data[14:16], "big")
        if 16 + length > MAX_PROXY_HEADER:
            raise ProxyHeaderError("PROXY v2 header too long")
        return data + await _recv_exactly(sock, length)
    raise ProxyHeaderError("the connection does not start with a PROXY protocol header")


async def _recv_exactly(sock: trio.socket.SocketType, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = await sock.recv(count - len(data))
        if not chunk:
            raise ProxyHeaderError("the connection closed inside the PROXY header")
        data += chunk
    return data


class _SettingUp:
    """A connection awaiting its PROXY header or TLS handshake, as eviction and shutdown see it."""

    __slots__ = ("_client", "_since", "scope")

    def __init__(self, client: Address | None) -> None:
        self._client = client
        self._since = trio.current_time()
        self.scope = trio.CancelScope()

    def snapshot(self) -> Snapshot | None:
        # Nothing of a request head yet: 0 bytes so far.
        return None if self.scope.cancel_called else Snapshot(Kind.HEAD, self._since, 0)

    def evict(self, reason: Reason) -> None:
        self.scope.cancel()

    def describe(self) -> str:
        return format_address(self._client)

    def stop_idle(self) -> None:
        """Shutdown: a handshake in progress ends within its own timeout."""

    def stop_websocket(self) -> None:
        """Shutdown, soft: nothing to do."""
