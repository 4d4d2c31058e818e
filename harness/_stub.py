"""The stub: an ASGI app made of expectations, with call records, faults and a report.

Every request is read whole, recorded, and matched against the routes registered with
``expect()``: ordered routes must be met in the order they were declared; the others are tried
in declaration order, skipping those whose ``times`` are used up. A match answers with the
route's responder (a canned response, a sequence, a stream, or a handler); no match answers with
the configured unmatched response and is remembered for the report. Handler exceptions answer
500 and are remembered too. :meth:`Stub.problems` lists what makes a strict test fail.

Faults misbehave on the wire through trioserve's ``trioserve.fault`` extension (raw bytes and
abrupt closes), so a client sees exactly what a broken server would send.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json as jsonlib
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import trio

from trioserve import ClientDisconnected, Receive, Scope, Send

__all__ = ["Fault", "Recorded", "Response", "Route", "Stub"]

Handler = Callable[["Recorded"], Any]
PathMatcher = str | re.Pattern[str] | Callable[[str], bool]


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str
    connection_id: int | None
    route: str | None = None
    status: int | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)


@dataclass(frozen=True)
class Fault:
    """A deterministic way for a response to go wrong. Build them with the class methods."""

    kind: str
    seconds: float = 0.0
    size: int = 0

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait before sending the response head."""
        return cls("delay", seconds=seconds)

    @classmethod
    def drip(cls, chunk_size: int, interval: float) -> Fault:
        """Send the body ``chunk_size`` bytes at a time, ``interval`` seconds apart."""
        return cls("drip", seconds=interval, size=chunk_size)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer (the server's teardown cancels it)."""
        return cls("hang")

    @classmethod
    def empty_response(cls) -> Fault:
        """Close the connection before sending any byte."""
        return cls("empty_response")

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (TCP RST) instead of answering."""
        return cls("reset")

    @classmethod
    def truncate(cls, after_bytes: int) -> Fault:
        """Declare the whole Content-Length, send only ``after_bytes`` of the body, close."""
        return cls("truncate", size=after_bytes)

    @classmethod
    def malformed_chunk(cls) -> Fault:
        """A chunked response whose first chunk-size line is not hexadecimal."""
        return cls("malformed_chunk")

    @classmethod
    def bad_status_line(cls) -> Fault:
        """A status line that is not HTTP."""
        return cls("bad_status_line")

    @classmethod
    def garbage_then_close(cls, size: int = 64) -> Fault:
        """``size`` bytes of binary garbage, then close."""
        return cls("garbage_then_close", size=size)

    @classmethod
    def close_after_response(cls) -> Fault:
        """Answer normally, then close without having said ``Connection: close``."""
        return cls("close_after_response")

    @classmethod
    def slow_headers(cls, interval: float) -> Fault:
        """Send the response head one line at a time, ``interval`` seconds apart."""
        return cls("slow_headers", seconds=interval)


@dataclass
class Response:
    """A canned response."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: Sequence[bytes] | None = None
    interval: float = 0.0
    fault: Fault | None = None

    @classmethod
    def make(
        cls,
        status: int = 200,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        text: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        fault: Fault | None = None,
    ) -> Response:
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        names = {name.lower() for name, _ in pairs}
        data = b""
        if json is not None:
            data = jsonlib.dumps(json).encode()
            if "content-type" not in names:
                pairs.append(("content-type", "application/json"))
        elif text is not None:
            data = text.encode()
            if "content-type" not in names:
                pairs.append(("content-type", "text/plain; charset=utf-8"))
        elif body is not None:
            data = body.encode() if isinstance(body, str) else body
        return cls(status, pairs, data, fault=fault)


def _as_response(value: Any) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, int):
        return Response.make(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return Response.make(value[0], **value[1])
    if isinstance(value, Mapping):
        return Response.make(**value)
    if isinstance(value, bytes | str):
        return Response.make(200, body=value)
    raise TypeError(f"cannot make a response from {value!r}")


class Route:
    """One expectation: what to match, how to answer, and the calls it got."""

    def __init__(
        self,
        method: str | None,
        path: PathMatcher,
        *,
        query: Mapping[str, str | Sequence[str]] | str | None,
        headers: Mapping[str, str | Callable[[str], bool]] | None,
        json: Any,
        body: bytes | None,
        predicate: Callable[[Recorded], bool] | None,
        times: int | None,
        ordered: bool,
        name: str,
    ) -> None:
        self.method = None if method is None else method.upper()
        self.path = path
        self.query = _normalise_query(query)
        self.headers = {key.lower(): value for key, value in (headers or {}).items()}
        self.json = json
        self.body = body
        self.predicate = predicate
        self.times = times
        self.ordered = ordered
        self.name = name
        self.calls: list[Recorded] = []
        self._responses: list[Response] = [Response.make(200)]
        self._repeat_last = True
        self._handler: Handler | None = None
        self._fault: Fault | None = None

    # -- answers ------------------------------------------------------------------------------

    def respond(
        self,
        status: int = 200,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        text: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> Route:
        """Answer every matching request with this response."""
        self._responses = [Response.make(status, json=json, body=body, text=text, headers=headers)]
        self._repeat_last = True
        self._handler = None
        return self

    def respond_seq(self, responses: Sequence[Any]) -> Route:
        """Answer the 1st, 2nd, ... matching request with these (then repeat the last one).

        Items: a status (``503``), ``(status, {"json": ...})``, a dict of ``respond`` arguments,
        or a :class:`Response`.
        """
        if not responses:
            raise ValueError("respond_seq needs at least one response")
        self._responses = [_as_response(item) for item in responses]
        self._repeat_last = True
        self._handler = None
        return self

    def respond_stream(
        self,
        chunks: Iterable[bytes | str],
        *,
        interval: float = 0.0,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> Route:
        """Answer with a chunked body, one chunk every ``interval`` seconds (SSE works too)."""
        data = [chunk.encode() if isinstance(chunk, str) else chunk for chunk in chunks]
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("content-type", content_type))
        self._responses = [Response(status, pairs, chunks=data, interval=interval)]
        self._repeat_last = True
        self._handler = None
        return self

    def respond_with(self, handler: Handler) -> Route:
        """Answer with ``handler(request)`` (sync or async), which returns what ``respond_seq``
        items may be (or a :class:`Response`)."""
        self._handler = handler
        return self

    def fault(self, fault: Fault) -> Route:
        """Make this route's responses fail in this way."""
        self._fault = fault
        return self

    # -- records ------------------------------------------------------------------------------

    @property
    def call_count(self) -> int:
        """How many requests matched."""
        return len(self.calls)

    @property
    def called(self) -> bool:
        """Whether any request matched."""
        return bool(self.calls)

    @property
    def called_once(self) -> bool:
        """Whether exactly one request matched."""
        return len(self.calls) == 1

    @property
    def exhausted(self) -> bool:
        """Whether ``times`` is used up."""
        return self.times is not None and len(self.calls) >= self.times

    @property
    def unmet(self) -> bool:
        """Whether fewer calls came than ``times`` asked for."""
        return self.times is not None and len(self.calls) < self.times

    def describe(self) -> str:
        path = self.path.pattern if isinstance(self.path, re.Pattern) else self.path
        parts = [self.method or "*", str(path)]
        if self.query is not None:
            parts.append(f"query={self.query}")
        if self.headers:
            parts.append(f"headers={self.headers}")
        if self.json is not None:
            parts.append(f"json={self.json!r}")
        return " ".join(parts)

    # -- matching -----------------------------------------------------------------------------

    def differences(self, request: Recorded) -> list[str]:
        """Why ``request`` does not match (empty when it does)."""
        problems = []
        if self.method is not None and request.method != self.method:
            problems.append(f"method: expected {self.method}, got {request.method}")
        if not _path_matches(self.path, request.path):
            problems.append(f"path: expected {self.describe().split(' ')[1]}, got {request.path}")
        if self.query is not None and request.query != self.query:
            problems.append(f"query: expected {self.query}, got {request.query}")
        for name, expected in self.headers.items():
            actual = request.header(name)
            ok = (
                expected(actual)
                if callable(expected) and actual is not None
                else actual == expected
            )
            if not ok:
                problems.append(f"header {name}: expected {expected!r}, got {actual!r}")
        if self.json is not None:
            try:
                actual_json = request.json()
            except ValueError:
                problems.append(f"json: expected {self.json!r}, got a body that is not JSON")
            else:
                if actual_json != self.json:
                    problems.append(f"json: expected {self.json!r}, got {actual_json!r}")
        if self.body is not None and request.body != self.body:
            problems.append(f"body: expected {self.body!r}, got {request.body!r}")
        if self.predicate is not None and not self.predicate(request):
            problems.append("predicate: returned false")
        return problems

    async def answer(self, request: Recorded) -> Response:
        index = len(self.calls) - 1
        if self._handler is not None:
            result = self._handler(request)
            if inspect.isawaitable(result):
                result = await result
            response = _as_response(result)
        else:
            response = self._responses[min(index, len(self._responses) - 1)]
        if self._fault is not None and response.fault is None:
            response = dataclasses.replace(response, fault=self._fault)
        return response


def _normalise_query(
    query: Mapping[str, str | Sequence[str]] | str | None,
) -> dict[str, list[str]] | None:
    if query is None:
        return None
    if isinstance(query, str):
        return parse_qs(query, keep_blank_values=True)
    return {key: [value] if isinstance(value, str) else list(value) for key, value in query.items()}


def _path_matches(matcher: PathMatcher, path: str) -> bool:
    if isinstance(matcher, str):
        return matcher == path
    if isinstance(matcher, re.Pattern):
        return matcher.fullmatch(path) is not None
    return bool(matcher(path))


class Stub:
    """The ASGI app of a harness server (see the module docstring)."""

    def __init__(self, fallback: Any = None) -> None:
        self.fallback = fallback
        self.routes: list[Route] = []
        self.log: list[Recorded] = []
        self.unmatched: list[tuple[Recorded, str]] = []
        self.errors: list[str] = []
        self.no_requests_expected = False
        self._unmatched_response = Response.make(
            500, text="harness: no expectation matched this request"
        )
        self._lock = threading.Lock()

    # -- configuration (any thread) -------------------------------------------------------------

    def expect(
        self,
        method: str | None,
        path: PathMatcher,
        *,
        query: Mapping[str, str | Sequence[str]] | str | None = None,
        headers: Mapping[str, str | Callable[[str], bool]] | None = None,
        json: Any = None,
        body: bytes | None = None,
        predicate: Callable[[Recorded], bool] | None = None,
        times: int | None = 1,
        ordered: bool = False,
    ) -> Route:
        with self._lock:
            route = Route(
                method,
                path,
                query=query,
                headers=headers,
                json=json,
                body=body,
                predicate=predicate,
                times=times,
                ordered=ordered,
                name=f"#{len(self.routes) + 1}",
            )
            self.routes.append(route)
            return route

    def on_unmatched(self, status: int = 500, **response: Any) -> None:
        self._unmatched_response = Response.make(status, **response)

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.log.clear()
            self.unmatched.clear()
            self.errors.clear()
            self.no_requests_expected = False

    def record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    # -- verdict --------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What makes a strict test fail: unmatched requests, unmet routes, errors."""
        with self._lock:
            found = []
            if self.no_requests_expected and self.log:
                found.append(f"expected no requests, got {len(self.log)}")
            found.extend(f"unmatched request: {r.method} {r.target}" for r, _ in self.unmatched)
            found.extend(
                f"unmet expectation {route.name} {route.describe()}: called "
                f"{route.call_count} of {route.times} times"
                for route in self.routes
                if route.unmet
            )
            found.extend(f"server error:\n{error}" for error in self.errors)
            return found

    def report(self) -> str:
        """The request table, unmatched requests with their nearest route, and errors."""
        with self._lock:
            lines = ["requests received:"]
            if not self.log:
                lines.append("  (none)")
            for number, request in enumerate(self.log, 1):
                lines.append(
                    f"  {number:>3}. {request.method} {request.target} -> {request.status} "
                    f"(route {request.route or '-'}, connection {request.connection_id})"
                )
            if self.routes:
                lines.append("expectations:")
                lines.extend(
                    f"  {route.name} {route.describe()}: called {route.call_count}"
                    + ("" if route.times is None else f" of {route.times}")
                    + " times"
                    for route in self.routes
                )
            for request, nearest in self.unmatched:
                lines.append(f"unmatched: {request.method} {request.target}")
                lines.append(nearest)
            if self.errors:
                lines.append("server errors:")
                lines.extend("  " + line for error in self.errors for line in error.splitlines())
            return "\n".join(lines)

    # -- serving --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            if self.fallback is not None:
                await self._call_fallback(scope, receive, send)
                return
            await send({"type": "websocket.close", "code": 1000})
            return
        body = b""
        if self.routes or self.fallback is None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        request = _record(scope, body)
        route, nearest = self._match(request)
        if route is None and self.fallback is not None:
            status: list[int] = []

            async def noting_send(message: Any) -> None:
                if message.get("type") == "http.response.start":
                    status.append(message["status"])
                await send(message)

            try:
                await self._call_fallback(scope, _replay(body, receive), noting_send)
            finally:
                with self._lock:
                    self.log.append(
                        dataclasses.replace(request, status=status[0] if status else 500)
                    )
            return
        if route is None:
            with self._lock:
                self.unmatched.append((request, nearest))
            response = self._unmatched_response
        else:
            try:
                response = await route.answer(request)
            except Exception:
                self.record_error(
                    f"handler of route {route.name} ({route.describe()}) raised:\n"
                    + traceback.format_exc()
                )
                response = Response.make(500, text="harness: the route's handler raised")
        with self._lock:
            self.log.append(
                dataclasses.replace(
                    request, route=None if route is None else route.name, status=response.status
                )
            )
        await _send_response(response, scope, send)

    def _match(self, request: Recorded) -> tuple[Route | None, str]:
        with self._lock:
            pending_ordered = [r for r in self.routes if r.ordered and not r.exhausted]
            candidates = [r for r in self.routes if not r.ordered and not r.exhausted]
            if pending_ordered:
                candidates.insert(0, pending_ordered[0])
            for route in candidates:
                if not route.differences(request):
                    route.calls.append(request)
                    return route, ""
            return None, self._nearest(request)

    def _nearest(self, request: Recorded) -> str:
        if not self.routes:
            return "  no expectations are registered"
        scored = sorted(self.routes, key=lambda route: len(route.differences(request)))
        best = scored[0]
        notes = [f"  nearest expectation {best.name}: {best.describe()}"]
        differences = best.differences(request)
        if best.exhausted:
            differences.append(f"times: already called {best.call_count} of {best.times}")
        if best.ordered and any(
            r.ordered and not r.exhausted for r in self.routes[: self.routes.index(best)]
        ):
            differences.append("ordered: an earlier ordered expectation is still pending")
        notes.extend(f"    - {line}" for line in differences)
        close = difflib.get_close_matches(
            request.path, [str(r.path) for r in self.routes if isinstance(r.path, str)], n=1
        )
        if close and close[0] != request.path:
            notes.append(f"    (did you mean path {close[0]!r}?)")
        return "\n".join(notes)

    async def _call_fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app behind the stub, keeping its exceptions for the report (and re-raising
        them, so that the server answers 500 as it would in production)."""
        assert self.fallback is not None
        try:
            await self.fallback(scope, receive, send)
        except Exception as exc:
            if not only_disconnects(exc):
                where = scope["type"] + " " + scope.get("path", "")
                self.record_error(f"the app raised ({where}):\n" + traceback.format_exc())
            raise

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fallback is not None:
            await self._call_fallback(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def only_disconnects(exc: BaseException) -> bool:
    """Whether ``exc`` is only the client going away (not an app bug)."""
    if isinstance(exc, ClientDisconnected):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_disconnects(inner) for inner in exc.exceptions)
    return False


def _record(scope: Scope, body: bytes) -> Recorded:
    query_string = scope.get("query_string", b"").decode("latin-1")
    target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    if query_string:
        target += "?" + query_string
    extension = scope.get("extensions", {}).get("trioserve.fault") or {}
    return Recorded(
        method=scope["method"],
        target=target,
        path=scope["path"],
        query=parse_qs(query_string, keep_blank_values=True),
        headers=[
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ],
        body=body,
        http_version=scope.get("http_version", "1.1"),
        connection_id=extension.get("connection_id"),
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_response(response: Response, scope: Scope, send: Send) -> None:
    fault = response.fault
    kind = None if fault is None else fault.kind
    if fault is not None and kind != "drip":
        if kind == "delay":
            await trio.sleep(fault.seconds)
        elif kind == "hang":
            await trio.sleep_forever()
        elif kind in ("empty_response", "reset"):
            await send({"type": "trioserve.fault.close", "reset": kind == "reset"})
            return
        elif kind in ("malformed_chunk", "bad_status_line", "garbage_then_close", "slow_headers"):
            await _send_raw(response, fault, send)
            return
    headers = _encode_headers(response.headers)
    if response.chunks is not None:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        for number, chunk in enumerate(response.chunks):
            if number and response.interval:
                await trio.sleep(response.interval)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        body = response.body
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if kind == "truncate":
            assert fault is not None
            part = body[: fault.size]
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "trioserve.fault.close", "reset": False})
            return
        if kind == "drip":
            assert fault is not None
            for start in range(0, len(body), max(fault.size, 1)):
                if start:
                    await trio.sleep(fault.seconds)
                piece = body[start : start + max(fault.size, 1)]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": body})
    if kind == "close_after_response":
        await send({"type": "trioserve.fault.close", "reset": False})


async def _send_raw(response: Response, fault: Fault, send: Send) -> None:
    if fault.kind == "bad_status_line":
        await send({"type": "trioserve.fault.raw", "data": b"HTPT/1.x 2OO MAYBE\r\n\r\n"})
    elif fault.kind == "malformed_chunk":
        await send(
            {
                "type": "trioserve.fault.raw",
                "data": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n",
            }
        )
    elif fault.kind == "garbage_then_close":
        garbage = bytes((index * 73 + 41) % 256 for index in range(fault.size))
        await send({"type": "trioserve.fault.raw", "data": garbage})
    else:  # slow_headers
        body = response.body
        lines = [f"HTTP/1.1 {response.status} OK\r\n".encode()]
        lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers]
        lines += [b"content-length: %d\r\n" % len(body), b"connection: close\r\n", b"\r\n"]
        for number, line in enumerate(lines):
            if number:
                await trio.sleep(fault.seconds)
            await send({"type": "trioserve.fault.raw", "data": line})
        await send({"type": "trioserve.fault.raw", "data": body})
    await send({"type": "trioserve.fault.close", "reset": False})
