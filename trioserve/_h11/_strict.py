"""What HTTP/1.1 parsing adds to h11's own checks: the request head, the first bytes, and chunks.

h11 parses leniently where a server must not; everything here refuses (``RequestRefused``, the
status to answer with) what h11 lets through, in the raw bytes h11 parsed or is about to parse.

The request head (:func:`check_head`): a control character, a bare CR or an obs-fold line
(header-injection differentials between proxies and servers are built from those: the daphne
CVE-2026-44546 set), a ``#fragment`` in the target, a head over the limit (414 when the request
line alone is over, 431 otherwise).

The first bytes (:func:`sniff`): a TLS ClientHello or an HTTP/2 preface sent to a plain-HTTP
port gets a 400 that says what went wrong instead of a confusing parse error.

Chunked bodies (:class:`ChunkedFraming`). h11 decodes them but accepts anything after the
``;`` of a chunk extension (control characters, NUL, a bare CR: ``5;a\\rb``, which a proxy may
read as a line end, a request-smuggling vector), an extension with no name, and control
characters in trailer fields; and it learns that a chunk is too large only as its bytes arrive.
It exposes no hook for any of that, and discards the chunk lines it reads. So the framing is
followed a second time, in the raw bytes as they are received: a small state machine that steps
over chunk data by count (never looking at it) and reads only the chunk-size and trailer lines,
which it checks against RFC 9112 section 7.1. That costs a few operations per chunk and nothing
per body byte, and requests that are not chunked never pay for it (validating what h11 consumed
instead would mean copying h11's buffer at every event: quadratic in the number of chunks). It
reads ahead of h11, so it records its refusal and the protocol raises it at its next event.
"""

from __future__ import annotations

import re
from typing import Final

from .._errors import RequestRefused

__all__ = [
    "H2_PREFACE",
    "HTTP_VERSIONS",
    "NUMBER_SIGN",
    "SNIFF_LENGTH",
    "ChunkedFraming",
    "check_content_length",
    "check_head",
    "parse_refusal",
    "sniff",
    "split_head",
    "too_large",
]

# The first bytes of a TLS handshake record (content type 22, major version 3) and the start of
# the HTTP/2 connection preface (RFC 9113 section 3.4).
_TLS_HANDSHAKE_PREFIX: Final = b"\x16\x03"
_H2_PREFACE_START: Final = b"PRI * HTTP/2.0"
SNIFF_LENGTH: Final = len(_H2_PREFACE_START)

# h11 parses header values leniently (anything but NUL and whitespace). Refused: control
# characters, a bare CR, and obs-fold (a line that starts with whitespace), which RFC 9112
# section 5.2 lets a server reject with 400.
_FORBIDDEN_IN_HEAD: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|\n[ \t]")

# h11 reads any one-digit "HTTP/x.y". A later 1.x minor version is served as 1.1 (RFC 9112
# section 2.3: a minor version says what the sender can do, and 1.x stays compatible); any
# other major version gets 505.
_HEAD_END: Final = re.compile(rb"\r?\n\r?\n")

#: ``#`` as a number: ``byte in target`` with a bytes needle first tries the needle as an int,
#: and Python formats (then drops) a TypeError for it, 10 times the cost of an int's search.
NUMBER_SIGN: Final = ord("#")

HTTP_VERSIONS: Final = {b"1.0": "1.0"} | {b"1.%d" % minor: "1.1" for minor in range(1, 10)}

_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# chunk-size [ chunk-ext ] CRLF, where chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] );
# trailing whitespace is tolerated as h11 tolerates it (both parsers agree on it).
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*%b(?:[ \t]*=[ \t]*(?:%b|%b))?)*[ \t]*\r\n"
    % (_TOKEN, _TOKEN, _QUOTED)
)
# In a trailer line: a control character (HTAB aside) or a bare CR; or a leading space or tab
# (obs-fold, which RFC 9112 section 5.2 lets a server refuse).
_BAD_TRAILER_LINE: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|^[ \t]")
# h11 reads at most 20 hex digits of chunk size ("len(str(2**64)) == 20"); agree with it.
_MAX_SIZE_DIGITS: Final = 20

