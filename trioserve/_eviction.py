"""Eviction before refusal: whom to close when every connection slot is taken.

Theory of operation
-------------------
A server that stops accepting at ``max_connections`` can be locked up by any one host that holds
that many sockets open doing nothing: idle keep-alive connections, or request heads sent a byte at
a time (slowloris). So when the accept loop finds no free slot *and* a client is waiting in the
listen backlog, it asks :meth:`Evictor.make_room`, which closes a few connections that serve no
one, as nginx does when it runs out of connections (and further than nginx, which evicts only
idle keep-alive connections), in this order:

1. idle keep-alive connections (HTTP/1.1 between two requests, HTTP/2 with no open stream), the
   longest idle first: their clients lose nothing, a client reconnects for its next request;
2. request heads that are too slow, like Apache's ``mod_reqtimeout`` ``MinRate``: a head still
   incomplete ``min_head_rate_after`` seconds after it began, having arrived at less than
   ``min_head_rate`` bytes a second (a client that has sent nothing yet is at 0 bytes a second),
   the slowest first.

Requests in progress (the app is running, a body is being read or a response written) and
websockets are never evicted: when all connections are busy, new clients wait in the backlog as
before, which is backpressure, not a lockout. Websockets are capped on their own instead
(``max_websockets``; see ``_config``).

Nothing is evicted while a slot is free or while no client waits: a server near its cap but with
nobody to serve closes nothing.

:func:`choose` is the policy, a pure function of connection snapshots; :class:`Evictor` applies
it to the server's live connections, which report their state through ``snapshot()`` and close
promptly on ``evict()``: an idle HTTP/1.1 connection just closes, a slow head gets a 408 (a
client that has sent nothing, nothing) and closes, an idle HTTP/2 connection sends GOAWAY and
closes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import trio

__all__ = ["Evictable", "Evictor", "Kind", "Reason", "Snapshot", "choose", "next_candidate_at"]

error_log = logging.getLogger("trioserve.error")

# How many connections one call evicts: nginx's rule (ngx_drain_connections): an eighth of those
# that could go, at least one and at most 32, so that a burst of new clients does not wait for
# one eviction each, and one new client does not clear out every idle connection.
_BATCH_MAX: Final = 32
_BATCH_FRACTION: Final = 8
# How long the accept loop waits for the slots of the connections it evicted before it looks
# again (they close within milliseconds; a 408 write is bounded, but by write_timeout).
_SLOT_WAIT: Final = 1.0
# With nothing to evict, how long before looking again at most: a busy connection may turn idle
# meanwhile, and nothing tells the accept loop when it does. Short against the one second a
# waiting client should be served in; a scan of 1000 connections takes about a millisecond.
_RECHECK: Final = 0.25
_MIN_WAIT: Final = 0.01  # never a busy loop


class Kind(enum.Enum):
    """What a connection is doing, as eviction sees it."""

    #: Waiting for (the rest of) a request head; ``since`` is when that head's wait began.
    HEAD = "head"
    #: Between two requests (keep-alive), or HTTP/2 with no open stream; ``since``: idle since.
    IDLE = "idle"
    #: A request is in progress: never evicted.
    BUSY = "busy"
    #: A websocket: never evicted (capped on its own).
    WEBSOCKET = "websocket"


class Reason(enum.Enum):
    """Why a connection was evicted: the key of ``ServerState.evictions``."""

    IDLE = "idle"
    SLOW_HEAD = "slow-head"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One connection's state, as eviction sees it.

    Attributes:
        kind: What it is doing.
        since: When it began doing it (``trio.current_time()``).
        received: Bytes of the request head received so far (``HEAD`` only).
    """

    kind: Kind
    since: float
    received: int = 0


class Evictable(Protocol):
    """A connection that eviction can see and close."""

    def snapshot(self) -> Snapshot | None:
        """Its state now; ``None`` once it is closing (it is no candidate any more)."""

    def evict(self, reason: Reason) -> None:
        """Close promptly and politely (returns at once; the connection's task closes it)."""

    def describe(self) -> str:
        """Who it is, for the log line: the client's address."""


_C = TypeVar("_C")


def _head_evictable_at(snapshot: Snapshot, min_rate: float, after: float) -> float:
    """When a head becomes too slow: ``after`` seconds in, and below ``min_rate`` bytes/s."""
    return snapshot.since + max(after, snapshot.received / min_rate)


