"""HTTP/1.1 request parsing without h11 for the plain request: the fast path (httptools, or pure
Python).

Theory of operation
-------------------
:class:`FastProtocol` is a :class:`~._protocol.ServerProtocol` (the same interface, events and
response framing; ``_connection.py`` and ``_exchange.py`` cannot tell them apart) that parses
the common request in C: a complete head with CRLF line ends and a body that is absent or
framed by one Content-Length. It is exactly as strict as the h11 path by construction:

1. The head must match h11's own grammar (the request line and header field patterns of
   ``h11._abnf``, reused, joined by CRLF): what h11 would not parse the same way never takes
   the fast path.
2. httptools splits the header fields. Where it refuses something h11 accepts (llhttp knows a
   fixed set of methods, for one) the request takes the h11 path. :class:`PythonProtocol`
   splits them in Python instead (each line at its first colon, as h11's pattern reads it):
   the default (``auto``), and faster (see :func:`protocol_class`).
3. The server's own rules (``_check_request`` with the ``_strict.py`` checks: control
   characters, fragments, 414/431, Host validity, 505, CONNECT, Content-Length rules, the body
   limit) run on what was parsed, the very same code as on the h11 path.
4. Anything else goes to h11 for the rest of the request/response cycle ("falls back"): a
   chunked body or any Transfer-Encoding, a repeated or odd Content-Length, a missing or
   repeated Host, a version other than 1.0 and 1.1, LF-only line ends or a leading empty line,
   a head that outgrows the limit before it ends, a client that closes mid-head. The h11 path
   then refuses or accepts it exactly as it always has; the next cycle is parsed fast again.

So every refusal that needs judgement is h11's or ``_strict.py``'s; this module only decides
when a request is plain enough to skip h11, and frames a Content-Length body as h11 would
(``BodyChunk`` of what is buffered, up to the declared length, then ``END_OF_BODY``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

import h11
from h11._abnf import OWS, field_name, header_field, request_line, vchar_or_obs_text

from .._errors import RequestRefused
from .._http._date import http_date
from .._http._events import (
    CLIENT_CLOSED,
    END_OF_BODY,
    HTTP2_PREFACE,
    NEED_DATA,
    BodyChunk,
    Event,
)
from ._protocol import CLOSE, NEXT, NEXT_BUFFERED, ServerProtocol
from ._strict import H2_PREFACE, SNIFF_LENGTH, parse_refusal
from ._writers import COMPLETE, NOT_STARTED

try:
    import httptools
except ImportError:  # pragma: no cover - the speedups extra is not installed
    httptools = None  # type: ignore[assignment]

__all__ = [
    "COMPILED",
    "HTTPTOOLS_AVAILABLE",
    "FastProtocol",
    "PythonProtocol",
    "protocol_class",
]

#: Whether the httptools parser can be used (``pip install 'trioserve[speedups]'``).
HTTPTOOLS_AVAILABLE: Final = httptools is not None
#: Whether this module (and with it the HTTP/1.1 request path) runs compiled by mypyc
#: (``scripts/compile.py``, or a wheel built with ``TRIOSERVE_COMPILE=1``).
COMPILED: Final = not __file__.endswith((".py", ".pyc"))

# h11 ends a head at the first LF, optional CR, LF; the fast path takes only CRLF CRLF.
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
# A head h11 parses line by line, as one pattern over CRLF-ended lines: h11's request line, and
# its header field in a form that matches the same lines, with one difference. h11 lets a field
# value hold control characters (its ``field_vchar`` is anything but NUL and whitespace), which
# the server's rules then refuse (``check_head``); here a field value's characters are the
# visible ones and obs-text only, so a head that matches needs no search for control characters,
# and one that holds any takes the h11 path and is refused there.
#
# h11 spells a field as a name, a colon, optional whitespace, runs of visible characters
# separated by spaces and tabs, and optional whitespace: that is exactly a name, a colon, and
# any string of spaces, tabs and visible characters (strip the whitespace at both ends and what
# is left starts and ends with a visible character). The second form is one character class
# where h11's nests repetitions that the regular expression engine backtracks through: matching
# a ten-field head takes 1.5 instead of 6.4 us. It is used only if this h11 spells its field as
# described (else h11's own pattern, with the visible characters swapped, and the search for
# control characters stays on).
_FIELD_VCHAR: Final = rb"[\x21-\x7e\x80-\xff]"
_H11_FIELD: Final = header_field.encode("ascii")
_RUNS: Final = f"{vchar_or_obs_text}+(?:[ \\t]+{vchar_or_obs_text}+)*"
_H11_FIELD_AS_DESCRIBED: Final = (
    f"(?P<field_name>{field_name}):{OWS}(?P<field_value>({_RUNS})?){OWS}" == header_field
    and OWS == r"[ \t]*"
    # Anything but NUL and whitespace: then every visible and obs-text byte is one of h11's
    # (ours accepts no value h11 refuses; the control characters h11 takes are ours to refuse).
    and vchar_or_obs_text == r"[^\x00\s]"
)
_STRICT_FIELD: Final = (
    field_name.encode("ascii") + rb":[\t\x20-\x7e\x80-\xff]*"
    if _H11_FIELD_AS_DESCRIBED
    else _H11_FIELD.replace(vchar_or_obs_text.encode("ascii"), _FIELD_VCHAR)
)
#: Whether field values exclude control characters (h11's field was recognised, or the swap in
#: its own pattern took): only then may a matching head skip the search for them.
FIELDS_WITHOUT_CONTROLS: Final = _STRICT_FIELD != _H11_FIELD
_HEAD: Final = re.compile(b"%s(?:\r\n%s)*\r\n\r\n" % (request_line.encode("ascii"), _STRICT_FIELD))
# h11 reads Content-Length as [0-9]+ of at most 20 digits; longer ones take the h11 path.
_LENGTH: Final = re.compile(rb"[0-9]{1,18}")
_FAST_VERSIONS: Final = (b"1.1", b"1.0")
# The fields that decide the framing here, besides Host (compared first: every request has one):
# any other name is passed over with one set lookup.
_FRAMING_FIELDS: Final = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# What h11 sends for InformationalResponse(100) with no headers.
_CONTINUE: Final = b"HTTP/1.1 100 \r\n\r\n"

# Where the current cycle is, on the fast path.
_IDLE: Final = 0  # waiting for (the rest of) a head
_BODY: Final = 1  # head parsed; _left body bytes to come, then END_OF_BODY
_DONE: Final = 2  # END_OF_BODY given


class _Fields:
    """httptools' callback target: collects the header fields of one head."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # h11 lowercases names and strips the optional whitespace around a value.
        self.fields.append((name.lower(), value.strip(b" \t")))