_SIZE_LINE: Final = 0
_DATA: Final = 1
_DATA_END: Final = 2
_TRAILER: Final = 3
_DONE: Final = 4


#: What :func:`sniff` returns for a connection that opened with the HTTP/2 preface (h2c).
H2_PREFACE: Final = _H2_PREFACE_START


def sniff(sniffed: bytes, data: bytes | bytearray, *, h2c: bool = False) -> bytes:
    """Look at the connection's first bytes (``sniffed`` so far, then ``data``).

    Returns:
        The bytes sniffed so far; :data:`SNIFF_LENGTH` bytes once there is nothing to find;
        :data:`H2_PREFACE` (this very object) when the HTTP/2 preface came and ``h2c`` says
        to serve it.

    Raises:
        RequestRefused: TLS (or HTTP/2 without ``h2c``) on this plain HTTP/1.1 port (400).
    """
    sniffed += bytes(data[: SNIFF_LENGTH - len(sniffed)])
    if sniffed.startswith(_TLS_HANDSHAKE_PREFIX):
        raise RequestRefused(400, "This port speaks plain HTTP, but the client sent TLS (https).")
    if sniffed.startswith(_H2_PREFACE_START):
        if h2c:
            return H2_PREFACE
        raise RequestRefused(400, "HTTP/2 is not supported on this port; use HTTP/1.1.")
    if not _H2_PREFACE_START.startswith(sniffed) and not _TLS_HANDSHAKE_PREFIX.startswith(sniffed):
        # Neither can match any more: stop looking (and stop paying for it).
        return b"x" * SNIFF_LENGTH
    return sniffed


def too_large(head: bytes, max_header_size: int) -> RequestRefused:
    """The refusal for a head over the limit: 414 when the request line alone is, else 431."""
    if head and head.find(b"\n", 0, max_header_size + 1) == -1:
        return RequestRefused(414, "Request target too long.")
    return RequestRefused(431, "Request header fields too large.")


def parse_refusal(
    status: int, message: str, raw_head: bytes, max_header_size: int
) -> RequestRefused:
    """The refusal for a request h11 could not parse (``status``: h11's hint)."""
    if status == 431:
        # h11 gives up on a head that arrives in pieces and outgrows its limit.
        return too_large(raw_head, max_header_size)
    if status == 501:
        return RequestRefused(501, "Unsupported Transfer-Encoding: only chunked is supported.")
    return RequestRefused(status, f"Malformed request: {_client_safe(message)}.")


# h11 ends some messages with the offending bytes' repr ("illegal request line:
# bytearray(b'GARBAGE')", "Illegal header value b'...'"): the client sent them, and a Python
# repr means nothing to it, so the words before it are all that is kept.
_REPR = re.compile(r":?\s*(?:bytearray\(|b'|b\")")


def _client_safe(message: str) -> str:
    match = _REPR.search(message)
    return (message[: match.start()] if match else message).strip() or "unparsable"


def split_head(raw: bytes) -> tuple[bytes, int]:
    """The head in ``raw``, the bytes h11 parsed it from (the body may follow): up to the blank
    line that h11 ends it with (LF, optional CR, LF), and where the body starts."""
    end = _HEAD_END.search(raw)
    return (raw, len(raw)) if end is None else (raw[: end.start()], end.end())


def check_head(
    head: bytes, target: bytes, max_header_size: int, *, characters: bool = True
) -> None:
    """Refuse what h11 accepted in a request head (``head`` as :func:`split_head` gives it).

    Args:
        head: The request line and header lines, without the blank line.
        target: The request target.
        max_header_size: The head limit.
        characters: Look for control characters, bare CRs and obs-fold lines (``False`` only
            where a stricter grammar than h11's has excluded them already).
    """
    if len(head) > max_header_size:
        # h11 enforces its limit only on a head that arrives in pieces; this is the rest.
        raise too_large(head, max_header_size)
    if characters and _FORBIDDEN_IN_HEAD.search(head):
        raise RequestRefused(400, "Malformed request: control character or folded header line.")
    if NUMBER_SIGN in target:
        # A fragment is the client's business (RFC 9110 section 7.1): it is never sent.
        raise RequestRefused(400, "Malformed request target: it has a #fragment.")


