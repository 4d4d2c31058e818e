"""HTTP/1.1 response framing: status lines, header validation, and a writer per body framing.

Modelled on h11's ``_writers.py``: the framing a response gets (Content-Length, chunked, until
the connection closes, or no body at all) is an object chosen once per response, and every body
piece goes through it. The writers only call ``len(data)`` and hand ``data`` back in place, so a
piece that is not bytes (a file range the connection sends with ``sendfile``) passes through
untouched among the framing bytes. The stateless writers are shared singletons: a response costs
at most one allocation here (the Content-Length writer, which counts down).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence, Sized
from http import HTTPStatus
from typing import Final

from .._errors import ResponseError
from .._http._date import http_date
from .._http._problem import VARY, negotiate_error

#: Header or trailer fields as an app gives them: name-value pairs that should be bytes (``str``
#: is taken as latin-1; anything else is a ResponseError). Typed as objects because they come
#: from the app unchecked: this module may be compiled (``scripts/compile.py``), and a
#: compiled function checks its arguments' declared types at the call.
Fields = Iterable[Sequence[object]]

__all__ = [
    "CHUNKED",
    "COMPLETE",
    "LAST_CHUNK",
    "NOT_STARTED",
    "NO_BODY",
    "UNTIL_CLOSE",
    "BodyWriter",
    "ContentLengthWriter",
    "Fields",
    "ResponseError",
    "error_response",
    "frame_response",
    "render_fields",
]

Headers = list[tuple[bytes, bytes]]

STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}
# What the app may put in a response header: a token for the name (RFC 9110 section 5.1), and
# no control character but HTAB in the value (no CR or LF: no header injection).
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class BodyWriter:
    """Frames the body of one response; this base is the state before the head is sent."""

    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        """The bytes to write for a piece of the body."""
        raise ResponseError("response body before the response head")

    def passthrough(self, data: Sized) -> list[object]:
        """The pieces to write for a body piece that is not bytes (``data`` kept in place)."""
        raise ResponseError("response body before the response head")

    def end(self) -> bytes:
        """The bytes that end the body."""
        raise ResponseError("end of a response that was not started")


#: The end of a chunked body without trailer fields (the last chunk and the empty trailer section).
LAST_CHUNK: Final = b"0\r\n\r\n"


class ContentLengthWriter(BodyWriter):
    """The body is held to the declared Content-Length, neither longer nor shorter."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def data(self, data: bytes) -> bytes:
        self.remaining -= len(data)
        if self.remaining < 0:
            raise ResponseError("response body longer than its Content-Length")
        return data

    def passthrough(self, data: Sized) -> list[object]:
        size = len(data)
        if not size:
            return []
        self.remaining -= size
        if self.remaining < 0:
            raise ResponseError("response body longer than its Content-Length")
        return [data]

    def end(self) -> bytes:
        if self.remaining:
            raise ResponseError(
                f"response body shorter than its Content-Length ({self.remaining} missing)"
            )
        return b""


class _ChunkedWriter(BodyWriter):
    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        # An empty piece would be the last-chunk marker: write nothing for it.
        return b"%x\r\n%b\r\n" % (len(data), data) if data else b""

    def passthrough(self, data: Sized) -> list[object]:
        size = len(data)
        return [b"%x\r\n" % size, data, b"\r\n"] if size else []

    def end(self) -> bytes:
        return LAST_CHUNK


class _UntilCloseWriter(BodyWriter):
    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        return data

    def passthrough(self, data: Sized) -> list[object]:
        return [data] if len(data) else []

    def end(self) -> bytes:
        return b""


class _NoBodyWriter(BodyWriter):
    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        return b""

    def passthrough(self, data: Sized) -> list[object]:
        return []

    def end(self) -> bytes:
        return b""


class _CompleteWriter(BodyWriter):
    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        raise ResponseError("response body after the end of the response")

    def passthrough(self, data: Sized) -> list[object]:
        raise ResponseError("response body after the end of the response")

    def end(self) -> bytes:
        raise ResponseError("end of a response that has already ended")