def choose(
    connections: Iterable[tuple[_C, Snapshot]],
    *,
    now: float,
    count: int | None = None,
    min_head_rate: float,
    min_head_rate_after: float,
) -> list[tuple[_C, Reason]]:
    """Whom to evict, in order: idle connections (longest idle first), then slow heads (slowest
    first).

    Args:
        connections: Each connection with its snapshot.
        now: The current time.
        count: How many at most; ``None``: the batch size for the number of candidates
            (an eighth of them, at least 1, at most 32).
        min_head_rate: Bytes a second below which a head is too slow; 0: heads are never evicted.
        min_head_rate_after: Seconds a head is given before its rate is judged.
    """
    idle: list[tuple[float, int, _C]] = []
    slow: list[tuple[float, float, int, _C]] = []
    for order, (connection, snapshot) in enumerate(connections):
        if snapshot.kind is Kind.IDLE:
            idle.append((snapshot.since, order, connection))
        elif (
            snapshot.kind is Kind.HEAD
            and min_head_rate > 0
            and _head_evictable_at(snapshot, min_head_rate, min_head_rate_after) <= now
        ):
            elapsed = now - snapshot.since
            rate = snapshot.received / elapsed if elapsed > 0 else 0.0
            slow.append((rate, snapshot.since, order, connection))
    idle.sort(key=lambda entry: entry[:2])
    slow.sort(key=lambda entry: entry[:3])
    candidates = [(c, Reason.IDLE) for *_, c in idle] + [(c, Reason.SLOW_HEAD) for *_, c in slow]
    if count is None:
        count = min(_BATCH_MAX, max(1, len(candidates) // _BATCH_FRACTION))
    return candidates[:count]


def next_candidate_at(
    snapshots: Iterable[Snapshot], *, min_head_rate: float, min_head_rate_after: float
) -> float:
    """When the next head becomes too slow, if nothing else changes (``inf``: none will)."""
    if min_head_rate <= 0:
        return math.inf
    return min(
        (
            _head_evictable_at(snapshot, min_head_rate, min_head_rate_after)
            for snapshot in snapshots
            if snapshot.kind is Kind.HEAD
        ),
        default=math.inf,
    )


class Evictor:
    """Applies :func:`choose` to a server's connections and counts what it evicts.

    Args:
        connections: The live connections (``ServerState.connections``).
        counts: Evictions by reason (``ServerState.evictions``), updated here.
        min_head_rate: See :func:`choose`.
        min_head_rate_after: See :func:`choose`.
    """

    def __init__(
        self,
        connections: Iterable[Evictable],
        counts: dict[str, int],
        *,
        min_head_rate: float,
        min_head_rate_after: float,
    ) -> None:
        self._connections = connections
        self._counts = counts
        self._min_rate = min_head_rate
        self._after = min_head_rate_after

    def make_room(self) -> float:
        """Evict a batch of connections that serve no one, if there are any.

        Returns:
            How long to wait for a free slot before calling again: a moment for the evicted
            connections to close, or, when there was nothing to evict, until a head may have
            become too slow (at most a quarter of a second: busy connections turn idle too).
        """
        now = trio.current_time()
        live: list[tuple[Evictable, Snapshot]] = []
        for connection in list(self._connections):
            state = connection.snapshot()
            if state is not None:
                live.append((connection, state))
        victims = choose(
            live, now=now, min_head_rate=self._min_rate, min_head_rate_after=self._after
        )
        if not victims:
            next_at = next_candidate_at(
                (s for _, s in live), min_head_rate=self._min_rate, min_head_rate_after=self._after
            )
            return max(_MIN_WAIT, min(next_at - now, _RECHECK))
        snapshots = dict(live)
        for connection, reason in victims:
            self._log(connection, snapshots[connection], reason, now)
            self._counts[reason.value] = self._counts.get(reason.value, 0) + 1
            connection.evict(reason)
        return _SLOT_WAIT

    @staticmethod
    def _log(connection: Evictable, snapshot: Snapshot, reason: Reason, now: float) -> None:
        age = now - snapshot.since
        if reason is Reason.IDLE:
            why = f"idle for {age:.1f} s"
        else:
            why = f"request head incomplete after {age:.1f} s ({snapshot.received} bytes)"
        error_log.info(
            "Out of connection slots: closed the connection from %s (%s) for a new client",
            connection.describe(),
            why,
        )
