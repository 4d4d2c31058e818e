"""The server's settings: one frozen dataclass, validated once.

The CLI, the Python API and (later) the TOML file all build the same :class:`Config`; no other
module reads ``sys.argv`` or the environment.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from ._accesslog import check_format
from ._errors import ConfigError
from ._listeners import parse_bind
from ._proxy import TrustedPeers
from ._tls import TLSConfig

KiB = 1024
MiB = 1024 * KiB

# Why each default has the value it has:
#
# - header_timeout 10 s: a real client sends its whole request head in one round trip; ten seconds
#   is generous on a slow mobile link and still cuts slowloris clients off quickly.
# - keep_alive_timeout 5 s: the same as uvicorn and hypercorn; browsers reuse a connection within
#   a page load, and an idle socket costs memory and a file descriptor.
# - body_timeout 30 s: the longest silence tolerated *between* two reads of a request body; an
#   upload over a slow link makes progress far more often than that.
# - write_timeout 30 s: the longest a single write may stall because the client stopped reading.
# - graceful_timeout 10 s: long enough for ordinary requests to finish, short enough that a
#   container orchestrator (Kubernetes waits 30 s by default) never has to SIGKILL us.
# - max_header_size 16 KiB: what nginx (large_client_header_buffers aside), hypercorn and h11
#   use; cookies and tokens fit, and the bound is what the parser buffers per connection.
# - max_body_size 100 MiB: a request body is streamed to the app, never buffered by the server,
#   but the app usually buffers it; the bound keeps one request from exhausting memory or disk.
# - lifespan_startup_timeout 60 s: startup may warm caches or run migrations; a minute bounds a
#   hung startup without cutting a slow one short. lifespan_shutdown_timeout 10 s: like the grace
#   period, and it runs after the grace period, so the two together stay under Kubernetes' 30 s.
# - ws_max_message_size 16 MiB, ws_ping_interval/timeout 20 s: what uvicorn and hypercorn use, so
#   apps moving over behave the same.
# - max_connections 1000: about what one process can serve well; beyond it we stop accepting and
#   the kernel's listen backlog holds new clients, which is backpressure rather than an error.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings for :func:`trioserve.serve`.

    Every field has a safe default, so ``Config()`` serves on http://127.0.0.1:8000.

    Attributes:
        host: Address to bind. ``"::"`` or ``"0.0.0.0"`` for all interfaces.
        port: TCP port; ``0`` picks a free one (see the addresses :func:`serve` reports).
        uds: Listen on this unix domain socket path instead of ``host`` and ``port``.
        binds: Listen on all of these instead: ``HOST:PORT``, ``[IPV6]:PORT``, ``unix:PATH``,
            ``fd://N`` (an inherited socket); they speak TLS when ``tls`` is set.
        insecure_binds: Plain-HTTP listeners next to TLS ones (same forms).
        uds_mode: Permission bits for unix socket files (``0o660``).
        redirect_to_https: Answer every request on a plain listener with a 308 redirect to the
            same URL over HTTPS.
        backlog: The kernel's listen queue length.
        keep_alive_timeout: Seconds an idle keep-alive connection stays open.
        header_timeout: Seconds allowed to receive a whole request head.
        body_timeout: Seconds of silence tolerated while reading a request body.
        write_timeout: Seconds a single write may stall before the connection is dropped.
        graceful_timeout: Seconds in-flight requests get to finish during shutdown.
        max_header_size: Bytes allowed for the request line and headers (431 beyond).
        max_body_size: Bytes allowed for a request body (413 beyond); ``None`` for no limit.
        max_connections: Connections served at once; further clients wait to be accepted.
        server_header: Value of the ``Server`` response header, or ``None`` for no header.
        date_header: Whether to add a ``Date`` header to responses.
        access_log: Whether to log one line per request to the ``trioserve.access`` logger.
        access_log_format: A template of atoms for that line (see ``trioserve._accesslog``).
        access_log_json: Log each line as a JSON object instead.
        root_path: The ASGI ``root_path``: the prefix a reverse proxy mounts the app under.
        tls: Serve HTTPS with these TLS settings; ``None`` for plain HTTP.
        lifespan: ``"auto"`` (use the ASGI lifespan protocol if the app supports it), ``"on"``
            (require it) or ``"off"``.
        lifespan_startup_timeout: Seconds the app gets to complete its lifespan startup.
        lifespan_shutdown_timeout: Seconds the app gets to complete its lifespan shutdown.
        cancel_on_disconnect: Cancel a request's app task when its client disconnects before
            the response is complete.
        fault_injection: Offer apps the ``trioserve.fault`` extension (raw bytes, abrupt close,
            reset), for test servers that simulate broken peers. Never turn it on in production.
        proxy_headers: Believe ``X-Forwarded-For/-Proto/-Host`` (``"x-forwarded"``) or RFC 7239
            ``Forwarded`` (``"forwarded"``) from trusted peers; ``"off"`` by default.
        forwarded_allow_ips: The trusted peers: addresses, CIDR networks, ``*``, ``unix``.
        proxy_protocol: Expect a PROXY protocol (v1 or v2) header on every connection, from a
            trusted peer.
        max_requests: After about this many requests the server drains and stops (under
            ``--workers``, the supervisor starts a fresh worker); ``None`` for never.
        max_requests_jitter: Up to this many more, at random, so workers do not recycle together.
        health_path: A path (``/healthz``) the server answers itself: 200, or 503 once it is
            shutting down; ``None`` for none.
        asyncio_app: The app needs an asyncio event loop (Django, Quart): run it through
            trio-asyncio (the ``trioserve[asyncio]`` extra).
        ws_max_message_size: Largest websocket message accepted (close code 1009 beyond).
        ws_ping_interval: Seconds between keepalive pings on a websocket; ``None`` for none.
        ws_ping_timeout: Seconds a pong may take before the websocket is closed (1011).
        ws_per_message_deflate: Whether to accept the permessage-deflate extension.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    uds: str | None = None
    binds: tuple[str, ...] = ()
    insecure_binds: tuple[str, ...] = ()
    uds_mode: int | None = None
    redirect_to_https: bool = False
    backlog: int = 1024
    keep_alive_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_timeout: float = 30.0
    graceful_timeout: float = 10.0
    max_header_size: int = 16 * KiB
    max_body_size: int | None = 100 * MiB
    max_connections: int = 1000
    server_header: str | None = None
    date_header: bool = True
    access_log: bool = True
    access_log_format: str | None = None
    access_log_json: bool = False
    root_path: str = ""
    tls: TLSConfig | None = None
    lifespan: Literal["auto", "on", "off"] = "auto"
    lifespan_startup_timeout: float = 60.0
    lifespan_shutdown_timeout: float = 10.0
    cancel_on_disconnect: bool = False
    fault_injection: bool = False
    proxy_headers: Literal["off", "x-forwarded", "forwarded"] = "off"
    forwarded_allow_ips: str = "127.0.0.1,::1"
    proxy_protocol: bool = False
    health_path: str | None = None
    max_requests: int | None = None
    max_requests_jitter: int = 0
    asyncio_app: bool = False
    ws_max_message_size: int = 16 * MiB
    ws_ping_interval: float | None = 20.0
    ws_ping_timeout: float = 20.0
    ws_per_message_deflate: bool = True
    http2: bool = True
    h2_max_concurrent_streams: int = 100
    max_headers: int = 100

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port}")
        if self.backlog < 1:
            raise ConfigError(f"backlog must be at least 1, not {self.backlog}")
        if self.lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"lifespan must be auto, on or off, not {self.lifespan!r}")
        for name in (
            "lifespan_startup_timeout",
            "lifespan_shutdown_timeout",
            "keep_alive_timeout",
            "header_timeout",
            "body_timeout",
            "write_timeout",
            "graceful_timeout",
        ):
            value = getattr(self, name)
            if not (value >= 0 and not math.isnan(value)):
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if self.max_header_size < 1 * KiB:
            raise ConfigError(f"max_header_size must be at least 1024, not {self.max_header_size}")
        if self.max_body_size is not None and self.max_body_size < 0:
            raise ConfigError(f"max_body_size must be >= 0, not {self.max_body_size}")
        if self.ws_max_message_size < 1:
            raise ConfigError(f"ws_max_message_size must be >= 1, not {self.ws_max_message_size}")
        if self.ws_ping_interval is not None and not self.ws_ping_interval > 0:
            raise ConfigError(
                f"ws_ping_interval must be > 0 seconds or None, not {self.ws_ping_interval!r}"
            )
        if not self.ws_ping_timeout > 0:
            raise ConfigError(f"ws_ping_timeout must be > 0 seconds, not {self.ws_ping_timeout!r}")
        for bind in (*self.binds, *self.insecure_binds):
            try:
                parse_bind(bind)
            except ValueError as exc:
                raise ConfigError(f"bind: {exc}") from None
        if self.redirect_to_https and (self.tls is None or not self.insecure_binds):
            raise ConfigError("redirect_to_https needs TLS and at least one insecure bind")
        if self.proxy_headers not in ("off", "x-forwarded", "forwarded"):
            raise ConfigError(
                f"proxy_headers must be off, x-forwarded or forwarded, not {self.proxy_headers!r}"
            )
        try:
            TrustedPeers(self.forwarded_allow_ips)
        except ValueError as exc:
            raise ConfigError(f"forwarded_allow_ips: {exc}") from None
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigError(f"max_requests must be at least 1, not {self.max_requests}")
        if self.max_requests_jitter < 0:
            raise ConfigError(f"max_requests_jitter must be >= 0, not {self.max_requests_jitter}")
        if self.access_log_format is not None:
            try:
                check_format(self.access_log_format)
            except ValueError as exc:
                raise ConfigError(f"access_log_format: {exc}") from None
        if self.health_path is not None and not self.health_path.startswith("/"):
            raise ConfigError(f"health_path must start with '/', not {self.health_path!r}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be at least 1, not {self.max_connections}")
        if self.server_header is not None and not _is_header_text(self.server_header):
            raise ConfigError("server_header must be printable ASCII")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"root_path must start with '/' and not end with one, not {self.root_path!r}"
            )

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, else ``"http"``."""
        return "http" if self.tls is None else "https"

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _is_header_text(value: str) -> bool:
    return value.isascii() and value.isprintable()