class _FallBack(Exception):
    """The request is not plain enough for the fast path: h11 parses this cycle."""


class FastProtocol(ServerProtocol):
    """:class:`ServerProtocol` with the plain request parsed by httptools (same arguments).

    While ``_conn`` (an ``h11.Connection``) is set, the current cycle is h11's and every
    method is the base class's; otherwise the received bytes wait in ``_buf``.
    """

    # Whether this class splits header fields with httptools (PythonProtocol does not).
    _needs_httptools = True

    __slots__ = (
        "_buf",
        "_eof",
        "_expect",
        "_left",
        "_length",
        "_received",
        "_scanned",
        "_stage",
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
        if self._needs_httptools and httptools is None:
            raise RuntimeError("httptools is not installed: pip install 'trioserve[speedups]'")
        super().__init__(
            max_header_size=max_header_size,
            max_body_size=max_body_size,
            max_headers=max_headers,
            server_header=server_header,
            date=date,
            h2c=h2c,
        )
        self._buf = b""
        self._eof = False
        self._received = False
        self._stage = _IDLE
        self._left = self._length = 0
        self._expect = False
        self._scanned = 0

    # -- receiving ---------------------------------------------------------------------------

    def _feed(self, data: bytes | bytearray) -> None:
        if self._conn is not None:
            super()._feed(data)
            return
        self._received = True
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = bytes(data)

    def _has_request(self) -> bool:
        return self._conn is not None or self._received

    def receive_next(self, data: bytes | bytearray) -> Event:
        if (
            not self._received
            and self._conn is None
            and type(data) is bytes
            and len(self._sniffed) >= SNIFF_LENGTH
        ):
            # A cycle's first bytes, the common case: _feed's work, without receive_data's and
            # _feed's two calls (two of the fifty or so a keep-alive request makes).
            self._received = True
            if data:
                self._buf = data
            else:
                self._eof = True
            return self.next_event()
        self.receive_data(data)
        return self.next_event()

    @property
    def has_buffered_data(self) -> bool:
        if self._conn is not None:
            return bool(self._conn.trailing_data[0])
        return bool(self._buf)

    def take_buffered(self) -> bytes:
        if self._conn is not None:
            return super().take_buffered()
        return self._buf

    @property
    def buffered_size(self) -> int:
        if self._conn is not None:
            return len(self._conn.trailing_data[0])
        return len(self._buf)

    @property
    def waiting_for_100_continue(self) -> bool:
        if self._conn is not None:
            return bool(self._conn.they_are_waiting_for_100_continue)
        return self._expect

    def next_event(self) -> Event:
        if self._conn is not None:
            return super().next_event()
        if not self._received:
            return NEED_DATA  # (as the base class says with no h11 connection)
        if self._refused is not None:
            raise self._refused
        if self._sniffed is H2_PREFACE:
            return HTTP2_PREFACE
        stage = self._stage
        if stage == _BODY:
            return self._body_event()
        if stage == _DONE:
            return NEED_DATA
        buf = self._buf
        if not buf:
            return CLIENT_CLOSED if self._eof else NEED_DATA
        try:
            return self._head_event(buf)
        except _FallBack:
            conn = self._conn = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self._max_header_size
            )
            conn.receive_data(buf)
            if self._eof:
                conn.receive_data(b"")
            self._buf = b""
            return super().next_event()
        except RequestRefused as exc:
            self.will_close = True
            self._refused = exc
            raise

    def _head_event(self, buf: bytes) -> Event:
        # The common case first: the bytes end with a blank line, and are one whole head that
        # matches (the grammar's lines hold no LF, so a match ends at the first blank line, as
        # h11's head does). Only bytes that end so are matched from the start: a head that
        # arrives a byte at a time is not scanned again and again.
        match = _HEAD.match(buf) if buf.endswith(b"\r\n\r\n") else None
        if match is not None:
            end = match.end()
            self._scanned = 0
        else:
            if buf[0] < 0x21:
                # A leading empty line, space or control character: h11 refuses it at once.
                raise _FallBack
            # Only the bytes not searched yet (less the two that may start a blank line), as
            # h11 does.
            blank = _BLANK_LINE.search(buf, self._scanned)
            if blank is None:
                if self._eof or len(buf) > self._max_header_size:
                    raise _FallBack  # h11 says how it ends (431, 414, 400)
                self._scanned = max(0, len(buf) - 2)
                return NEED_DATA
            self._scanned = 0
            end = blank.end()
            if end - blank.start() != 3 or buf[blank.start() - 1] != 13:
                raise _FallBack  # LF-only line ends
            match = _HEAD.fullmatch(buf, 0, end)
            if match is None:
                raise _FallBack
        method, target, version = match.group("method", "target", "http_version")
        if version not in _FAST_VERSIONS:
            raise _FallBack
        raw = buf[:end]
        fields = self._split_fields(raw)
        length = 0
        seen_length = False
        hosts = 0
        expect = False
        for name, value in fields:
            if name == b"host":
                hosts += 1
            elif name not in _FRAMING_FIELDS:
                continue
            elif name == b"content-length":
                if seen_length or _LENGTH.fullmatch(value) is None:
                    raise _FallBack
                seen_length = True
                length = int(value)
            elif name == b"transfer-encoding":
                raise _FallBack
            elif name == b"expect":
                # As h11: any comma-separated element, case-insensitive, HTTP/1.1 only.
                expect = expect or any(
                    part.strip().lower() == b"100-continue" for part in value.split(b",")
                )
        if hosts > 1 or (hosts == 0 and version == b"1.1"):
            raise _FallBack  # h11's own refusal, word for word
        # The head is consumed and its state set before the server's rules, as h11 has done
        # by the time they run on its Request.
        self._buf = buf[end:]
        self._stage = _BODY
        self._left = self._length = length
        self._expect = expect and version == b"1.1"
        # No control characters: _HEAD's field values exclude them (and the request line's
        # pieces always did). Nothing of a body needs the rules here (no Transfer-Encoding).
        return self._check_request(
            method,
            target,
            version,
            fields,
            buf[: end - 4],
            b"",
            characters=not FIELDS_WITHOUT_CONTROLS,
        )

    def _split_fields(self, raw: bytes) -> list[tuple[bytes, bytes]]:
        """The header fields of ``raw``, a head that matched h11's grammar (``_HEAD``), as h11
        gives them (lowercased names, values stripped of optional whitespace).

        Raises:
            _FallBack: httptools refuses the head (h11 then parses it).
        """
        collector = _Fields()
        assert httptools is not None
        try:
            httptools.HttpRequestParser(collector).feed_data(raw)
        except httptools.HttpParserUpgrade:
            pass  # Upgrade or CONNECT: the head is parsed; the server's rules decide
        except httptools.HttpParserError:
            raise _FallBack from None
        return collector.fields

    def _body_event(self) -> Event:
        left = self._left
        if not left:
            self._stage = _DONE
            self._expect = False
            return END_OF_BODY
        buf = self._buf
        if buf:
            if len(buf) <= left:
                self._buf = b""
            else:
                buf, self._buf = buf[:left], buf[left:]
            self._left = left - len(buf)
            self._expect = False
            return BodyChunk(buf)
        if self._eof:
            # h11's words for it (ContentLengthReader.read_eof).
            received = self._length - left
            exc = parse_refusal(
                400,
                "peer closed connection without sending complete message body "
                f"(received {received} bytes, expected {self._length})",
                b"",
                self._max_header_size,
            )
            self.will_close = True
            self._refused = exc
            raise exc
        return NEED_DATA

    # -- sending and the cycle ---------------------------------------------------------------

    def continue_response(self) -> bytes:
        if self._conn is not None:
            return super().continue_response()
        if not self._expect or self._writer is not NOT_STARTED:
            return b""
        self._expect = False
        return _CONTINUE

    @property
    def request_complete(self) -> bool:
        if self._conn is not None:
            return super().request_complete
        return self.request_bodyless or self._stage == _DONE

    def start_next_cycle(self) -> int:
        if self._conn is not None:
            # An h11 cycle: the base class hands what follows to _feed, fast again.
            self._received = self._eof = False
            self._stage = _IDLE
            self._expect = False
            self._scanned = 0
            return super().start_next_cycle()
        if (
            self.will_close
            or self._writer is not COMPLETE
            or not (self.request_bodyless or self._stage == _DONE)
        ):
            return CLOSE
        received = self._received = bool(self._buf) or self._eof
        self._stage = _IDLE
        self._expect = False
        self._reset_cycle()
        return NEXT_BUFFERED if received else NEXT


