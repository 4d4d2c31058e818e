"""What a wire protocol reports about a request, in words that no protocol library owns.

The HTTP/1.1 protocol (on h11) and the HTTP/2 protocol (on h2) both turn bytes into these
events, so the request cycle above them never sees a library's types. They are never changed
once made; they are not ``frozen`` dataclasses all the same, because a frozen dataclass's
``__init__`` (``object.__setattr__`` per field) costs about 0.35 µs more, on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CLIENT_CLOSED",
    "END_OF_BODY",
    "HTTP2_PREFACE",
    "NEED_DATA",
    "BodyChunk",
    "Event",
    "RequestHead",
]


@dataclass(slots=True)
class RequestHead:
    """A request line (or pseudo-headers) and its header fields.

    ``headers`` has lowercased names, in the order the client sent them.
    """

    method: bytes
    target: bytes
    http_version: str
    headers: Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class BodyChunk:
    """Some bytes of the request body."""

    data: bytes


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: The request body is complete.
END_OF_BODY: Final = _Marker("END_OF_BODY")
#: The client closed its side of the connection (between requests).
CLIENT_CLOSED: Final = _Marker("CLIENT_CLOSED")
#: Nothing more can be parsed until more bytes arrive.
NEED_DATA: Final = _Marker("NEED_DATA")
#: The client opened a cleartext connection with the HTTP/2 preface (prior knowledge, h2c).
HTTP2_PREFACE: Final = _Marker("HTTP2_PREFACE")

Event = RequestHead | BodyChunk | _Marker
