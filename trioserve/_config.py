"""The server's settings: one frozen dataclass, validated once.

The CLI, the Python API and the TOML file all build the same :class:`Config`; no other module
reads ``sys.argv`` or the environment. Each field that the command line and the TOML file can set
is declared once, here, with ``setting(default, ...)`` (see ``_settings``): its flag, help and
parse function; the parser and the file loader are generated from these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ._accesslog import ATOMS
from ._config_checks import check_config
from ._settings import (
    HTTP2,
    LIMITS,
    LISTEN,
    OUTPUT,
    PROCESSES,
    PROXY,
    SERVE,
    WEBSOCKETS,
    KiB,
    MiB,
    format_size,
    parse_octal,
    parse_seconds,
    parse_seconds_or_off,
    parse_size,
    setting,
    show_seconds,
)
from ._tls import TLSConfig
from ._wsgi import DEFAULT_WSGI_THREADS

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
# - shutdown_delay 0 s: off, as in every other server; behind a load balancer that polls the
#   health path, set it to a few polling intervals (the balancer needs that long to notice the
#   503 and stop sending new requests). It runs before the grace period and adds to it.
# - max_header_size 16 KiB: what nginx (large_client_header_buffers aside), hypercorn and h11
#   use; cookies and tokens fit, and the bound is what the parser buffers per connection.
# - h2_max_concurrent_streams 100: what RFC 9113 recommends as the least to allow, and nginx's
#   and h2o's default; a browser opens a few dozen streams per page at most, and each open stream
#   is a task and a bounded body buffer here.
# - max_headers 100: Apache's LimitRequestFields default; real requests carry a few dozen
#   fields at most, and each one costs parsing work and memory in every scope built from them.
# - max_body_size 100 MiB: a request body is streamed to the app, never buffered by the server,
#   but the app usually buffers it; the bound keeps one request from exhausting memory or disk.
# - lifespan_startup_timeout 60 s: startup may warm caches or run migrations; a minute bounds a
#   hung startup without cutting a slow one short. lifespan_shutdown_timeout 10 s: like the grace
#   period, and it runs after the grace period, so the two together stay under Kubernetes' 30 s.
# - ws_max_message_size 16 MiB, ws_ping_interval/timeout 20 s: what uvicorn and hypercorn use, so
#   apps moving over behave the same.
# - wsgi_threads 10: see DEFAULT_WSGI_THREADS in _wsgi (a2wsgi's default; a WSGI request holds
#   its thread for the whole exchange, so the pool covers the requests in flight at once).
# - max_connections 1000: about what one process can serve well; beyond it we stop accepting and
#   the kernel's listen backlog holds new clients, which is backpressure rather than an error.
#   But first, with a client waiting, idle keep-alive connections and too-slow request heads are
#   closed to make room (see _eviction): one host holding 1000 sockets must not lock others out.
# - min_head_rate 500 bytes/s after 0.25 s: Apache mod_reqtimeout's MinRate (500), judged only
#   when a new client waits for a slot. A real client sends its head right behind the ACK that
#   completes the TCP handshake (which is when we accept), so it is here within milliseconds on
#   any link; a head that trickles in below 500 bytes/s after a quarter second (slowloris sends a
#   byte a second) is an attack or a client that cannot be served. Why so short: the listen
#   queue is first in, first out, so a new client waits behind every attacking socket queued
#   before it, and each must be accepted and judged; with a flood twice the cap a new client
#   waits about two judging periods, and 2 x 0.25 s keeps it under the second we aim for.
#   (A TLS handshake counts as a head that has sent nothing yet: it takes a round trip or two,
#   so under a flood distant TLS clients may be closed and retried; see _accept.)
# - max_connections_per_ip off: behind a reverse proxy or a load balancer every client has the
#   proxy's address (the cap applies to the socket's peer, or the PROXY protocol's source), so a
#   cap would throttle all clients together; set it when clients connect directly.
# - max_websockets: half of max_connections unless given. Websockets live long and are idle most
#   of the time by design (a chat waiting for a message), so they are never evicted; instead
#   they may take only part of the slots, and an idle-websocket flood leaves the rest to HTTP.
#   An upgrade over the cap is answered 503.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _seconds(default: float, text: str) -> float:
    return setting(
        default, group=LIMITS, parse=parse_seconds, show=show_seconds, metavar="S", help=text
    )


def _bytes(default: int, text: str, group: str) -> int:
    return setting(
        default, group=group, parse=parse_size, show=format_size, metavar="BYTES", help=text
    )


def _without_trailing_slash(text: str) -> str:
    return text.rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Settings for :func:`trioserve.serve`.

    Every field has a safe default, so ``Config()`` serves on http://127.0.0.1:8000. Each
    field that the command line can set says what it means in its ``setting(...)`` declaration
    below (the same words ``trioserve --help`` prints); the others:

    Attributes:
        backlog: The kernel's listen queue length.
        tls: Serve HTTPS with these TLS settings; ``None`` for plain HTTP.
        lifespan_startup_timeout: Seconds the app gets to complete its lifespan startup.
        lifespan_shutdown_timeout: Seconds the app gets to complete its lifespan shutdown.
        fault_injection: Offer apps the ``trioserve.fault`` extension (raw bytes, abrupt close,
            reset), for test servers that simulate broken peers. Never turn it on in production.

    A size of ``None`` (``max_body_size``) or an interval of ``None`` (``ws_ping_interval``)
    means no limit.
    """

    # -- where to listen
    host: str = setting(
        DEFAULT_HOST, group=LISTEN, help='address to bind; "::" or "0.0.0.0" for all interfaces'
    )
    port: int = setting(DEFAULT_PORT, group=LISTEN, parse=int, help="TCP port; 0 picks a free one")
    uds: str | None = setting(
        None, group=LISTEN, metavar="PATH", help="listen on a unix socket instead"
    )
    binds: tuple[str, ...] = setting(
        (),
        group=LISTEN,
        flag="--bind",
        kind="list",
        metavar="ADDRESS",
        help="listen on HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N (repeatable; TLS when TLS "
        "is on); replaces --host/--port/--uds",
    )
    insecure_binds: tuple[str, ...] = setting(
        (),
        group=LISTEN,
        flag="--insecure-bind",
        kind="list",
        metavar="ADDRESS",
        help="a plain-HTTP listener next to the TLS ones (repeatable)",
    )
    uds_mode: int | None = setting(
        None,
        group=LISTEN,
        parse=parse_octal,
        metavar="MODE",
        help="permissions of unix socket files, in octal (e.g. 660)",
    )
    redirect_to_https: bool = setting(
        False,
        group=LISTEN,
        kind="flag",
        help="plain listeners answer every request with a 308 redirect to the same URL on HTTPS",
    )
    metrics_bind: str | None = setting(
        None,
        group=LISTEN,
        metavar="ADDRESS",
        help="serve Prometheus metrics at /metrics on their own listener, HOST:PORT or "
        "unix:PATH (plain HTTP; with --workers, summed over the workers)",
    )
    backlog: int = 1024
    # -- limits and timeouts
    keep_alive_timeout: float = _seconds(5.0, "idle time before closing a keep-alive connection")
    header_timeout: float = _seconds(10.0, "time allowed to send a whole request head")
    body_timeout: float = _seconds(30.0, "silence allowed while reading a request body")
    write_timeout: float = _seconds(30.0, "time a write may stall (client not reading)")
    graceful_timeout: float = _seconds(10.0, "time in-flight requests get at shutdown")
    shutdown_delay: float = _seconds(
        0.0,
        "on SIGTERM, keep serving this long with the health path answering 503, then drain "
        "(a Kubernetes pre-stop delay)",
    )
    max_header_size: int = _bytes(
        16 * KiB, "largest request line plus headers; more is 431", LIMITS
    )
    max_headers: int = setting(
        100,
        group=LIMITS,
        parse=int,
        metavar="N",
        help="the most header fields a request may carry; more is 431",
    )
    max_body_size: int | None = _bytes(
        100 * MiB, "largest request body, e.g. 10M; more is 413", LIMITS
    )
    max_connections: int = setting(
        1000,
        group=LIMITS,
        parse=int,
        metavar="N",
        help="connections served at once; further clients wait to be accepted",
    )
    max_connections_per_ip: int | None = setting(
        None,
        group=LIMITS,
        parse=int,
        metavar="N",
        help="connections one client address may hold at once; more are closed at accept (off "
        "by default: behind a proxy every client has the proxy's address)",
    )
    min_head_rate: int = _bytes(
        500,
        "when a new client waits for a slot, request heads slower than this many bytes a "
        "second are closed to make room (after --min-head-rate-after); 0: never",
        LIMITS,
    )
    min_head_rate_after: float = _seconds(
        0.25, "time a request head gets before --min-head-rate judges it"
    )
    # -- headers and logging
    server_header: str | None = setting(
        None, group=OUTPUT, metavar="VALUE", help="send 'Server: VALUE' (printable ASCII)"
    )
    date_header: bool = setting(True, group=OUTPUT, kind="switch", help="send a Date header")
    access_log: bool = setting(
        True,
        group=OUTPUT,
        kind="switch",
        help="log one line per request to the trioserve.access logger",
    )
    access_log_format: str | None = setting(
        None,
        group=OUTPUT,
        metavar="TEMPLATE",
        help="access line template, e.g. '{client} {method} {target} {status} {duration_us}us "
        "{request_header[user-agent]}' (atoms: "
        + ", ".join(ATOMS)
        + ", request_header[NAME], response_header[NAME])",
    )
    access_log_json: bool = setting(
        False, group=OUTPUT, kind="flag", help="log each request as a JSON object"
    )
    # -- what to serve
    root_path: str = setting(
        "",
        group=SERVE,
        parse=_without_trailing_slash,
        metavar="PATH",
        help="the ASGI root_path: the prefix a reverse proxy mounts the app under",
    )
    tls: TLSConfig | None = None
    lifespan: Literal["auto", "on", "off"] = setting(
        "auto",
        group=SERVE,
        choices=("auto", "on", "off"),
        help="the ASGI lifespan protocol: use it if the app supports it (auto), require it "
        "(on), or never (off)",
    )
    lifespan_startup_timeout: float = 60.0
    lifespan_shutdown_timeout: float = 10.0
    cancel_on_disconnect: bool = setting(
        False,
        group=SERVE,
        kind="flag",
        help="cancel a request's handler when its client disconnects before the response ends",
    )
    fault_injection: bool = False
    # -- behind a proxy
    proxy_headers: Literal["off", "x-forwarded", "forwarded"] = setting(
        "off",
        group=PROXY,
        kind="optional",
        const="x-forwarded",
        choices=("off", "x-forwarded", "forwarded"),
        help="believe X-Forwarded-For/-Proto/-Host (x-forwarded, what the bare flag means) or "
        "RFC 7239 Forwarded from --forwarded-allow-ips",
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1",
        group=PROXY,
        metavar="LIST",
        help="trusted proxies: addresses, CIDRs, '*' or 'unix'",
    )
    proxy_protocol: bool = setting(
        False,
        group=PROXY,
        kind="flag",
        help="expect a PROXY protocol v1/v2 header on every connection (TCP load balancers)",
    )
    health_path: str | None = setting(
        None,
        group=PROXY,
        metavar="PATH",
        help="answer PATH (e.g. /healthz) in the server: 200, or 503 once draining",
    )
    # -- processes
    max_requests: int | None = setting(
        None,
        group=PROCESSES,
        parse=int,
        metavar="N",
        help="recycle a worker (drain and replace it) after about N requests",
    )
    max_requests_jitter: int = setting(
        0,
        group=PROCESSES,
        parse=int,
        metavar="N",
        help="add up to N, at random, to --max-requests, so workers do not recycle together",
    )
    asyncio_app: bool = setting(
        False,
        group=SERVE,
        kind="flag",
        help="the app needs asyncio (Django, Quart): run it through trio-asyncio "
        "(pip install 'trioserve[asyncio]')",
    )
    # interface and wsgi_threads: serve() and the command line wrap a WSGI app in WSGIApp (told
    # from the callable under "auto"); an ASGI app is served as it is.
    interface: Literal["auto", "asgi", "wsgi"] = setting(
        "auto",
        group=SERVE,
        choices=("auto", "asgi", "wsgi"),
        help="what kind of app APP is: told from the callable (auto: app(environ, "
        "start_response) is WSGI), ASGI 3 or 2, or WSGI (PEP 3333: Flask, Django's WSGI app)",
    )
    # http_parser: h11 is the reference and always installed; the fast path parses the plain
    # requests with exactly the same rules, its header fields split in Python or by httptools
    # (the speedups extra; trioserve/_h11/_fast.py); anything unusual still goes to h11. auto
    # is the Python split: measured, it is the faster of the two (see protocol_class).
    http_parser: Literal["auto", "h11", "httptools", "python"] = setting(
        "auto",
        group=SERVE,
        choices=("auto", "h11", "httptools", "python"),
        help="HTTP/1.1 request parser: the fast path in pure Python (auto, python) or with "
        "httptools splitting the header fields (pip install 'trioserve[speedups]'), or h11 "
        "alone; all decide alike",
    )
    wsgi_threads: int = setting(
        DEFAULT_WSGI_THREADS,
        group=SERVE,
        parse=int,
        metavar="N",
        help="worker threads a WSGI app runs in: the most WSGI requests served at once",
    )
    # -- websockets
    ws_max_message_size: int = _bytes(
        16 * MiB, "largest message accepted; bigger ones close the websocket with 1009", WEBSOCKETS
    )
    ws_ping_interval: float | None = setting(
        20.0,
        group=WEBSOCKETS,
        parse=parse_seconds_or_off,
        show=show_seconds,
        metavar="S",
        help="seconds between keepalive pings; 0 for none",
    )
    ws_ping_timeout: float = setting(
        20.0,
        group=WEBSOCKETS,
        parse=parse_seconds,
        show=show_seconds,
        metavar="S",
        help="seconds a pong may take before closing with 1011",
    )
    max_websockets: int | None = setting(
        None,
        group=WEBSOCKETS,
        parse=int,
        metavar="N",
        help="websockets open at once (they count as connections too); more upgrades get 503 "
        "(default: half of --max-connections)",
    )
    ws_per_message_deflate: bool = setting(
        True, group=WEBSOCKETS, kind="switch", help="accept permessage-deflate compression"
    )
    # -- HTTP/2
    http2: bool = setting(
        True,
        group=HTTP2,
        kind="switch",
        help="serve HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) on plain ports",
    )
    h2_max_concurrent_streams: int = setting(
        100,
        group=HTTP2,
        parse=int,
        metavar="N",
        help="streams a client may have open at once; more are refused with REFUSED_STREAM",
    )

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def scheme(self) -> str:
        """``"https"`` with TLS, else ``"http"``."""
        return "http" if self.tls is None else "https"

    @property
    def websocket_limit(self) -> int:
        """How many websockets may be open at once: ``max_websockets``, or half the slots."""
        if self.max_websockets is not None:
            return self.max_websockets
        return max(1, self.max_connections // 2)

    def replace(self, **changes: object) -> Config:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
