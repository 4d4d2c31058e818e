"""The states of an ASGI HTTP response (:class:`ResponseState`) and what an app is told when
it sends a message out of turn; the request cycle (``_cycle.py``) moves between them."""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "ABORTED",
    "DONE",
    "HEAD_NOT_WRITTEN",
    "STARTED",
    "STREAMING",
    "TRAILERS",
    "UNFINISHED",
    "WAITING",
    "ResponseState",
    "out_of_order",
]


class ResponseState(enum.Enum):
    """Where the response of one request cycle is."""

    #: No ``http.response.start`` yet.
    WAITING = "waiting"
    #: ``http.response.start`` received, nothing written yet.
    STARTED = "started"
    #: The head is on the wire, the body under way.
    STREAMING = "streaming"
    #: The body is complete; the trailers the app announced are still to come.
    TRAILERS = "trailers"
    #: The whole response is on the wire.
    DONE = "done"
    #: The app took the wire over (fault injection): nothing more may be written.
    ABORTED = "aborted"


# The members as module constants, which the cycle reads (on Python 3.11 a member read through
# its class costs about 100 ns, a global 5: docs/architecture.md, "What the pure-Python hot path
# avoids"; about 5% of a hello request's instructions).
WAITING: Final = ResponseState.WAITING
STARTED: Final = ResponseState.STARTED
STREAMING: Final = ResponseState.STREAMING
TRAILERS: Final = ResponseState.TRAILERS
DONE: Final = ResponseState.DONE
ABORTED: Final = ResponseState.ABORTED
#: The states in which no byte of the response has been written.
HEAD_NOT_WRITTEN: Final = (WAITING, STARTED)
#: The states of a response started on the wire but not finished.
UNFINISHED: Final = (STREAMING, TRAILERS)


def out_of_order(message_type: str, state: ResponseState) -> str:
    """Why ``message_type`` cannot be sent in ``state`` (the RuntimeError's message)."""
    if state is WAITING:
        return f"ASGI app sent {message_type!r} before 'http.response.start'"
    if state is ABORTED:
        return f"ASGI app sent {message_type!r} after a trioserve.fault took over the connection"
    if message_type == "http.response.start":
        return "ASGI app sent 'http.response.start' twice"
    if message_type == "http.response.trailers":
        if state is DONE:
            return "ASGI app sent 'http.response.trailers' without announcing trailers"
        return "ASGI app sent 'http.response.trailers' before the end of the response body"
    if state is STREAMING:
        return f"ASGI app sent {message_type!r} while the response body was being sent"
    if state is TRAILERS:
        return f"ASGI app sent {message_type!r} where its trailers were due"
    return f"ASGI app sent {message_type!r} after the response was complete"