class PythonProtocol(FastProtocol):
    """:class:`FastProtocol` without httptools: the header fields of a head that matched h11's
    grammar are split in Python (each line at its first colon, as h11's own ``header_field``
    pattern reads it). The default without the speedups extra: the same decisions as h11,
    without h11's machinery for the plain request."""

    __slots__ = ()

    _needs_httptools = False

    def _split_fields(self, raw: bytes) -> list[tuple[bytes, bytes]]:
        lines = raw[: len(raw) - 4].split(b"\r\n")
        fields = []
        for line in lines[1:]:  # lines[0] is the request line
            name, _, value = line.partition(b":")
            fields.append((name.lower(), value.strip(b" \t")))
        return fields


def protocol_class(parser: str) -> type[ServerProtocol]:
    """The protocol class for ``--http-parser``: ``python`` (the fast path, fields split in
    Python), ``httptools`` (the same fast path, fields split by llhttp), ``h11``; ``auto`` is
    ``python``.

    Why ``auto`` does not take httptools when it is installed: every head must first match
    h11's grammar (``_HEAD``, one regular expression in C) for the fast path to be exactly as
    strict as h11, and what is left after that match, splitting lines already known to be
    well-formed, costs less in Python than a parser object and a callback per field (0.46
    against 0.80 us for one header field, 2.39 against 2.45 for ten; hello keep-alive end to
    end, 2026-12-05: about 35,600 against 33,200-34,100 requests per server CPU-second).
    """
    if parser == "httptools":
        return FastProtocol
    if parser in ("python", "auto"):
        return PythonProtocol
    return ServerProtocol
