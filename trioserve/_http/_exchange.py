"""What a wire protocol does for one request, as the request cycle sees it (:class:`Exchange`),
and the response body it takes (:data:`Body`).

The HTTP/1.1 connection implements :class:`Exchange` for its current request
(``_h11/_exchange.py``), an HTTP/2 stream for its stream (``_h2/_stream.py``); the cycle
(``_cycle.py``) knows nothing of either wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Body", "Exchange"]

#: A response body as an exchange takes it: what an app may send (ASGI says bytes; a
#: bytearray or memoryview is taken too, and HTTP/2 sends a memoryview without a copy).
Body = bytes | bytearray | memoryview


class Exchange(Protocol):
    """What a wire protocol does for one request: the request cycle's view of the wire.

    Every ``send_*`` method returns how many body bytes went out (0 for HEAD, 204, 304) and
    raises :class:`ClientDisconnected` once the client is gone.
    """

    #: Whether :meth:`wait_disconnected` works while the request body is unread. HTTP/2 knows of
    #: a reset stream at once; HTTP/1.1 would have to read (and hold) the body to see the
    #: client's EOF, so it watches only once the app has read the body.
    sees_disconnect_before_body: bool

    async def receive_body(self) -> tuple[bytes, bool] | None:
        """The next piece of the request body and whether more follows; ``None``: client gone.

        Raises:
            RequestRefused: the body is refused (too large, too slow, malformed).
        """

    async def wait_disconnected(self) -> None:
        """Return once the client has gone (the cycle cancels it when the response is done)."""

    async def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: Body, *, end: bool
    ) -> int:
        """The response head and the first piece of the body (the whole body when ``end``)."""

    async def send_body(self, body: Body, *, end: bool) -> int:
        """More of the response body (and its end when ``end``)."""

    async def send_file(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], path: str
    ) -> int:
        """The response head and the whole file at ``path`` as its body."""

    async def send_trailers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """End a body sent with ``end=False`` with trailer fields (or, where the client cannot
        take them, with none)."""

    async def send_raw(self, data: bytes) -> None:
        """Fault injection: bytes as they are, no framing (the connection ends after them)."""

    async def abort(self, *, reset: bool) -> None:
        """Fault injection: end the connection now (with a TCP reset when ``reset``)."""