#: Before the head: every body call is an error.
NOT_STARTED: Final = BodyWriter()
#: Chunked transfer coding (HTTP/1.1 clients, length unknown).
CHUNKED: Final = _ChunkedWriter()
#: Body delimited by the end of the connection (HTTP/1.0 clients, length unknown).
UNTIL_CLOSE: Final = _UntilCloseWriter()
#: HEAD, 204 and 304: whatever the app sends, no body bytes go out.
NO_BODY: Final = _NoBodyWriter()
#: After the end: every body call is an error.
COMPLETE: Final = _CompleteWriter()


_NO_BODY_STATUSES: Final = frozenset({204, 304})


# Response header fields already validated, with their rendered line: most apps send the same
# few fields on every response, and validating them with two regular expressions per field was
# a measurable part of a small response's cost. Bounded (a server sees a few dozen distinct
# fields; 1024 leaves room for per-path variety), filled until full, never evicted. Of the
# fields that decide the framing only Content-Length is cached, apart and with its value as a
# number (a fixed-size body's length repeats as often as the body; a cap of its own, so that an
# app whose lengths vary cannot crowd the other fields out); Transfer-Encoding and Connection
# are looked at every time.
_CHECKED: Final[dict[tuple[bytes, bytes], bytes]] = {}
_CHECKED_MAX: Final = 1024
_CHECKED_LENGTHS: Final[dict[tuple[bytes, bytes], tuple[bytes, int]]] = {}
_CHECKED_LENGTHS_MAX: Final = 256
_FRAMING_NAMES: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def frame_response(
    status: object,
    headers: Fields,
    date_line: bytes | None,
    server_line: bytes | None,
    head_request: bool,
    http11: bool,
    body_length: int | None,
    length_is_resource_size: bool,
    whole: bool = False,
) -> tuple[list[bytes], BodyWriter, bool]:
    """Validate a response's status and headers, render them, and pick the body's framing.

    The framing: the app's Content-Length, else ``body_length`` when the whole body is known
    (a Content-Length is added), else chunked for HTTP/1.1 clients, else (HTTP/1.0) the end of
    the connection; and no body at all for HEAD, 204 and 304. When ``length_is_resource_size``
    (a file's size), a HEAD response carries that Content-Length too, as a GET response would.

    Args:
        status: The final status (200-599).
        headers: The app's headers (``str`` accepted as latin-1).
        date_line: The ``Date`` header line to put first, or ``None``.
        server_line: The ``Server`` header line to put next, or ``None``.
        head_request: The request is a HEAD request.
        http11: The client speaks HTTP/1.1 (it can read a chunked body).
        body_length: The whole body's length when known, else ``None``.
        length_is_resource_size: ``body_length`` is the size of what a GET would send.
        whole: the body of ``body_length`` bytes goes out with the head: where it is framed by
            a Content-Length that it meets, the writer is ``COMPLETE`` at once (no writer is
            made to count it).

    Returns:
        The header lines (status line first, no blank line yet), the body's writer, and
        whether the app said ``Connection: close``.

    Raises:
        ResponseError: the status or headers are invalid.
    """
    if type(status) is not int or not 200 <= status <= 599:
        raise ResponseError(f"invalid status for a final response: {status!r}")
    lines = [STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
    if date_line is not None:
        lines.append(date_line)
    if server_line is not None:
        lines.append(server_line)
    length: int | None = None
    chunked = said_close = False
    checked = _CHECKED
    for field in headers:
        if type(field) is tuple:
            # The field itself is the key (no tuple built per field); one that holds a
            # bytearray or a writable memoryview cannot be hashed, and goes the long way.
            try:
                seen = checked.get(field)
                seen_length = None if seen is not None else _CHECKED_LENGTHS.get(field)
            except (TypeError, ValueError):
                seen = seen_length = None
            if seen is not None:
                # A field seen before (most of an app's headers are the same every time):
                # validated and rendered already.
                lines.append(seen)
                continue
            if seen_length is not None:
                line, declared = seen_length
                if length is not None and declared != length:
                    raise ResponseError(f"invalid Content-Length: {field[1]!r}")
                length = declared
                lines.append(line)
                continue
        raw_name, raw_value = field
        if type(raw_name) is bytes and type(raw_value) is bytes:
            name, value = raw_name, raw_value
        else:
            name, value = _as_bytes(raw_name), _as_bytes(raw_value)
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ResponseError(f"invalid response header {name!r}: {value!r}")
        lowered = name.lower()
        if lowered not in _FRAMING_NAMES:
            line = name + b": " + value + b"\r\n"
            if len(checked) < _CHECKED_MAX:
                checked[(name, value)] = line
            lines.append(line)
            continue
        if lowered == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ResponseError(f"invalid Content-Length: {value!r}")
            length = int(value)
            line = name + b": " + value + b"\r\n"
            if len(_CHECKED_LENGTHS) < _CHECKED_LENGTHS_MAX:
                _CHECKED_LENGTHS[(name, value)] = (line, length)
            lines.append(line)
            continue
        if lowered == b"transfer-encoding":
            if value.lower() != b"chunked" or chunked:
                raise ResponseError(f"unsupported Transfer-Encoding: {value!r}")
            chunked = True
            continue  # added back below when the framing really is chunked
        elif lowered == b"connection" and b"close" in value.lower():
            said_close = True
        lines.append(name + b": " + value + b"\r\n")
    if length is not None and chunked:
        raise ResponseError("both Content-Length and Transfer-Encoding in the response")
    writer: BodyWriter
    if head_request or status in _NO_BODY_STATUSES:
        writer = NO_BODY
        if (
            length_is_resource_size
            and body_length is not None
            and length is None
            and not chunked
            and status not in _NO_BODY_STATUSES
        ):
            lines.append(b"content-length: %d\r\n" % body_length)
    elif length is not None:
        writer = COMPLETE if whole and length == body_length else ContentLengthWriter(length)
    elif body_length is not None and not chunked:
        writer = COMPLETE if whole else ContentLengthWriter(body_length)
        lines.append(b"content-length: %d\r\n" % body_length)
    elif http11:
        writer = CHUNKED
        lines.append(b"transfer-encoding: chunked\r\n")
    else:
        writer = UNTIL_CLOSE
    return lines, writer, said_close


def error_response(
    status: int,
    reason: str,
    *,
    accept: bytes | None = None,
    head_only: bool = False,
    extra_headers: Headers | None = None,
    date: Callable[[], bytes] | None = http_date,
    server: bytes | None = None,
) -> bytes:
    """The bytes of a complete error response that closes the connection.

    The body is in the form the request's ``accept`` prefers (problem+json, HTML or text; see
    ``_http._problem``), with ``Vary: Accept``; ``reason`` is its client-safe detail. Built by
    hand rather than through h11 so that it can be written whatever state h11 is in
    (typically ERROR, after a request that could not be parsed).
    """
    content_type, body = negotiate_error(status, reason, accept)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}".encode("ascii")]
    if date is not None:
        lines.append(b"date: " + date())
    if server is not None:
        lines.append(b"server: " + server)
    lines.append(b"content-type: " + content_type)
    lines.append(b"content-length: %d" % len(body))
    lines.append(b"vary: " + VARY)
    lines.append(b"connection: close")
    lines.extend(name + b": " + value for name, value in extra_headers or ())
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only else head + body


def render_fields(fields: Fields) -> bytes:
    """Header (or trailer) field lines, each validated as a response header is.

    Raises:
        ResponseError: an invalid name or value.
    """
    lines = []
    for raw_name, raw_value in fields:
        if type(raw_name) is bytes and type(raw_value) is bytes:
            name, value = raw_name, raw_value
        else:
            name, value = _as_bytes(raw_name), _as_bytes(raw_value)
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ResponseError(f"invalid field {name!r}: {value!r}")
        lines.append(name + b": " + value + b"\r\n")
    return b"".join(lines)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1")
    raise ResponseError(f"header names and values must be bytes, not {type(value).__name__}")
