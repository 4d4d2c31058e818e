"""Prometheus metrics: one server's figures, their text exposition, and the app serving them.

Theory of operation
-------------------
The hot path pays a few integer increments per request and nothing more: the request cycle finds
the server's :class:`Metrics` in the :data:`current_metrics` context variable (set once by the
server for every task it starts; ``None`` when metrics are off) and calls :meth:`Metrics.record`
when a response ends. Everything else is read only when someone scrapes: open connections by
protocol, websockets, evictions and refusals come from the server's shared state, which keeps
them anyway.

A scrape turns the figures into :data:`Sample` triples (name, labels, value) and those into the
Prometheus text format (version 0.0.4) with :func:`render`. Samples are also what crosses
process boundaries under ``--workers`` (as JSON, see ``_metrics_hub``): sums of samples are
samples, so one worker's figures and the supervisor's totals are rendered alike.

Why not ``prometheus_client``: each of its ``Counter.labels(...).inc()`` takes a lock and a
label lookup (a microsecond or so, many times a plain increment), and its multiprocess mode
(for ``--workers``) reads ``PROMETHEUS_MULTIPROC_DIR`` from the environment at import and
writes an mmap'd file on every increment. The text format is a page of specification; writing
it here keeps the hot path at integer increments and adds no dependency.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

import trio

from ._types import Receive, Scope, Send

if TYPE_CHECKING:
    from ._http._state import ServerState

__all__ = [
    "BUCKETS",
    "FAMILIES",
    "Metrics",
    "MetricsApp",
    "Sample",
    "current_metrics",
    "decode_samples",
    "encode_samples",
    "render",
]

Labels = tuple[tuple[str, str], ...]
#: One line of the exposition: the sample's name, its labels, its value.
Sample = tuple[str, Labels, float]

#: Each metric family: its type and help text, in the order the exposition prints them.
FAMILIES: Final[dict[str, tuple[str, str]]] = {
    "trioserve_requests_total": (
        "counter",
        "HTTP requests answered, by method, status class and protocol",
    ),
    "trioserve_request_duration_seconds": (
        "histogram",
        "Time from a request's head to the end of its response",
    ),
    "trioserve_requests_in_flight": ("gauge", "Requests being answered now"),
    "trioserve_response_body_bytes_total": ("counter", "Response body bytes sent"),
    "trioserve_connections_open": (
        "gauge",
        "Connections open now, by protocol (setup: PROXY header or TLS handshake under way)",
    ),
    "trioserve_tls_handshakes_total": ("counter", "TLS handshakes, by result"),
    "trioserve_websockets_open": ("gauge", "Websocket sessions open now"),
    "trioserve_connections_refused_total": (
        "counter",
        "Connections or upgrades refused at a cap, by reason",
    ),
    "trioserve_connections_evicted_total": (
        "counter",
        "Connections closed to make room for new clients, by reason",
    ),
}

# Prometheus client libraries' default buckets: from 5 ms (a cached page) to 10 s (past which
# a request is better watched in its own logs); one more bucket is a few bytes per worker.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Methods counted by name; any other token is "other", so that a client sending made-up methods
# cannot grow the table (or the scrape) without bound.
_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
_PROTOCOLS: Final = {"1.0": "HTTP/1.0", "1.1": "HTTP/1.1", "2": "HTTP/2"}
_STATUS_CLASSES: Final = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

#: The server's metrics in the tasks it runs (``None``: metrics are off).
current_metrics: ContextVar[Metrics | None] = ContextVar("trioserve_metrics", default=None)


class Metrics:
    """The figures of one server process.

    Args:
        state: The server's shared state (connections, websockets, evictions, refusals, TLS).
        classify: The protocol label of one of ``state.connections``.
    """

    __slots__ = (
        "_classify",
        "_state",
        "body_bytes",
        "duration_sum",
        "durations",
        "finished",
        "in_flight",
        "requests",
    )

    def __init__(self, state: ServerState, classify: Callable[[object], str]) -> None:
        self._state = state
        self._classify = classify
        #: Requests answered by (method, status // 100, http_version).
        self.requests: dict[tuple[str, int, str], int] = {}
        #: Request durations per bucket (not cumulative); the last one is +Inf.
        self.durations = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.body_bytes = 0
        self.in_flight = 0
        #: Set once the server has closed its last connection: no figure changes after it.
        self.finished = trio.Event()

    def record(self, scope: Scope, status: int, body_bytes: int, duration: float) -> None:
        """One response ended (the hot path: keep it a few increments)."""
        method = scope["method"]
        if method not in _METHODS:
            method = "other"
        key = (method, status // 100, scope["http_version"])
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.durations[bisect_left(BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.body_bytes += body_bytes

    async def collect(self) -> list[Sample]:
        """:meth:`samples`, for :class:`MetricsApp`."""
        return self.samples()

    def samples(self) -> list[Sample]:
        """Every figure now, in :data:`FAMILIES` order."""
        out: list[Sample] = []
        for (method, status_class, version), count in sorted(self.requests.items()):
            labels = (
                ("method", method),
                ("status", _STATUS_CLASSES[status_class] if status_class < 6 else "other"),
                ("protocol", _PROTOCOLS.get(version, f"HTTP/{version}")),
            )
            out.append(("trioserve_requests_total", labels, count))
        cumulative = 0
        for bound, count in zip((*BUCKETS, math.inf), self.durations, strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else repr(bound)
            out.append(("trioserve_request_duration_seconds_bucket", (("le", le),), cumulative))
        out.append(("trioserve_request_duration_seconds_sum", (), self.duration_sum))
        out.append(("trioserve_request_duration_seconds_count", (), cumulative))
        out.append(("trioserve_requests_in_flight", (), self.in_flight))
        out.append(("trioserve_response_body_bytes_total", (), self.body_bytes))
        state = self._state
        protocols = {"HTTP/1.1": 0, "HTTP/2": 0, "setup": 0}
        for connection in state.connections:
            name = self._classify(connection)
            protocols[name] = protocols.get(name, 0) + 1
        out.extend(
            ("trioserve_connections_open", (("protocol", name),), count)
            for name, count in protocols.items()
        )
        out.extend(_by("trioserve_tls_handshakes_total", "result", state.tls_handshakes))
        out.append(("trioserve_websockets_open", (), state.websockets))
        out.extend(_by("trioserve_connections_refused_total", "reason", state.refusals))
        out.extend(_by("trioserve_connections_evicted_total", "reason", state.evictions))
        return out


def _by(name: str, label: str, counts: Mapping[str, int]) -> list[Sample]:
    return [(name, ((label, key),), value) for key, value in sorted(counts.items())]


# -- the text format ------------------------------------------------------------------------------


def family_of(name: str) -> str:
    """The family a sample belongs to (a histogram's ``_bucket``, ``_sum``, ``_count`` too)."""
    if name in FAMILIES:
        return name
    base, _, suffix = name.rpartition("_")
    if suffix in ("bucket", "sum", "count") and base in FAMILIES:
        return base
    raise KeyError(name)


def is_cumulative(name: str) -> bool:
    """Whether a sample only ever grows (counters, histograms): what a retired worker leaves."""
    return FAMILIES[family_of(name)][0] != "gauge"


def render(samples: Iterable[Sample]) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``samples``, grouped by family."""
    grouped: dict[str, list[Sample]] = {name: [] for name in FAMILIES}
    for sample in samples:
        grouped[family_of(sample[0])].append(sample)
    lines: list[str] = []
    for family, members in grouped.items():
        kind, help_text = FAMILIES[family]
        lines.append(f"# HELP {family} {_escape_help(help_text)}")
        lines.append(f"# TYPE {family} {kind}")
        for name, labels, value in members:
            if labels:
                text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
                lines.append(f"{name}{{{text}}} {_format_value(value)}")
            else:
                lines.append(f"{name} {_format_value(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def sum_samples(*groups: Iterable[Sample]) -> list[Sample]:
    """Samples with the same name and labels added up (first-seen order kept)."""
    totals: dict[tuple[str, Labels], float] = {}
    for group in groups:
        for name, labels, value in group:
            key = (name, labels)
            totals[key] = totals.get(key, 0) + value
    return [(name, labels, value) for (name, labels), value in totals.items()]


def encode_samples(samples: Iterable[Sample]) -> bytes:
    """Samples as JSON, for the supervisor."""
    rows = [[name, [list(pair) for pair in labels], value] for name, labels, value in samples]
    return json.dumps(rows).encode()


def decode_samples(data: bytes) -> list[Sample]:
    """The inverse of :func:`encode_samples`.

    Raises:
        ValueError: not what :func:`encode_samples` writes (or an unknown metric).
    """
    out: list[Sample] = []
    try:
        for name, labels, value in json.loads(data):
            family_of(name)
            if not isinstance(value, int | float):
                raise ValueError(f"not a number: {value!r}")
            out.append((str(name), tuple((str(k), str(v)) for k, v in labels), value))
    except (TypeError, KeyError) as exc:
        raise ValueError(f"not a metrics snapshot: {exc!r}") from None
    return out


# -- the app on the metrics listener ---------------------------------------------------------------

#: The supervisor's requests to a worker's metrics listener: its figures now, and its figures
#: once it has closed its last connection (answered then: a long poll the supervisor holds open).
SNAPSHOT_PATH: Final = "/_trioserve/snapshot"
FINAL_PATH: Final = "/_trioserve/final"


class MetricsApp:
    """The ASGI app of a metrics listener: ``GET /metrics`` in the Prometheus text format.

    Args:
        collect: The samples to show (awaited at each scrape).
        finished: When given, also answer the supervisor's :data:`SNAPSHOT_PATH` and
            :data:`FINAL_PATH` (the latter once ``finished`` is set).
    """

    def __init__(
        self,
        collect: Callable[[], Awaitable[list[Sample]]],
        finished: trio.Event | None = None,
    ) -> None:
        self._collect = collect
        self._finished = finished

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off on metrics listeners; websockets are not served
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"text/plain", b"GET only\n")
        elif path == "/metrics":
            body = render(await self._collect()).encode()
            await _answer(send, 200, b"text/plain; version=0.0.4; charset=utf-8", body)
        elif self._finished is not None and path in (SNAPSHOT_PATH, FINAL_PATH):
            if path == FINAL_PATH:
                await self._finished.wait()
            await _answer(send, 200, b"application/json", encode_samples(await self._collect()))
        else:
            await _answer(send, 404, b"text/plain", b"Metrics are at /metrics\n")


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
