"""Sans-IO HTTP/1.1 for one server connection, on top of h11.

Theory of operation
-------------------
h11 parses the requests; this module (with ``_fast.py``, the only ones that import h11) adds
what a server needs, frames the responses itself, and does no I/O: bytes go in through
``receive_data``, the neutral events of ``_http/_events.py`` come out of ``next_event``, every
``send_*`` method returns the bytes to write. The connection task (``_connection.py``) owns the
socket; the clock (``Date``) is passed in.

``_fast.py`` subclasses it (``FastProtocol``, ``--http-parser httptools``): plain requests parsed
by httptools, the same rules (``_check_request``), and h11 here for anything else.

What it adds to h11, all of it policy that h11 leaves to the server:

* A refused request raises :class:`RequestRefused` (the status to answer, then close).
* Connection policy: when to close after a response (:meth:`ServerProtocol.close_after_response`,
  :attr:`ServerProtocol.will_close`), how many bytes of pipelined requests to hold while a
  response is pending (:meth:`ServerProtocol.receive_pipelined`), how much of an unread body to
  drain to keep the connection (:meth:`ServerProtocol.drain_body`), and when ``100 Continue`` is
  due (:meth:`ServerProtocol.continue_response`).
* Stricter parsing than h11 (the checks live in ``_strict.py``): Content-Length with
  Transfer-Encoding, repeated Content-Length headers, a Host that is not ``host[:port]``
  (RFC 9112 section 3.2), a ``#fragment``, control characters in the head or in chunk lines
  and trailers are 400; a request line over the head limit is 414; HTTP/1.2 and later 1.x are
  served as 1.1 (RFC 9112 section 2.3), other majors get 505; CONNECT is 405; TLS or HTTP/2
  sent to this plain port gets a 400 that says so.
* The body limit: a declared Content-Length over ``max_body_size`` is refused up front (413,
  without reading the body); a chunked body as soon as a chunk-size line takes it over.
* Responses are framed here, not by h11 (which validated every header twice, at about the cost
  of parsing the request), by a writer per framing (``_writers.py``). As h11 cannot be told
  about a response it did not frame, each request/response cycle gets a fresh
  ``h11.Connection`` that inherits the bytes already received (see ``start_next_cycle``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

import h11

from .._errors import RequestRefused
from .._http._authority import valid_host
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
from ._responding import ResponseSide
from ._strict import (
    H2_PREFACE,
    HTTP_VERSIONS,
    NUMBER_SIGN,
    SNIFF_LENGTH,
    ChunkedFraming,
    check_content_length,
    check_head,
    parse_refusal,
    sniff,
    split_head,
)
from ._writers import (
    COMPLETE,
    NOT_STARTED,
    BodyWriter,
    ResponseError,
    error_response,
)

__all__ = [
    "CLOSE",
    "DRAIN_BYTES",
    "NEXT",
    "NEXT_BUFFERED",
    "PIPELINE_DISCARD_BYTES",
    "ResponseError",
    "ServerProtocol",
    "error_response",
]

# HTTP_VERSIONS.get, bound once: a method of an imported name is looked up the slow way on every
# call (Python 3.11 does not compile ``imported.method()`` as a method call).
_version_of: Final = HTTP_VERSIONS.get

# The client's states after a request that allow another one, and all those once its request
# has arrived (MIGHT_SWITCH_PROTOCOL: it asked for an Upgrade, which this server never grants).
_NEXT_CYCLE_STATES: Final = (h11.DONE, h11.MIGHT_SWITCH_PROTOCOL)  # type: ignore[attr-defined]

# Bytes of an unread request body the server reads and discards to keep the connection alive:
# enough for a typical form or small upload that an app chose not to read, small enough that a
# client cannot make us read a large upload for nothing.
DRAIN_BYTES: Final = 256 * 1024
# Once a response is the connection's last, bytes of pipelined requests behind it are read and
# dropped (so that the client's close is seen) up to this many; a client that keeps sending
# past it is flooding us and gets closed.
PIPELINE_DISCARD_BYTES: Final = 1024 * 1024
# What start_next_cycle() says: close; or serve the next request, of which nothing has arrived
# yet (its wait can skip asking the parser), or some has.
CLOSE: Final = 0
NEXT: Final = 1
NEXT_BUFFERED: Final = 2
# The tokens of a TE header value (a transfer coding, or "trailers"), parameters left out.
_TE_TOKENS: Final = re.compile(rb"(?:^|,)\s*([!#$%&'*+.^_`|~0-9a-z-]+)")
# The header fields the server's rules read (_check_request) besides Host (compared first: every
# request has one): any other name is passed over with one set lookup instead of a comparison
# with each of these (most of a browser's fields are others).
_RULED_FIELDS: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"te"}
)


class ServerProtocol(ResponseSide):
    """The HTTP/1.1 state of one server connection: bytes in, events out, bytes to write.

    Args:
        max_header_size: Bytes allowed for a request line plus headers (431 beyond; 414 when
            the request line alone is over).
        max_body_size: Bytes allowed for a request body (413 beyond), or ``None``.
        max_headers: Header fields allowed in a request (431 beyond), or ``None``.
        server_header: Value of the ``Server`` header, or ``None`` to send none.
        date: Returns the ``Date`` header's value; ``None`` to send no ``Date`` header.
        h2c: Whether a connection that opens with the HTTP/2 preface is handed over to HTTP/2
            (``next_event()`` says ``HTTP2_PREFACE``); otherwise it gets a 400.
    """

    __slots__ = (
        "_body_limit",
        "_chunks",
        "_client_closes",
        "_client_http11",
        "_conn",
        "_date",
        "_discarded",
        "_h2c",
        "_head_request",
        "_max_header_size",
        "_max_headers",
        "_refused",
        "_server",
        "_sniffed",
        "_valid_host",
        "head",
        "request_bodyless",
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
        self._server = None if server_header is None else b"server: " + server_header + b"\r\n"
        self._date = date
        self._sniffed = b""
        self._valid_host = b""
        self._refused: RequestRefused | None = None
        # How the current response's body is framed; NOT_STARTED until its head is produced.
        self._writer: BodyWriter = NOT_STARTED
        # The current request's chunked framing, followed in the raw bytes to check it.
        self._chunks: ChunkedFraming | None = None
        self._discarded = 0
        self._client_http11 = True
        self._client_closes = False
        self.will_close = False  # (documented on ResponseSide)
        self._head_request = False
        #: Whether the current request has no body at all (no Content-Length, no chunking).
        self.request_bodyless = False
        #: Whether the current request asks to become a websocket.
        self.websocket = False
        #: The current request's head, once its request line and headers have arrived (also when
        #: they are refused, so that the refusal is logged with what was asked).
        self.head: RequestHead | None = None
        #: Whether the current request said ``TE: trailers`` (trailer fields may be sent).
        self.trailers_accepted = False

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the client; ``b""`` means the client closed its side."""
        if len(self._sniffed) < SNIFF_LENGTH:
            try:
                self._sniffed = sniff(self._sniffed, data, h2c=self._h2c)
            except RequestRefused as exc:
                self._refused = self._refused or exc
                raise
        self._feed(data)

    def receive_next(self, data: bytes | bytearray) -> Event:
        """:meth:`receive_data` then :meth:`next_event`, in one call: bytes a connection read
        while it waited for a request (the fast path overrides this)."""
        self.receive_data(data)
        return self.next_event()

    def _feed(self, data: bytes | bytearray) -> None:
        """Hand received bytes to the parser (the httptools path overrides this)."""
        conn = self._conn
        if conn is None:
            conn = self._conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._max_header_size
            )
        conn.receive_data(data)  # type: ignore[arg-type]  # bytearray works too
        if self._chunks is not None:
            self._chunks.feed(data)

    def _has_request(self) -> bool:
        """Whether any bytes of the current cycle's request have been received."""
        return self._conn is not None

    def receive_pipelined(self, data: bytes | bytearray) -> bool:
        """Feed bytes that arrived while a response is pending (the next pipelined requests).

        Kept for after the response up to ``max_header_size`` bytes; past that the response is
        the connection's last (a pipelining client retries what goes unanswered) and further
        bytes are dropped, up to :data:`PIPELINE_DISCARD_BYTES`.

        Returns:
            Whether to keep reading (``False``: the client floods us; close).
        """
        if self.will_close:
            self._discarded += len(data)
            return self._discarded <= PIPELINE_DISCARD_BYTES
        if self.buffered_size + len(data) > self._max_header_size:
            self.will_close = True
            self._discarded = len(data)
            return True
        self.receive_data(data)
        return True

    @property
    def http2_preface(self) -> bool:
        """Whether the client opened with the HTTP/2 preface (and ``h2c`` hands it over)."""
        return self._sniffed is H2_PREFACE

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
        if self._refused is not None:
            # After a refusal nothing more comes out: not even a valid request behind it.
            raise self._refused
        if self._sniffed is H2_PREFACE:
            return HTTP2_PREFACE
        try:
            chunks = self._chunks
            if chunks is not None and chunks.refusal is not None:
                raise chunks.refusal
            raw_head = conn.trailing_data[0] if conn.their_state is h11.IDLE else b""
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status, limit = exc.error_status_hint, self._max_header_size
                raise parse_refusal(status, str(exc), raw_head, limit) from exc
            kind = type(event)
            if kind is h11.Data:
                # Nothing to count: a Content-Length over the limit is refused with the head,
                # a chunked body by the chunk-size line that takes it over (ChunkedFraming).
                # h11 hands out a bytearray: the app gets bytes, as ASGI says.
                data = event.data  # type: ignore[union-attr]
                return BodyChunk(data if type(data) is bytes else bytes(data))
            if kind is h11.EndOfMessage:
                return END_OF_BODY
            if kind is h11.Request:
                request: h11.Request = event  # type: ignore[assignment]
                head, body_start = split_head(raw_head)
                return self._check_request(
                    request.method,
                    request.target,
                    request.http_version,
                    request.headers,
                    head,
                    raw_head[body_start:],
                )
            if kind is h11.ConnectionClosed:
                return CLIENT_CLOSED
            return NEED_DATA  # NEED_DATA or PAUSED
        except RequestRefused as exc:
            self.will_close = True
            self._refused = exc
            raise

    def _check_request(
        self,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        head: bytes,
        body_received: bytes,
        *,
        characters: bool = True,
    ) -> RequestHead:
        """The server's rules on a parsed request head (both parsers run them).

        Args:
            head: The request line and header lines as received (no blank line).
            body_received: What came after the head in the same bytes.
            characters: Whether the head may still hold control characters (see
                :func:`check_head`).
        """
        version = _version_of(http_version)
        self.head = RequestHead(method, target, version or http_version.decode("latin-1"), headers)
        self._head_request = method == b"HEAD"
        if characters or len(head) > self._max_header_size or NUMBER_SIGN in target:
            # (Called only where it may refuse the head: a call fewer per plain request.)
            check_head(head, target, self._max_header_size, characters=characters)
        if self._max_headers is not None and len(headers) > self._max_headers:
            raise RequestRefused(431, "Too many request header fields.")
        if version is None:
            raise RequestRefused(505, "Only HTTP/1.x is supported.")
        content_length: int | None = None
        has_transfer_encoding = False
        client_closes = False
        hosts = 0
        self.trailers_accepted = False
        for name, value in headers:
            if name == b"host":
                hosts += 1
                if value != self._valid_host:
                    if not valid_host(value):
                        raise RequestRefused(400, "Malformed Host header.")
                    self._valid_host = value  # the next request most likely names it too
            elif name not in _RULED_FIELDS:
                continue
            elif name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding":
                has_transfer_encoding = True
            elif name == b"connection":
                # (find, not ``in``: see _strict.NUMBER_SIGN)
                client_closes = client_closes or value.lower().find(b"close") >= 0
            elif name == b"upgrade" and value.lower() == b"websocket":
                self.websocket = method == b"GET"
            elif name == b"te" and b"trailers" in _TE_TOKENS.findall(value.lower()):
                self.trailers_accepted = True
        # HTTP/1.0 clients get one response per connection (as h11 has it): no keep-alive.
        self._client_http11 = version == "1.1"
        # RFC 9112 section 3.2: exactly one Host in HTTP/1.1 (h11 checks only "1.1" itself).
        if hosts > 1 or (hosts == 0 and self._client_http11):
            raise RequestRefused(400, "An HTTP/1.1 request needs exactly one Host header.")
        # No framing header, no body: the request ended with its head. Knowing that here spares
        # the event loop a round through h11 for the empty end of every GET.
        self.request_bodyless = not has_transfer_encoding and not content_length
        self._client_closes = client_closes or not self._client_http11
        if content_length is not None:
            check_content_length(head, content_length, has_transfer_encoding, self._body_limit)
        if method == b"CONNECT":
            raise RequestRefused(405, "CONNECT is not supported: this is not a proxy.")
        if has_transfer_encoding:
            # h11 refused any coding but chunked: follow the chunked framing from the bytes
            # that came with the head (its refusal, if any, comes out of next_event).
            chunks = self._chunks = ChunkedFraming(
                max_body_size=self._body_limit, max_line=self._max_header_size
            )
            chunks.feed(body_received)
        return self.head

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

    @property
    def response_complete(self) -> bool:
        """Whether the current response has been sent completely."""
        return self._writer is COMPLETE

    def start_next_cycle(self) -> int:
        """Get ready for the next request on this connection.

        h11 parses the requests; responses are framed here, so each request/response cycle
        gets a fresh ``h11.Connection`` that inherits the bytes already received.

        Returns:
            :data:`CLOSE` (false) if the connection must close; else :data:`NEXT` when nothing
            of the next request has arrived yet (``next_event()`` would say ``NEED_DATA``),
            :data:`NEXT_BUFFERED` when some has.
        """
        conn = self._conn
        chunks = self._chunks
        if (
            self.will_close
            or self._writer is not COMPLETE
            or conn is None
            or not (self.request_bodyless or conn.their_state in _NEXT_CYCLE_STATES)
            or (chunks is not None and chunks.refusal is not None)
        ):
            return CLOSE
        data, closed = conn.trailing_data
        self._conn = None
        self._chunks = None
        if data:
            self.receive_data(data)
        if closed:
            self.receive_data(b"")
        self._reset_cycle()
        return NEXT_BUFFERED if data or closed else NEXT

    def _reset_cycle(self) -> None:
        """Forget the finished request/response cycle's state."""
        self._head_request = False
        self.websocket = False
        self.head = None
        self.request_bodyless = False
        self._discarded = 0
        self._writer = NOT_STARTED
