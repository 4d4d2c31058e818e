"""``--compress-apps``: the static files' compression on the fly, as ASGI middleware for apps.

The decisions (which types compress, which coding a client gets, the size threshold) and the
compressors are StaticFiles' own (``_static._encoding``, ``_static._codecs``); this module only
applies them to the messages an app sends.
"""

# Theory of operation
# ===================
#
# The request decides first: no acceptable coding (``choose_coding``), a ``Range`` header (a
# range of a compressed body is not a range of the resource, so ranges get identity, as for
# files) or a HEAD (its Content-Length must stay the GET's identity length) pass the app
# through untouched. Otherwise the response start is held until the first body message, and the
# response is left alone when it already has a Content-Encoding, a status without a body or a
# 206, a type that does not compress (``is_compressible``: never text/event-stream, whose events
# must not wait in a compressor), or a body under the threshold: a whole body (first message,
# no more_body) shorter than ``min_size``, or a declared Content-Length under it.
#
# A whole body is compressed at once and gets its Content-Length; a streamed one is compressed
# message by message (bounded memory: one message in, what the compressor gives out) and goes
# out chunked. Compressed responses get ``Content-Encoding``, ``Vary: Accept-Encoding`` and, if
# the app gave a strong ETag, the coding appended inside it (``"abc"`` -> ``"abc-gzip"``), so
# that an identity and a compressed body never share a validator.
#
# Compression runs on the event loop: an app body is in memory already, and at the levels of
# ``_codecs`` (gzip 6, zstd 3, brotli 5) a 64 KiB message takes about a millisecond.

from __future__ import annotations

from typing import TYPE_CHECKING

from ._static._codecs import Compressor, available_codings, new_compressor
from ._static._encoding import DEFAULT_COMPRESS_MIN_SIZE, choose_coding, is_compressible

if TYPE_CHECKING:
    from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CompressApps"]

_SKIPPED_HEADERS = frozenset({b"content-length", b"content-encoding"})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class CompressApps:
    """Wrap an ASGI app so its compressible responses are compressed for clients that accept it.

    Args:
        app: The app.
        codings: The codings to produce, in the server's order of preference (default: every
            one installed: zstd, br, gzip).
        min_size: Bodies smaller than this many bytes are sent as they are.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        codings: tuple[str, ...] | None = None,
        min_size: int = DEFAULT_COMPRESS_MIN_SIZE,
    ) -> None:
        self.app = app
        self.codings = available_codings() if codings is None else codings
        self.min_size = min_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        accept_encoding: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"range":
                await self.app(scope, receive, send)
                return
            if name == b"accept-encoding":
                accept_encoding = (
                    value if accept_encoding is None else accept_encoding + b"," + value
                )
        coding = (
            None
            if accept_encoding is None
            else choose_coding(accept_encoding.decode("latin-1"), self.codings)
        )
        if coding is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Compressing(send, coding, self.min_size))


class _Compressing:
    """The ``send`` the app gets: decides on its first body message, then compresses or not."""

    __slots__ = ("_coding", "_compressor", "_min_size", "_send", "_start", "_state")

    def __init__(self, send: Send, coding: str, min_size: int) -> None:
        self._send = send
        self._coding = coding
        self._min_size = min_size
        self._start: Message | None = None
        self._compressor: Compressor | None = None
        self._state = "start"  # then "compress" or "pass"

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self._state == "start" and kind == "http.response.start":
            self._start = message
            return
        if self._state == "start" and kind == "http.response.body" and self._start is not None:
            await self._decide(message)
            return
        if self._state == "compress" and kind == "http.response.body":
            assert self._compressor is not None
            data = self._compressor.compress(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not more:
                data += self._compressor.flush()
            if data or not more:
                await self._send({"type": "http.response.body", "body": data, "more_body": more})
            return
        await self._send(message)

    def _eligible(self, headers: list[tuple[bytes, bytes]], status: int) -> bool:
        if status < 200 or status in (204, 206, 304):
            return False
        if _header(headers, b"content-encoding") is not None:
            return False
        content_type = _header(headers, b"content-type")
        if content_type is None or not is_compressible(content_type.decode("latin-1")):
            return False
        length = _header(headers, b"content-length")
        return not (length is not None and length.isdigit() and int(length) < self._min_size)

    async def _decide(self, first: Message) -> None:
        start = self._start
        assert start is not None
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", ())]
        body = bytes(first.get("body", b""))
        more = bool(first.get("more_body", False))
        if not self._eligible(headers, int(start["status"])) or (
            not more and len(body) < self._min_size
        ):
            self._state = "pass"
            await self._send(start)
            await self._send(first)
            return
        self._state = "compress"
        compressor = new_compressor(self._coding)
        data = compressor.compress(body)
        if more:
            self._compressor = compressor
        else:
            data += compressor.flush()
        out = [(k, v) for k, v in headers if k.lower() not in _SKIPPED_HEADERS]
        for index, (key, value) in enumerate(out):
            if key.lower() == b"etag" and value.endswith(b'"') and not value.startswith(b"W/"):
                out[index] = (key, value[:-1] + b"-" + self._coding.encode() + b'"')
            elif key.lower() == b"vary":
                out[index] = (key, value + b", Accept-Encoding")
        if _header(out, b"vary") is None:
            out.append((b"vary", b"Accept-Encoding"))
        out.append((b"content-encoding", self._coding.encode()))
        if not more:
            out.append((b"content-length", b"%d" % len(data)))
        await self._send({**start, "headers": out})
        await self._send({"type": "http.response.body", "body": data, "more_body": more})
