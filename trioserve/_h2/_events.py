"""The neutral events :class:`~._protocol.H2Protocol` turns h2's events into (no h2 types leak
out of the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from .._http._events import RequestHead

__all__ = [
    "BodyData",
    "ConnectionEnded",
    "Event",
    "StreamOpened",
    "StreamReset",
    "WindowOpened",
]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """A new request on ``stream_id``; ``end_stream``: it has no body."""

    stream_id: int
    head: RequestHead
    end_stream: bool
    #: A reason to refuse it with this status (a request the server will not serve).
    refusal: tuple[int, str] | None = None
    #: An extended CONNECT with ``:protocol websocket`` (RFC 8441): the stream is a websocket.
    websocket: bool = False


@dataclass(frozen=True, slots=True)
class BodyData:
    """Body bytes (possibly none) of ``stream_id``'s request; ``end_stream``: the body ends."""

    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone (the client reset it, or we did)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The client opened a send window: of a stream, or of the connection (``stream_id`` 0)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The connection is over: the client said GOAWAY, broke the protocol, or flooded us."""

    reason: str
    calm: bool = False
    #: The client ended it with a GOAWAY (not a protocol error or a flood).
    by_client: bool = False


Event = StreamOpened | BodyData | StreamReset | WindowOpened | ConnectionEnded
