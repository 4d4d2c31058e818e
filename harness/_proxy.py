"""A forward-proxy stub: what a client sends through ``HTTP_PROXY`` / ``HTTPS_PROXY``.

Theory of operation
-------------------
:func:`open_proxy` listens on a loopback port (port 0) and serves each connection in a task of
its own. The request head is parsed with h11:

* ``CONNECT host:port`` (HTTPS through the proxy) is recorded, answered ``200``, and the bytes
  are then relayed both ways between the client and ``host:port`` until either side closes
  (the TLS inside the tunnel is the client's and the server's: the proxy sees neither).
* An absolute-form request (``GET http://host:port/path``) is recorded with its headers and
  body, forwarded to ``host:port`` in origin form without the ``Proxy-*`` headers and with
  ``Connection: close``, and the upstream's response is relayed back as it comes; the client's
  connection closes after it (one request per connection keeps the relay a byte pipe).
* Anything else is answered ``400``.

The proxy forwards wherever the client asks: it is for tests whose upstreams are loopback
servers (harness servers, say). :func:`proxy` runs it in a thread for any test.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11
import trio

from ._matching import Headers

__all__ = ["ProxiedRequest", "Proxy", "open_proxy", "proxy"]

# A forwarded request body is held whole before it is sent on; test bodies are far smaller.
MAX_BODY: Final = 16 * 1024 * 1024
# Reads and writes on either side of the relay use this size.
CHUNK: Final = 65536
# A stop that takes longer than this is reported instead of hanging the test run.
STOP_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class ProxiedRequest:
    """One request a client sent through the proxy (``CONNECT`` included)."""

    method: str
    #: ``host:port`` for CONNECT, else the absolute URL the client asked for.
    target: str
    header_list: list[tuple[str, str]]
    body: bytes

    @property
    def headers(self) -> Headers:
        """The header fields as a case-insensitive mapping."""
        return Headers(self.header_list)


class Proxy:
    """The handle of a running proxy stub: its URL, the environment to use it, what it saw."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: give it to clients as their proxy."""
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """``HTTP_PROXY``, ``HTTPS_PROXY`` (both spellings) pointing here, and no
        ``NO_PROXY``, for ``monkeypatch`` or a subprocess."""
        return dict.fromkeys(
            ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), self.url
        ) | {"NO_PROXY": "", "no_proxy": ""}

    def _record(self, request: ProxiedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            connection = h11.Connection(h11.SERVER)
            request = await _next_event(connection, stream)
            if not isinstance(request, h11.Request):
                return
            method = request.method.decode("ascii")
            target = request.target.decode("latin-1")
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
            if method == "CONNECT":
                self._record(ProxiedRequest(method, target, headers, b""))
                await self._tunnel(stream, target, connection.trailing_data[0])
                return
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                await stream.send_all(_answer(400, b"harness proxy: absolute-form URL expected"))
                return
            try:
                body = await _read_body(connection, stream)
            except ValueError as exc:
                await stream.send_all(_answer(413, str(exc).encode()))
                return
            self._record(ProxiedRequest(method, target, headers, body))
            await self._forward(stream, method, url.hostname, url.port or 80, target, headers, body)

    async def _tunnel(self, stream: trio.SocketStream, target: str, early: bytes) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        except (OSError, ValueError):
            await stream.send_all(_answer(502, b"harness proxy: cannot reach " + target.encode()))
            return
        async with upstream:
            await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if early:
                await upstream.send_all(early)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, stream, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, stream, nursery.cancel_scope)

    async def _forward(
        self,
        stream: trio.SocketStream,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        url = urlsplit(target)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [
            (name, value)
            for name, value in headers
            if not name.lower().startswith("proxy-")
            and name.lower() not in ("connection", "content-length", "transfer-encoding")
        ]
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept)
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            await stream.send_all(_answer(502, f"harness proxy: cannot reach {host}".encode()))
            return
        async with upstream:
            await upstream.send_all(head.encode("latin-1") + body)
            await _pipe(upstream, stream, None)


async def _next_event(connection: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await stream.receive_some(CHUNK))


async def _read_body(connection: h11.Connection, stream: trio.SocketStream) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise ValueError(f"harness proxy: request body over {MAX_BODY} bytes")
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return b"".join(parts)


async def _pipe(
    source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope | None
) -> None:
    """Copy ``source`` to ``sink`` until ``source`` ends (or either side breaks)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await source.receive_some(CHUNK):
            await sink.send_all(data)
    if done is not None:
        done.cancel()


def _answer(status: int, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 %d Proxy Error\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, len(text), text)
    )


@contextlib.asynccontextmanager
async def open_proxy(*, host: str = "127.0.0.1") -> AsyncIterator[Proxy]:
    """Run a forward-proxy stub for the block's duration (trio); see the module docstring."""
    [listener] = await trio.open_tcp_listeners(0, host=host)
    handle = Proxy(host, listener.socket.getsockname()[1])

    async def serve_one(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, h11.RemoteProtocolError):
            await handle._handle(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve_one, [listener])
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()


@contextlib.contextmanager
def proxy(*, host: str = "127.0.0.1") -> Iterator[Proxy]:
    """:func:`open_proxy` in a thread of its own, for any test::

    with harness.proxy() as p:
        httpx.get(srv.url_for("/"), proxy=p.url)
        assert p.requests[0].target == srv.url_for("/")
    """
    started: queue.Queue[Proxy | BaseException] = queue.Queue()
    stop: list[trio.lowlevel.TrioToken | trio.Event] = []

    async def main() -> None:
        done = trio.Event()
        stop.extend([trio.lowlevel.current_trio_token(), done])
        try:
            async with open_proxy(host=host) as handle:
                started.put(handle)
                await done.wait()
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(main,), name="harness-proxy", daemon=True)
    thread.start()
    first = started.get(timeout=30)
    if isinstance(first, BaseException):
        thread.join(STOP_TIMEOUT)
        raise first
    token, done = stop
    assert isinstance(token, trio.lowlevel.TrioToken)
    assert isinstance(done, trio.Event)
    try:
        yield first
    finally:
        token.run_sync_soon(done.set)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"harness proxy thread did not stop in {STOP_TIMEOUT} s")
