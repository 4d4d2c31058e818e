"""Header fields on HTTP/2: the checks of a received block, and the HPACK encoding of ours.

h2 validates and normalises a received block in seven chained generators per field, and the
headers we send in as many again (py-spy put header handling at a third of the CPU of an
HTTP/2 "hello"). Both are turned off in ``_protocol.py``'s configuration: a received block is
checked here in one pass, with the rules h2 enforces (RFC 9113 sections 8.2 and 8.3, RFC 8441
section 4); what we send is an app's headers as the request cycle passes them, put in HTTP/2's
form by :func:`add_fields` (what h2's outbound rewrites did, and the checks that matter).

:class:`LiteralEncoder` replaces hpack's encoder: every field goes out as a literal that is never
added to the dynamic table (RFC 7541 section 6.2.2), its name indexed when the static table has
it, with no Huffman coding. A server's response fields are short and mostly differ from one
response to the next (date, length), so indexing would save little; the encoder then keeps no
table at all (an idle connection's memory) and costs a fraction of hpack's pure-Python coding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from hpack.table import HeaderTable

__all__ = [
    "CONNECTION_SPECIFIC",
    "LiteralEncoder",
    "add_fields",
    "request_fault",
    "trailers_fault",
]

# Connection-specific header fields (RFC 9113 section 8.2.2).
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
# A field name: visible ASCII but uppercase letters and ':' (RFC 9113 section 8.2.1).
_BAD_NAME: Final = re.compile(rb"[^\x21-\x39\x3b-\x40\x5b-\x7e]")
# A field value: no NUL, CR or LF, no leading or trailing space or tab (section 8.2.1).
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")


def _field_fault(name: bytes, value: bytes) -> str | None:
    """What is wrong with one regular (not pseudo) field, if anything."""
    if not name or _BAD_NAME.search(name) is not None:
        return f"invalid field name {name!r}"
    if _BAD_VALUE.search(value) is not None:
        return f"invalid value of {name.decode('latin-1')}"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific field {name.decode('latin-1')}"
    if name == b"te" and value.lower() != b"trailers":
        return "TE other than trailers"
    return None


def request_fault(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header block is malformed (``None``: it is not).

    The rules of h2's inbound validation, in one pass: pseudo-header fields first, once each,
    only the request's; ``:method``, and ``:scheme`` and ``:path`` (non-empty) but on a plain
    CONNECT, ``:protocol`` only on CONNECT; ``:authority`` or ``Host``, equal if both, one Host.
    """
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header field {name!r} after a regular field"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header field {name!r} in a request"
            if name in pseudo:
                return f"duplicate pseudo-header field {name!r}"
            if _BAD_VALUE.search(value) is not None:
                return f"invalid value of {name!r}"
            pseudo[name] = value
            continue
        regular = True
        fault = _field_fault(name, value)
        if fault is not None:
            return fault
        if name == b"host":
            if host is not None:
                return "more than one Host field"
            host = value
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    protocol = b":protocol" in pseudo
    if method == b"CONNECT" and not protocol:
        if b":scheme" in pseudo or b":path" in pseudo:
            return "a CONNECT with :scheme or :path"
    elif b":scheme" not in pseudo or b":path" not in pseudo:
        return "no :scheme or no :path"
    elif protocol and method != b"CONNECT":
        return ":protocol without CONNECT"
    if pseudo.get(b":path", b"/") == b"":
        return "an empty :path"
    authority = pseudo.get(b":authority")
    if authority is None and host is None:
        return "neither :authority nor Host"
    if authority is not None and host is not None and authority != host:
        return ":authority and Host differ"
    return None


def trailers_fault(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a trailer block is malformed (``None``: it is not): no pseudo-header fields, and
    each field valid as in a request."""
    for name, value in headers:
        if name[:1] == b":":
            return f"pseudo-header field {name!r} in trailers"
        fault = _field_fault(name, value)
        if fault is not None:
            return fault
    return None


def add_fields(fields: list[tuple[bytes, bytes]], headers: Iterable[Sequence[bytes]]) -> None:
    """Append an app's header fields as HTTP/2 sends them (what h2's outbound checks and
    rewrites, turned off in ``_protocol.py``, did): names in lowercase, values without surrounding
    whitespace, HTTP/1.1's connection-specific fields dropped.

    Raises:
        ValueError: a pseudo-header field, or TE other than ``trailers``.
    """
    for name, value in headers:
        name_b = _as_bytes(name).lower()
        if name_b in CONNECTION_SPECIFIC:
            continue  # HTTP/1.1 framing; meaningless (and forbidden) in HTTP/2
        value_b = _as_bytes(value).strip()
        if name_b[:1] == b":":
            raise ValueError(f"pseudo-header field {name_b!r} among an app's headers")
        if name_b == b"te" and value_b.lower() != b"trailers":
            raise ValueError("TE other than trailers in a response")
        fields.append((name_b, value_b))


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("latin-1")
    raise ValueError(f"header names and values must be bytes, not {type(value).__name__}")


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 section 5.1) whose first byte carries ``first``'s flags."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The static table (RFC 7541 appendix A): a whole field's index, and a name's first index.
_STATIC_FIELDS: Final[dict[tuple[bytes, bytes], bytes]] = {}
_STATIC_NAMES: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), bytes((0x80 | _index,)))
    _STATIC_NAMES.setdefault(_name, _index)
# Fields an intermediary must never index either (credentials): "never indexed" literals.
_SENSITIVE: Final = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
# Encoded name prefixes, computed once per name; bounded (names come from apps), dropped whole
# when full: 512 names is far more than a server's responses use.
_NAME_CACHE_SIZE: Final = 512
_name_prefixes: dict[bytes, bytes] = {}


def _name_prefix(name: bytes) -> bytes:
    flags = 0x10 if name in _SENSITIVE else 0x00
    index = _STATIC_NAMES.get(name)
    if index is not None:
        prefix = _integer(index, 4, flags)
    else:
        prefix = bytes((flags,)) + _integer(len(name), 7, 0) + name
    if len(_name_prefixes) >= _NAME_CACHE_SIZE:
        _name_prefixes.clear()
    _name_prefixes[name] = prefix
    return prefix


class LiteralEncoder:
    """HPACK encoding without a dynamic table or Huffman coding (what h2 calls of hpack's
    ``Encoder``: ``encode`` and the ``header_table_size`` setter)."""

    __slots__ = ("_size", "_sizes")

    def __init__(self) -> None:
        self._size = 4096  # the initial SETTINGS_HEADER_TABLE_SIZE (RFC 7541 section 4.2)
        # Table sizes the client has set since the last block: signalled in the next one.
        self._sizes: list[int] | None = None

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._size:
            self._size = value
            if self._sizes is None:
                self._sizes = []
            self._sizes.append(value)

    def encode(self, headers: Iterable[Sequence[bytes]], huffman: bool = False) -> bytes:
        block: list[bytes] = []
        if self._sizes is not None:
            # The smallest size since the last block, then the final one (section 4.2).
            smallest = min(self._sizes)
            block.append(_integer(smallest, 5, 0x20))
            if smallest != self._size:
                block.append(_integer(self._size, 5, 0x20))
            self._sizes = None
        static = _STATIC_FIELDS
        prefixes = _name_prefixes
        for name, value in headers:
            indexed = static.get((name, value))
            if indexed is not None:
                block.append(indexed)
                continue
            prefix = prefixes.get(name)
            if prefix is None:
                prefix = _name_prefix(name)
            size = len(value)
            block.append(prefix)
            block.append(bytes((size,)) if size < 127 else _integer(size, 7, 0))
            block.append(value)
        return b"".join(block)
