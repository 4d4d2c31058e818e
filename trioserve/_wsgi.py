"""WSGI (PEP 3333) apps, served as ASGI apps on a bounded pool of worker threads.

Theory of operation
-------------------
:class:`WSGIApp` is itself an ASGI app (everything trioserve serves is one), so a WSGI app runs
on every wire protocol the request cycle serves, HTTP/1.1 and HTTP/2 alike. For each request the
async side builds the environ from the scope, then hands the whole WSGI call (the app, the
iteration of its response, ``close()``) to one worker thread with ``trio.to_thread.run_sync``
under a :class:`trio.CapacityLimiter`: the pool is bounded, requests beyond it wait their turn,
and the request's task waits for its thread (never abandoned, so trio joins every thread).

The thread talks back to trio with ``trio.from_thread.run``, which runs in the request's own task
(a cancelled request raises ``trio.Cancelled`` into the thread at its next call):

* ``wsgi.input`` takes one ``receive()`` message at a time, only when the app reads and its
  buffer cannot answer: the server reads the socket only as fast as the app reads the body.
* each response chunk is one ``send()``, and the thread waits until it went out before asking
  the iterable for the next (PEP 3333: a block is transmitted before the next is requested). The
  head is held until the first non-empty chunk (or ``write()``) and goes in the same call.
* the last chunk, when the server can tell it is the last (a list, or the declared
  Content-Length reached), is not sent from the thread: ``run()`` returns it and the request's
  task sends it once the thread is done. A short response thus costs no round trip at all
  beyond the thread's own start and end.
* ``close()`` on the response iterable runs in a ``finally`` in the thread: on success (just
  before that last send), on an error, and when ``send()`` raised :class:`ClientDisconnected`
  because the client left.

An app that fails before its response starts lets the exception out, and the request cycle
answers 500; one that fails halfway leaves a truncated response the cycle cuts off.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, Final, TypeAlias

import trio

from ._errors import ClientDisconnected
from ._lifespan import complete_lifespan
from ._types import Message, Receive, Scope, Send

__all__ = ["DEFAULT_WSGI_THREADS", "FileWrapper", "WSGIApp", "build_environ"]

error_log = logging.getLogger("trioserve.error")

# Ten threads, as a2wsgi's default: a WSGI request holds its thread for the whole exchange
# (reading the body, streaming the response), so the pool must cover the requests that are in
# flight at once, not just the CPU-bound part. Ten keeps a slow client or a slow query from
# stalling everything (waitress's 4 does, under a few slow uploads) while bounding the memory of
# stacks and per-thread state (database connections); raise it for I/O-heavy apps.
DEFAULT_WSGI_THREADS: Final = 10

# File wrapper fallback reads: each block is one round trip from the worker thread to the event
# loop, so read 64 KiB (the socket buffer's order of size) even when the app asks for 8 KiB
# (Werkzeug's default) blocks.
FILE_BLOCK_SIZE: Final = 64 * 1024

ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType | None]
WSGICallable: TypeAlias = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGIApp:
    """A WSGI (PEP 3333) app as an ASGI app: ``serve(WSGIApp(flask_app), config)``.

    The WSGI app runs in worker threads, at most ``threads`` requests at a time; the request
    body is read as the app reads ``wsgi.input``, and the response is streamed chunk by chunk.
    Lifespan events are answered at once (WSGI has none); websocket requests are refused.

    Args:
        app: The WSGI callable, ``app(environ, start_response)``.
        threads: The most requests the app runs at once (the size of the thread pool).
    """

    def __init__(self, app: WSGICallable, *, threads: int = DEFAULT_WSGI_THREADS) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.app = app
        self.threads = threads
        self._limiter = trio.CapacityLimiter(threads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            environ = build_environ(scope, _Input(receive, bodyless=_bodyless(scope)))
            call = _Call(self.app, environ, send)
            last = await trio.to_thread.run_sync(call.run, limiter=self._limiter)
            for message in last:
                await send(message)
        elif kind == "lifespan":
            await complete_lifespan(receive, send)
        else:  # a websocket: closing before accepting refuses it (403)
            await send({"type": "websocket.close", "code": 1000})


class _Call:
    """One WSGI call, run in a worker thread: ``start_response``, ``write`` and the response."""

    __slots__ = (
        "app",
        "declared",
        "ended",
        "environ",
        "head_sent",
        "last",
        "send",
        "sent",
        "start",
    )

    def __init__(self, app: WSGICallable, environ: dict[str, Any], send: Send) -> None:
        self.app = app
        self.environ = environ
        self.send = send
        self.start: Message | None = None
        self.declared: int | None = None  # the Content-Length the app gave, if any
        self.head_sent = False
        self.ended = False
        self.sent = 0
        self.last: tuple[Message, ...] = ()  # what the request's task sends once run() is done

    def run(self) -> tuple[Message, ...]:
        """Run the app and send its response; return its last messages for the task to send."""
        result = self.app(self.environ, self.start_response)
        try:
            if isinstance(result, FileWrapper) and self._send_file(result):
                return ()
            if isinstance(result, list | tuple):
                last = len(result) - 1
                for index, chunk in enumerate(result):
                    if chunk or index == last:
                        self._send(_as_bytes(chunk), end=index == last)
            else:
                for chunk in result:
                    if chunk:
                        self._send(_as_bytes(chunk), end=False)
            if not self.ended:
                self._send(b"", end=True)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return self.last

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.head_sent:
                # PEP 3333: too late to change the response; re-raise the app's error.
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.start is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code, _, _ = status.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise ValueError(f"WSGI status must be like '200 OK', not {status!r}")
        raw: list[tuple[bytes, bytes]] = []
        declared = None
        for name, value in headers:
            raw_name = name.lower().encode("latin-1")
            raw.append((raw_name, value.encode("latin-1")))
            if raw_name == b"content-length":
                declared = int(value)
        self.start = {"type": "http.response.start", "status": int(code), "headers": raw}
        self.declared = declared
        return self.write

    def write(self, data: bytes) -> None:
        """The PEP's ``write()`` callable: send ``data`` now (returns once it went out)."""
        if data:
            self._send(_as_bytes(data), end=False)

    def _send(self, data: bytes, *, end: bool) -> None:
        if self.ended:
            return  # past the declared Content-Length: dropped (logged when it happened)
        if self.declared is not None:
            room = self.declared - self.sent
            if len(data) > room:
                # PEP 3333: never more bytes than the header allows.
                error_log.error(
                    "WSGI app sent more than its Content-Length (%d); the rest was dropped (%s %s)",
                    self.declared,
                    self.environ["REQUEST_METHOD"],
                    self.environ["PATH_INFO"],
                )
                data = data[:room]
            self.sent += len(data)
            end = end or self.sent >= self.declared
        body: Message = {"type": "http.response.body", "body": data, "more_body": not end}
        self.ended = end
        if end:
            # The last block: the task sends it when the thread is done, which saves a round
            # trip per response (one in all for a short one). All the body has been produced by
            # then (a list, or the Content-Length reached), so what remains in the thread is the
            # end of the iteration and close(), which thus runs just before that last send.
            self.last = self._with_head(body)
            return
        trio.from_thread.run(self._deliver, self._with_head(body))

    def _with_head(self, message: Message) -> tuple[Message, ...]:
        if self.head_sent:
            return (message,)
        if self.start is None:
            raise RuntimeError("the WSGI app sent its body before calling start_response()")
        self.head_sent = True
        return (self.start, message)

    async def _deliver(self, messages: tuple[Message, ...]) -> None:
        for message in messages:
            await self.send(message)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send the wrapped file by path (zero-copy) if it is a whole regular file."""
        if self.start is None or self.head_sent:
            return False
        path = _whole_file_path(wrapper.filelike, self.declared)
        if path is None:
            return False
        self.ended = True
        message = {"type": "http.response.pathsend", "path": path}
        trio.from_thread.run(self._deliver, self._with_head(message))
        return True


class FileWrapper:
    """``wsgi.file_wrapper``: a file as a response iterable, sent zero-copy when possible.

    Returned as the response, a wrapped regular file read from its start (with no
    Content-Length, or the file's size) goes out with ``http.response.pathsend`` (sendfile);
    anything else is read and sent in blocks.

    Args:
        filelike: An object with ``read(size)``; ``close()`` is called when the response ends.
        block_size: The size of the reads, when the file is read.
    """

    def __init__(self, filelike: IO[bytes], block_size: int = FILE_BLOCK_SIZE) -> None:
        self.filelike = filelike
        self.block_size = max(block_size, FILE_BLOCK_SIZE)

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while data := read(self.block_size):
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    # What Werkzeug looks for to seek to a Range instead of reading up to it.
    def seekable(self) -> bool:
        seekable = getattr(self.filelike, "seekable", None)
        return bool(seekable is not None and seekable())

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.filelike.seek(offset, whence)

    def tell(self) -> int:
        return self.filelike.tell()


def _whole_file_path(filelike: Any, declared: int | None) -> str | None:
    """The path of ``filelike`` if sending that path sends exactly what reading it would."""
    try:
        name = filelike.name
        fd = filelike.fileno()
        position = filelike.tell()
    except (AttributeError, OSError, ValueError):
        return None
    if not isinstance(name, str) or position != 0:
        return None
    try:
        opened = os.fstat(fd)
        named = os.stat(name)
    except OSError:
        return None
    if (
        not stat.S_ISREG(opened.st_mode)
        or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino)
        or (declared is not None and declared != opened.st_size)
    ):
        return None
    return os.path.abspath(name)


class _Input:
    """``wsgi.input``: the request body, read from the client only as the app reads it.

    The buffer holds at most what the app asked for plus one received message, except for
    ``read()`` and ``readline()`` without a size, which hold the whole body or line (the server
    bounds a body by ``max_body_size``).
    """

    __slots__ = ("_buffer", "_more", "_receive")

    def __init__(self, receive: Receive, *, bodyless: bool) -> None:
        self._receive = receive
        self._buffer = bytearray()
        self._more = not bodyless

    def _fill(self) -> bool:
        """Append the next piece of the body to the buffer; False at its end."""
        if not self._more:
            return False
        message = trio.from_thread.run(self._receive)
        if message["type"] != "http.request":
            self._more = False
            raise ClientDisconnected("the client left before sending the whole request body")
        self._buffer += message.get("body", b"")
        self._more = bool(message.get("more_body", False))
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched)
            if newline >= 0:
                end = newline + 1
                break
            searched = len(self._buffer)
            if 0 <= limit <= searched or not self._fill():
                end = searched
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def _bodyless(scope: Scope) -> bool:
    """Whether the request surely has no body, so reading it needs no trip to the event loop."""
    length: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            return False
    if length is not None:
        return length.strip() == b"0"
    # HTTP/1.x: no Content-Length and no Transfer-Encoding means no body (RFC 9112 6.3); an
    # HTTP/2 request may send a body without either.
    return scope["http_version"] in ("1.1", "1.0")


def _as_bytes(chunk: Any) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a WSGI app must give bytes, not {type(chunk).__name__}")


def _native(text: str) -> str:
    """PEP 3333's "bytes as latin-1" form of a decoded (UTF-8) string."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def build_environ(scope: Scope, body: Any) -> dict[str, Any]:
    """The WSGI environ for an ASGI ``http`` scope, with ``body`` as ``wsgi.input``."""
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path) :]
    scheme: str = scope["scheme"]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": _native(root_path),
        "PATH_INFO": _native(path),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        # The input ends where the body does (chunked and HTTP/2 bodies included): Werkzeug and
        # others then read it to its end even without a Content-Length.
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    seen: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "content-length":
            environ["CONTENT_LENGTH"] = value
            continue
        if "_" in name:
            # X_Forwarded_For would become HTTP_X_FORWARDED_FOR, the same key as the one a
            # trusted proxy sets: such names are dropped, as nginx and gunicorn do.
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in seen:
            # RFC 9113 8.2.3: HTTP/2 may split Cookie into several fields, joined with "; ".
            value = seen[key] + ("; " if name == "cookie" else ", ") + value
        seen[key] = value
    environ.update(seen)
    server = scope.get("server")
    if server is not None and server[1] is not None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    else:  # a unix socket: the Host header names the server
        host = seen.get("HTTP_HOST", "localhost")
        name, colon, port = host.rpartition(":")
        if not colon or "]" in port:  # no port (an IPv6 literal's colons are not one)
            name, port = host, ""
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port or ("443" if scheme == "https" else "80")
    return environ
