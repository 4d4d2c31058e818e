"""What every connection of one server shares, whatever its protocol."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._config import Config
from .._eviction import Reason, Snapshot
from .._proxy import TrustedPeers
from .._readiness import Readiness
from .._types import ASGIApp
from ._idle import IdleTimer

if TYPE_CHECKING:
    from .._metrics import Metrics

__all__ = ["ServerState", "Stoppable"]


class Stoppable(Protocol):
    """A connection as the server's shutdown sees it."""

    def stop_idle(self) -> None:
        """Close now if idle; close a websocket with 1001; busy ones finish their request."""

    def stop_websocket(self) -> None:
        """Close a websocket with 1001 (anything else carries on)."""

    def snapshot(self) -> Snapshot | None:
        """Its state for eviction (see ``_eviction``); ``None`` once it is being evicted."""

    def evict(self, reason: Reason) -> None:
        """Close promptly: out of connection slots, and this connection serves no one."""

    def describe(self) -> str:
        """The client's address, for log lines."""


class ServerState:
    """What every connection of one server shares."""

    __slots__ = (
        "access_log",
        "app",
        "config",
        "connection_ids",
        "connections",
        "draining",
        "evictions",
        "idle_timer",
        "lifespan_state",
        "metrics",
        "on_request_limit",
        "readiness",
        "refusals",
        "request_limit",
        "requests",
        "soft_drain",
        "tls_handshakes",
        "trusted",
        "websockets",
    )

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config
        self.connections: set[Stoppable] = set()
        #: Keep-alive timeouts of idle HTTP/1.1 connections (the server runs it; see _idle).
        self.idle_timer = IdleTimer(config.keep_alive_timeout)
        #: Readiness of idle keep-alive sockets (the server runs it; see _readiness).
        self.readiness = Readiness()
        self.draining = False
        #: For metrics: connections closed to make room for new clients, by reason ("idle",
        #: "slow-head"), and new ones refused over a cap ("per-ip", "websockets").
        self.evictions: dict[str, int] = {}
        self.refusals: dict[str, int] = {}
        #: For metrics: TLS handshakes by result ("ok", "failed", "timeout", "plain-http").
        self.tls_handshakes: dict[str, int] = {}
        #: The server's metrics (``--metrics-bind``), or ``None``.
        self.metrics: Metrics | None = None
        #: Websockets open now (capped by max_websockets).
        self.websockets = 0
        #: A soft drain leaves idle connections open for their next request.
        self.soft_drain = False
        self.lifespan_state: dict[str, Any] = {}
        self.access_log = config.access_log
        #: Numbers the connections 1, 2, 3... (shown to apps by the trioserve.fault extension).
        self.connection_ids = itertools.count(1)
        #: Requests answered, and the count at which on_request_limit() is called (max_requests).
        self.requests = 0
        self.request_limit: int | None = None
        self.on_request_limit: Callable[[], None] | None = None
        #: The peers whose proxy headers are believed (None: proxy headers are off).
        self.trusted: TrustedPeers | None = (
            TrustedPeers(config.forwarded_allow_ips)
            if config.proxy_headers != "off" or config.proxy_protocol
            else None
        )

    def count_request(self) -> None:
        """One more request answered; calls ``on_request_limit`` when the limit is reached."""
        if self.request_limit is not None:
            self.requests += 1
            if self.requests == self.request_limit and self.on_request_limit is not None:
                self.on_request_limit()
