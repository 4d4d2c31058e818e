"""Sans-IO HTTP/1.1 for one server connection, on top of h11.

Theory of operation
-------------------
h11 parses the requests; this module adds what a server needs on top, frames the responses
itself, and does no I/O at all: bytes go in through :meth:`ServerProtocol.receive_data`, events
come out of :meth:`ServerProtocol.next_event` as the neutral events of ``_http/_events.py`` (this is
the only module that imports h11), and every ``send_*`` method returns the bytes to write. The
connection task (``_connection.py``) owns the socket; the clock (the ``Date`` value) is passed in.

What it adds to h11, all of it policy that h11 leaves to the server:

* A request the server refuses raises :class:`RequestRefused` carrying the status to answer
  with; after one, the only thing left to do is write :func:`error_response` and close.
* Connection policy: when to close after a response (:meth:`ServerProtocol.close_after_response`,
  :attr:`ServerProtocol.will_close`), how many bytes of pipelined requests to hold while a
  response is pending (:meth:`ServerProtocol.receive_pipelined`), how much of an unread body to
  drain to keep the connection (:meth:`ServerProtocol.drain_body`), and when ``100 Continue`` is
  due (:meth:`ServerProtocol.continue_response`).
* Stricter parsing than h11 where ambiguity enables request smuggling: Content-Length together
  with Transfer-Encoding, and repeated Content-Length headers (even equal ones), are 400; any
  HTTP version but 1.0 and 1.1 is 505; CONNECT is 405.
* The connection's first bytes are sniffed so that a TLS ClientHello or an HTTP/2 preface sent to
  a plain-HTTP port gets a 400 that says what went wrong instead of a confusing parse error.
* The body limit: a declared Content-Length over ``max_body_size`` is refused up front (413,
  without reading the body); a chunked body is counted as it arrives.
* Responses are framed here rather than by h11: Content-Length, chunked, or until-close for
  HTTP/1.0; ``Date`` (formatted at most once a second) and ``Server`` headers; ``Connection:
  close`` when either side wants to close; no body bytes for HEAD, 204 and 304 whatever the
  app sends. Header names and values are validated in one pass (no CR, LF or other control
  characters: no header injection), and the body is held to its Content-Length. Sending through
  h11 validated every header twice and cost about as much as parsing the request; since h11
  cannot be told about a response it did not frame, each request/response cycle gets a fresh
  ``h11.Connection`` that inherits the bytes already received (see ``start_next_cycle``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence, Sized
from http import HTTPStatus
from typing import Final

import h11

from .._errors import RequestRefused
from .._http._date import http_date
from .._http._events import (
    CLIENT_CLOSED,
    END_OF_BODY,
    HTTP2_PREFACE,
    NEED_DATA,
    BodyChunk,
    Event,
    RequestHead,
)

__all__ = [
    "DRAIN_BYTES",
    "PIPELINE_DISCARD_BYTES",
    "ResponseError",
    "ServerProtocol",
    "error_response",
]

Headers = list[tuple[bytes, bytes]]

# The first bytes of a TLS handshake record (content type 22, major version 3) and the start of
# the HTTP/2 connection preface (RFC 9113 section 3.4).
_TLS_HANDSHAKE_PREFIX: Final = b"\x16\x03"
_H2_PREFACE_START: Final = b"PRI * HTTP/2.0"
_SNIFF_LENGTH: Final = len(_H2_PREFACE_START)

# h11 parses header values leniently (anything but NUL and whitespace); a server must not:
# control characters are how header-injection differentials between proxies and servers are
# built (the daphne CVE-2026-44546 set). Also refused: a bare CR, and obs-fold (a line that
# starts with whitespace), which RFC 9112 section 5.2 lets a server reject with 400.
_FORBIDDEN_IN_HEAD: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|\n[ \t]")

# Their states after a complete request that allow another one (MIGHT_SWITCH_PROTOCOL: the
# request asked for an Upgrade that was not granted).
_NEXT_CYCLE_STATES: Final = (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_HTTP_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}

# Bytes of an unread request body the server reads and discards to keep the connection alive:
# enough for a typical form or small upload that an app chose not to read, small enough that a
# client cannot make us read a large upload for nothing.
DRAIN_BYTES: Final = 256 * 1024
# Once a response is the connection's last, bytes of pipelined requests behind it are read and
# dropped (so that the client's close is seen) up to this many; a client that keeps sending
# past it is flooding us and gets closed.
PIPELINE_DISCARD_BYTES: Final = 1024 * 1024
# The client's states once its whole request has arrived (MIGHT_SWITCH_PROTOCOL: after a
# request that asked for an Upgrade, which this server never grants).
_REQUEST_COMPLETE_STATES: Final = (
    h11.DONE,
    h11.MUST_CLOSE,
    h11.MIGHT_SWITCH_PROTOCOL,  # type: ignore[attr-defined]
)


# Response framing states.
_NOT_STARTED: Final = "not started"
_LENGTH: Final = "content-length"
_CHUNKED: Final = "chunked"
# The tokens of a TE header value (a transfer coding, or "trailers"), parameters left out.
_TE_TOKENS: Final = re.compile(rb"(?:^|,)\s*([!#$%&'*+.^_`|~0-9a-z-]+)")
_UNTIL_CLOSE: Final = "until close"
_NO_BODY: Final = "no body"
_COMPLETE: Final = "complete"

_STATUS_LINES: Final = {
    status.value: b"HTTP/1.1 %d %b\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}
# What the app may put in a response header: a token for the name (RFC 9110 section 5.1), and
# no control character but HTAB in the value (no CR or LF: no header injection).
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def error_response(
    status: int,
    reason: str,
    *,
    head_only: bool = False,
    extra_headers: Headers | None = None,
    date: Callable[[], bytes] | None = http_date,
    server: bytes | None = None,
) -> bytes:
    """The bytes of a complete plain-text error response that closes the connection.

    Built by hand rather than through h11 so that it can be written whatever state h11 is in
    (typically ERROR, after a request that could not be parsed).
    """
    body = (reason + "\n").encode("utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}".encode("ascii")]
    if date is not None:
        lines.append(b"date: " + date())
    if server is not None:
        lines.append(b"server: " + server)
    lines.append(b"content-type: text/plain; charset=utf-8")
    lines.append(b"content-length: %d" % len(body))
    lines.append(b"connection: close")
    lines.extend(name + b": " + value for name, value in extra_headers or ())
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head if head_only else head + body


class ServerProtocol:
    """The HTTP/1.1 state of one server connection: bytes in, events out, bytes to write.

    Args:
        max_header_size: Bytes allowed for a request line plus headers (431 beyond).
        max_body_size: Bytes allowed for a request body (413 beyond), or ``None``.
        max_headers: Header fields allowed in a request (431 beyond), or ``None``.
        server_header: Value of the ``Server`` header, or ``None`` to send none.
        date: Returns the ``Date`` header's value; ``None`` to send no ``Date`` header.
        h2c: Whether a connection that opens with the HTTP/2 preface is handed over to HTTP/2
            (:data:`HTTP2_PREFACE`); otherwise it gets a 400.
    """

    __slots__ = (
        "_body_limit",
        "_body_received",
        "_bodyless",
        "_client_closes",
        "_client_http11",
        "_closing",
        "_conn",
        "_date",
        "_discarded",
        "_framing",
        "_h2c",
        "_head_request",
        "_max_header_size",
        "_max_headers",
        "_remaining",
        "_server",
        "_sniffed",
        "trailers_accepted",
        "websocket",
    )

    def __init__(
        self,
        *,
        max_header_size: int,
        max_body_size: int | None,
        max_headers: int | None = None,
        server_header: bytes | None = None,
        date: Callable[[], bytes] | None = http_date,
        h2c: bool = False,
    ) -> None:
        self._h2c = h2c
        # Created when the first bytes of a request arrive: an idle keep-alive connection holds
        # none (idle connections are where a server's memory goes).
        self._conn: h11.Connection | None = None
        self._body_limit = max_body_size
        self._max_header_size = max_header_size
        self._max_headers = max_headers
        self._body_received = 0
        self._server = None if server_header is None else b"server: " + server_header + b"\r\n"
        self._date = date
        self._sniffed = b""
        self._framing = _NOT_STARTED
        self._remaining = 0
        self._discarded = 0
        self._client_http11 = True
        self._client_closes = False
        self._closing = False
        self._head_request = False
        #: Whether the current request has no body at all (no Content-Length, no chunking).
        self._bodyless = False
        #: Whether the current request asks to become a websocket.
        self.websocket = False
        #: Whether the current request said ``TE: trailers`` (trailer fields may be sent).
        self.trailers_accepted = False

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the client; ``b""`` means the client closed its side."""
        if len(self._sniffed) < _SNIFF_LENGTH:
            self._sniff(data)
        conn = self._conn
        if conn is None:
            conn = self._conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._max_header_size
            )
        conn.receive_data(data)  # type: ignore[arg-type]  # bytearray works too

    def receive_pipelined(self, data: bytes | bytearray) -> bool:
        """Feed bytes that arrived while a response is pending (the next pipelined requests).

        They are kept for after the response, up to ``max_header_size`` bytes; past that the
        response becomes the connection's last (a pipelining client retries what goes
        unanswered) and further bytes are dropped, up to :data:`PIPELINE_DISCARD_BYTES`.

        Returns:
            Whether to keep reading (``False``: the client floods us; close).
        """
        if self._closing:
            self._discarded += len(data)
            return self._discarded <= PIPELINE_DISCARD_BYTES
        if self.buffered_size + len(data) > self._max_header_size:
            self._closing = True
            self._discarded = len(data)
            return True
        self.receive_data(data)
        return True

    def _sniff(self, data: bytes | bytearray) -> None:
        sniffed = self._sniffed + bytes(data[: _SNIFF_LENGTH - len(self._sniffed)])
        self._sniffed = sniffed
        if sniffed.startswith(_TLS_HANDSHAKE_PREFIX):
            raise RequestRefused(
                400, "This port speaks plain HTTP, but the client sent TLS (https)."
            )
        if sniffed.startswith(_H2_PREFACE_START):
            if self._h2c:
                self._sniffed = _H2_PREFACE_START  # next_event() says HTTP2_PREFACE from now on
                return
            raise RequestRefused(400, "HTTP/2 is not supported on this port; use HTTP/1.1.")
        if not _H2_PREFACE_START.startswith(sniffed) and not _TLS_HANDSHAKE_PREFIX.startswith(
            sniffed
        ):
            # Neither can match any more: stop looking (and stop paying for it).
            self._sniffed = b"x" * _SNIFF_LENGTH

    @property
    def http2_preface(self) -> bool:
        """Whether the client opened with the HTTP/2 preface (and ``h2c`` hands it over)."""
        return self._sniffed is _H2_PREFACE_START

    @property
    def has_buffered_data(self) -> bool:
        """Whether bytes received from the client are waiting to be parsed."""
        return self._conn is not None and bool(self._conn.trailing_data[0])

    def take_buffered(self) -> bytes:
        """Hand over the bytes received but not parsed (when the connection changes protocol)."""
        return b"" if self._conn is None else self._conn.trailing_data[0]

    @property
    def buffered_size(self) -> int:
        """How many received bytes wait to be parsed."""
        return 0 if self._conn is None else len(self._conn.trailing_data[0])

    @property
    def waiting_for_100_continue(self) -> bool:
        """Whether the client sent ``Expect: 100-continue`` and waits for our go-ahead."""
        conn = self._conn
        return conn is not None and bool(conn.they_are_waiting_for_100_continue)

    def next_event(self) -> Event:
        """The next event parsed from the received bytes.

        Returns:
            A :class:`RequestHead`, a :class:`BodyChunk`, ``END_OF_BODY``, ``CLIENT_CLOSED``
            (the client closed between requests), or ``NEED_DATA`` (read more; also while the
            current response is not finished and the next request is complete).

        Raises:
            RequestRefused: the request must be refused with the given status.
        """
        conn = self._conn
        if conn is None:
            return NEED_DATA
        if self._sniffed is _H2_PREFACE_START:
            return HTTP2_PREFACE
        raw_head = conn.trailing_data[0] if conn.their_state is h11.IDLE else b""
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._closing = True
            raise RequestRefused(exc.error_status_hint, _describe(exc)) from exc
        kind = type(event)
        if kind is h11.Data:
            data: bytes = event.data  # type: ignore[union-attr]
            if self._body_limit is not None:
                self._body_received += len(data)
                if self._body_received > self._body_limit:
                    self._closing = True
                    raise RequestRefused(413, "Request body too large.")
            return BodyChunk(data)
        if kind is h11.EndOfMessage:
            return END_OF_BODY
        if kind is h11.Request:
            return self._check_request(event, raw_head)  # type: ignore[arg-type]
        if kind is h11.ConnectionClosed:
            return CLIENT_CLOSED
        return NEED_DATA  # NEED_DATA or PAUSED

    def _check_request(self, request: h11.Request, raw_head: bytes) -> RequestHead:
        self._head_request = request.method == b"HEAD"
        self._body_received = 0
        # Where h11 ends the head: the first blank line (LF, optional CR, LF).
        end = _HEAD_END.search(raw_head)
        head = raw_head if end is None else raw_head[: end.start()]
        # Every refusal below ends the connection.
        self._closing = True
        if len(head) > self._max_header_size:
            # h11 enforces its limit only on a head that arrives in pieces; this is the rest.
            raise RequestRefused(431, "Request header fields too large.")
        if self._max_headers is not None and len(request.headers) > self._max_headers:
            raise RequestRefused(431, "Too many request header fields.")
        if _FORBIDDEN_IN_HEAD.search(head):
            raise RequestRefused(400, "Malformed request: control character or folded header line.")
        version = _HTTP_VERSIONS.get(request.http_version)
        if version is None:
            raise RequestRefused(505, "Only HTTP/1.0 and HTTP/1.1 are supported.")
        content_length: int | None = None
        has_transfer_encoding = False
        client_closes = False
        self.trailers_accepted = False
        for name, value in request.headers:
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
            elif name == b"connection":
                client_closes = client_closes or b"close" in value.lower()
            elif name == b"upgrade" and value.lower() == b"websocket":
                self.websocket = request.method == b"GET"
            elif name == b"te" and b"trailers" in _TE_TOKENS.findall(value.lower()):
                self.trailers_accepted = True
        # No framing header, no body: the request ended with its head. Knowing that here spares
        # the event loop a round through h11 for the empty end of every GET.
        self._bodyless = not has_transfer_encoding and not content_length
        # HTTP/1.0 clients get one response per connection (as h11 has it): no keep-alive.
        self._client_http11 = version == "1.1"
        self._client_closes = client_closes or not self._client_http11
        if content_length is not None:
            if has_transfer_encoding:
                raise RequestRefused(
                    400, "Content-Length and Transfer-Encoding must not be combined."
                )
            if _count_content_length(head) != 1:
                raise RequestRefused(400, "Repeated Content-Length headers.")
            if self._body_limit is not None and content_length > self._body_limit:
                raise RequestRefused(413, "Request body too large.")
        if request.method == b"CONNECT":
            raise RequestRefused(405, "CONNECT is not supported: this is not a proxy.")
        self._closing = False
        return RequestHead(request.method, request.target, version, request.headers)

    def drain_body(self) -> bool | None:
        """Read and discard what is buffered of a request body that the app did not read.

        Up to :data:`DRAIN_BYTES` per request are drained to keep the connection alive.

        Returns:
            ``True``: the request is complete; ``False``: give up (over the budget, or a
            malformed body); ``None``: feed more bytes and call again.
        """
        while not self.request_complete:
            try:
                event = self.next_event()
            except RequestRefused:
                return False
            if type(event) is BodyChunk:
                self._discarded += len(event.data)
                if self._discarded > DRAIN_BYTES:
                    return False
            elif event is NEED_DATA:
                return None
            elif event is not END_OF_BODY:
                return False
        return True

    # -- sending -----------------------------------------------------------------------------

    def continue_response(self) -> bytes:
        """``100 Continue`` when the client waits for it and no response has started; else b"".

        Called when the app first reads the body: the interim response is sent lazily, so
        an app that answers without reading never invites the body.
        """
        conn = self._conn
        if conn is None or not conn.they_are_waiting_for_100_continue:
            return b""
        if self._framing is not _NOT_STARTED:
            return b""
        return conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""

    def close_after_response(self) -> None:
        """Make the current response the connection's last (it says ``Connection: close``)."""
        self._closing = True

    @property
    def will_close(self) -> bool:
        """Whether the connection ends after the current response."""
        return self._closing

    def send_response(
        self,
        status: int,
        headers: Iterable[Sequence[bytes]],
        *,
        body_length: int | None = None,
        length_is_resource_size: bool = False,
    ) -> bytes:
        """The response head; body bytes follow through :meth:`send_data`.

        Picks the framing: the app's Content-Length, else ``body_length`` when the whole body
        is known (it adds a Content-Length), else chunked for HTTP/1.1 clients, else (HTTP/1.0)
        the end of the connection; and no body at all for HEAD, 204 and 304. When
        ``length_is_resource_size`` (a file's size), a HEAD response carries that Content-Length
        too, as the GET response would.

        Raises:
            ResponseError: the status or headers are invalid.
        """
        if self._framing is not _NOT_STARTED:
            raise ResponseError("the response has already started")
        if type(status) is not int or not 200 <= status <= 599:
            raise ResponseError(f"invalid status for a final response: {status!r}")
        lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status]
        if self._date is not None:
            lines.append(b"date: " + self._date() + b"\r\n")
        if self._server is not None:
            lines.append(self._server)
        length: int | None = None
        chunked = said_close = False
        for name, value in headers:
            if type(name) is not bytes or type(value) is not bytes:
                name, value = _as_bytes(name), _as_bytes(value)
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise ResponseError(f"invalid response header {name!r}: {value!r}")
            lowered = name.lower()
            if lowered == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ResponseError(f"invalid Content-Length: {value!r}")
                length = int(value)
            elif lowered == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise ResponseError(f"unsupported Transfer-Encoding: {value!r}")
                chunked = True
                continue  # added back below when the framing really is chunked
            elif lowered == b"connection" and b"close" in value.lower():
                self._closing = said_close = True
            lines.append(name + b": " + value + b"\r\n")
        if length is not None and chunked:
            raise ResponseError("both Content-Length and Transfer-Encoding in the response")
        if self._head_request or status in _NO_BODY_STATUSES:
            self._framing = _NO_BODY
            if (
                length_is_resource_size
                and body_length is not None
                and length is None
                and not chunked
                and status not in _NO_BODY_STATUSES
            ):
                lines.append(b"content-length: %d\r\n" % body_length)
        elif length is not None:
            self._framing = _LENGTH
            self._remaining = length
        elif body_length is not None and not chunked:
            self._framing = _LENGTH
            self._remaining = body_length
            lines.append(b"content-length: %d\r\n" % body_length)
        elif self._client_http11:
            self._framing = _CHUNKED
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            self._framing = _UNTIL_CLOSE
            self._closing = True
        if (
            self._client_closes
            or self._conn is None
            or (not self.request_complete and self.waiting_for_100_continue)
        ):
            # The client asked to close, or it still holds back a body we never asked for.
            self._closing = True
        if self._closing and not said_close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send_data(self, data: bytes) -> bytes:
        """A piece of the response body, framed (for chunked responses) as needed.

        Raises:
            ResponseError: more bytes than the declared Content-Length.
        """
        framing = self._framing
        if framing is _LENGTH:
            self._remaining -= len(data)
            if self._remaining < 0:
                raise ResponseError("response body longer than its Content-Length")
            return data
        if framing is _CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if framing is _UNTIL_CLOSE:
            return data
        if framing is _NO_BODY:
            return b""
        raise ResponseError("response body before the response head")

    def send_data_passthrough(self, data: Sized) -> list[object]:
        """Like :meth:`send_data` for a body piece that is not bytes (a file range for sendfile).

        ``data`` needs only ``len()``; it is returned in place among the framing bytes.
        """
        framing = self._framing
        if framing is _NO_BODY or not len(data):
            return []
        if framing is _CHUNKED:
            return [b"%x\r\n" % len(data), data, b"\r\n"]
        if framing is _LENGTH:
            self._remaining -= len(data)
            if self._remaining < 0:
                raise ResponseError("response body longer than its Content-Length")
        elif framing is not _UNTIL_CLOSE:
            raise ResponseError("response body before the response head")
        return [data]

    def send_end(self, trailers: Iterable[Sequence[bytes]] = ()) -> bytes:
        """The end of the response body, with ``trailers`` as trailer fields where they can go
        (a chunked body, to a client that said ``TE: trailers``; elsewhere they are dropped).

        Raises:
            ResponseError: fewer bytes than the declared Content-Length were sent, or an
                invalid trailer field.
        """
        framing = self._framing
        if framing is _LENGTH and self._remaining:
            raise ResponseError(
                f"response body shorter than its Content-Length ({self._remaining} missing)"
            )
        if framing is _NOT_STARTED or framing is _COMPLETE:
            raise ResponseError("end of a response that was not started")
        self._framing = _COMPLETE
        if framing is not _CHUNKED:
            return b""
        if not self.trailers_accepted:
            return b"0\r\n\r\n"
        lines = [b"0\r\n"]
        for name, value in trailers:
            if type(name) is not bytes or type(value) is not bytes:
                name, value = _as_bytes(name), _as_bytes(value)
            if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                raise ResponseError(f"invalid trailer field {name!r}: {value!r}")
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def error_response(self, status: int, reason: str) -> bytes:
        """A complete plain-text error response that ends the connection (any state)."""
        self._closing = True
        self._framing = _COMPLETE
        return error_response(
            status,
            reason,
            head_only=self._head_request,
            date=self._date,
            server=None if self._server is None else self._server[8:-2],
        )

    @property
    def head_request(self) -> bool:
        """Whether the current request is a HEAD request."""
        return self._head_request

    @property
    def response_started(self) -> bool:
        """Whether the current response's head has been produced."""
        return self._framing is not _NOT_STARTED

    @property
    def discards_body(self) -> bool:
        """Whether the current response must carry no body (HEAD, 204, 304)."""
        return self._framing is _NO_BODY

    @property
    def request_complete(self) -> bool:
        """Whether the whole current request, body included, has been received."""
        if self._bodyless:
            return True
        conn = self._conn
        return conn is not None and conn.their_state in _REQUEST_COMPLETE_STATES

    @property
    def request_bodyless(self) -> bool:
        """Whether the current request has no body at all (it ended with its head)."""
        return self._bodyless

    @property
    def response_complete(self) -> bool:
        """Whether the current response has been sent completely."""
        return self._framing is _COMPLETE

    def start_next_cycle(self) -> bool:
        """Get ready for the next request on this connection.

        h11 parses the requests; responses are framed here, so each request/response cycle
        gets a fresh ``h11.Connection`` that inherits the bytes already received.

        Returns:
            ``True`` if the connection can be kept alive, ``False`` if it must close.
        """
        conn = self._conn
        if (
            self._closing
            or self._framing is not _COMPLETE
            or conn is None
            or not (self._bodyless or conn.their_state in _NEXT_CYCLE_STATES)
        ):
            return False
        data, closed = conn.trailing_data
        self._conn = None
        if data:
            self.receive_data(data)
        if closed:
            self.receive_data(b"")
        self._head_request = False
        self.websocket = False
        self._bodyless = False
        self._discarded = 0
        self._framing = _NOT_STARTED
        return True


class ResponseError(RuntimeError):
    """The app's response cannot be sent as it is (bad status or header, wrong length)."""


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1")
    raise ResponseError(f"header names and values must be bytes, not {type(value).__name__}")


def _count_content_length(head: bytes) -> int:
    """How many Content-Length field lines (and list members) a raw request head holds."""
    count = 0
    for line in head.lower().split(b"\n")[1:]:
        if line.startswith(b"content-length:"):
            count += line.count(b",") + 1
    return count


def _describe(exc: h11.RemoteProtocolError) -> str:
    status = exc.error_status_hint
    if status == 431:
        return "Request header fields too large."
    if status == 501:
        return "Unsupported Transfer-Encoding: only chunked is implemented."
    return f"Malformed request: {exc}."