def check_content_length(
    head: bytes, length: int, chunked: bool, max_body_size: int | None
) -> None:
    """Refuse an ambiguous or oversized Content-Length, before any byte of the body."""
    if chunked:
        raise RequestRefused(400, "Content-Length and Transfer-Encoding must not be combined.")
    # h11 merges equal Content-Length fields ("3, 3" or twice "3"); count them in the raw head.
    count = 0
    for line in head.lower().split(b"\n")[1:]:
        if line.startswith(b"content-length:"):
            count += line.count(b",") + 1
    if count != 1:
        raise RequestRefused(400, "Repeated Content-Length headers.")
    if max_body_size is not None and length > max_body_size:
        raise RequestRefused(413, "Request body too large.")


class ChunkedFraming:
    """Follows one chunked request body's framing and checks its lines.

    Args:
        max_body_size: The body limit (413 as soon as a chunk-size line exceeds it), or ``None``.
        max_line: Bytes allowed for one chunk-size or trailer line (400 beyond).
    """

    __slots__ = ("_left", "_limit", "_line", "_max_line", "_state", "_total", "refusal")

    def __init__(self, *, max_body_size: int | None, max_line: int) -> None:
        self._limit = max_body_size
        self._max_line = max_line
        self._state = _SIZE_LINE
        self._line = b""
        self._left = 0
        self._total = 0
        #: The refusal the body earned, once it has earned one.
        self.refusal: RequestRefused | None = None

    @property
    def done(self) -> bool:
        """Whether the whole body, trailers included, has been seen."""
        return self._state == _DONE

    def feed(self, data: bytes | bytearray) -> None:
        """Follow ``data``, the next bytes received (those past the body's end are ignored)."""
        if self.refusal is None and self._state != _DONE:
            try:
                self._feed(data)
            except RequestRefused as exc:
                self.refusal = exc

    def _feed(self, data: bytes | bytearray) -> None:
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                step = min(self._left, size - pos)
                pos += step
                self._left -= step
                if not self._left:
                    self._state = _DATA_END
                    self._left = 2
            elif state == _DATA_END:
                if data[pos] != b"\r\n"[2 - self._left]:
                    raise RequestRefused(400, "Malformed chunked body: no CRLF after a chunk.")
                pos += 1
                self._left -= 1
                if not self._left:
                    self._state = _SIZE_LINE
            elif state == _DONE:
                return
            else:
                end = data.find(b"\n", pos)
                line = bytes(data[pos:] if end == -1 else data[pos : end + 1])
                if self._line:
                    line = self._line + line
                if len(line) > self._max_line:
                    raise RequestRefused(400, "Malformed chunked body: line too long.")
                if end == -1:
                    self._line = line
                    return
                self._line = b""
                pos = end + 1
                if state == _SIZE_LINE:
                    self._size_line(line)
                else:
                    self._trailer_line(line)

    def _size_line(self, line: bytes) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise RequestRefused(400, "Malformed chunked body: invalid chunk-size line.")
        digits = match.group(1)
        if len(digits) > _MAX_SIZE_DIGITS:
            raise RequestRefused(400, "Malformed chunked body: chunk size too large.")
        chunk = int(digits, 16)
        self._total += chunk
        if self._limit is not None and self._total > self._limit:
            raise RequestRefused(413, "Request body too large.")
        if chunk:
            self._state = _DATA
            self._left = chunk
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        if line in (b"\r\n", b"\n"):
            self._state = _DONE
        elif _BAD_TRAILER_LINE.search(line):
            raise RequestRefused(400, "Malformed request: control character in a trailer field.")
