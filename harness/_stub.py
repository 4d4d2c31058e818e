"""The stub: an ASGI app made of expectations, with call records, faults and a report.

Every request is recorded and matched against the routes registered with ``expect()``: ordered
routes must be met in the order they were declared; the others are tried in declaration order,
skipping those whose ``times`` are used up. A match answers with the route's responder (a canned
response, a sequence, a stream, or a handler; see ``_matching``), broken by its fault if it has
one (see ``_faults``); no match answers with the configured unmatched response and is
remembered for the report. Handler exceptions answer 500 and are remembered too.
:meth:`Stub.problems` lists what makes a strict test fail.

The body is read by whoever answers. When an app is behind the stub and no route's head
(method, path, query, headers) fits a request, the app gets it untouched and reads the body as
it arrives; otherwise the stub reads the body whole (routes may match on it), and a request that
still falls through reaches the app with that body replayed.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from trioserve import ClientDisconnected, Message, Receive, Scope, Send

from ._faults import Response, send_response
from ._lifespan import complete_lifespan, run_app_lifespan
from ._matchers import Matcher
from ._matching import PathMatcher, Recorded, Route, ordinal, record
from ._websocket import WebSocketRoute

__all__ = ["Stub", "only_disconnects"]


class Stub:
    """The ASGI app of a harness server (see the module docstring)."""

    def __init__(self, fallback: Any = None, *, lifespan: str = "auto") -> None:
        self.fallback = fallback
        #: The server's lifespan mode: under "auto" an app that refuses the lifespan scope is
        #: served without it, as trioserve itself would.
        self.lifespan_mode = lifespan
        self.routes: list[Route] = []
        self.log: list[Recorded] = []
        #: Unmatched requests, each with the nearest expectation and a one-line reason.
        self.unmatched: list[tuple[Recorded, str, str]] = []
        self.errors: list[str] = []
        self.no_requests_expected = False
        self.websockets: list[WebSocketRoute] = []
        #: Whether on_unmatched() was called: unmatched requests are then answered, not failures.
        self.unmatched_allowed = False
        self._unmatched_response = Response.make(
            500, text="harness: no expectation matched this request"
        )
        self._lock = threading.Lock()
        # Notified at every log entry, for wait_for() in other threads...
        self._logged = threading.Condition(self._lock)
        # ...and set (then replaced) at every entry, for waiters in the server's own trio run.
        self._logged_event = trio.Event()

    # -- configuration (any thread) -------------------------------------------------------------

    def expect(
        self,
        method: str | None,
        path: PathMatcher,
        *,
        query: Mapping[str, str | Sequence[str]] | str | None = None,
        headers: Mapping[str, str | Callable[[str], bool]] | None = None,
        json: Any = None,
        json_contains: Any = None,
        body: bytes | None = None,
        predicate: Callable[[Recorded], bool] | Matcher | None = None,
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
                json_contains=json_contains,
            )
            self.routes.append(route)
            return route

    def expect_websocket(self, path: str, *, times: int | None = 1) -> WebSocketRoute:
        with self._lock:
            route = WebSocketRoute(path, times=times, name=f"#ws{len(self.websockets) + 1}")
            self.websockets.append(route)
            return route

    def on_unmatched(self, status: int = 500, **response: Any) -> None:
        self._unmatched_response = Response.make(status, **response)
        self.unmatched_allowed = True

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.websockets.clear()
            self.log.clear()
            self.unmatched.clear()
            self.errors.clear()
            self.no_requests_expected = False
            self.unmatched_allowed = False

    def _append_log(self, entry: Recorded) -> None:
        with self._lock:
            self.log.append(entry)
            self._logged.notify_all()
            event, self._logged_event = self._logged_event, trio.Event()
        event.set()

    def find(self, predicate: Callable[[Recorded], bool] | None) -> Recorded | None:
        """The first logged request ``predicate`` accepts (any, without one), or ``None``."""
        with self._lock:
            return next((r for r in self.log if predicate is None or predicate(r)), None)

    def wait(self, predicate: Callable[[Recorded], bool] | None, timeout: float) -> Recorded | None:
        """Block this thread until :meth:`find` finds a request (``None`` after ``timeout``)."""
        found: list[Recorded] = []
        scanned = 0

        def seen() -> bool:  # called with the lock held
            nonlocal scanned
            found.extend(r for r in self.log[scanned:] if predicate is None or predicate(r))
            scanned = len(self.log)
            return bool(found)

        with self._logged:
            self._logged.wait_for(seen, timeout)
        return found[0] if found else None

    async def wait_async(self, predicate: Callable[[Recorded], bool] | None) -> Recorded:
        """Wait (in the server's own trio run) until :meth:`find` finds a request."""
        while True:
            with self._lock:
                event = self._logged_event
            found = self.find(predicate)
            if found is not None:
                return found
            await event.wait()

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
            if not self.unmatched_allowed:
                found.extend(
                    f"unmatched request: {r.method} {r.target}" + (f" ({why})" if why else "")
                    for r, _, why in self.unmatched
                )
            found.extend(
                f"unmet expectation {route.name} {route.describe()}: called "
                f"{route.call_count} of {route.times} times"
                for route in self.routes
                if route.unmet
            )
            found.extend(
                f"server error:\n{error}"
                for route in self.routes
                for error in route.predicate_errors
            )
            found.extend(problem for route in self.websockets for problem in route.problems())
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
                    + (
                        ""
                        if request.http_version == "1.1"
                        else f" over HTTP/{request.http_version}"
                    )
                    + ("" if request.fault is None else f", broken by fault {request.fault}")
                )
            if self.routes:
                lines.append("expectations:")
                lines.extend(
                    f"  {route.name} {route.describe()}: called {route.call_count}"
                    + ("" if route.times is None else f" of {route.times}")
                    + " times"
                    for route in self.routes
                )
            if self.websockets:
                lines.append("websocket expectations:")
            for ws in self.websockets:
                lines.append(f"  {ws.name} {ws.describe()}: connected {ws.call_count} times")
                lines.extend(
                    f"    session {number}: received {session.received!r}, sent "
                    f"{session.sent!r}, closed {session.close_code}"
                    for number, session in enumerate(ws.sessions, 1)
                )
            if self.unmatched and self.unmatched_allowed:
                lines.append("unmatched requests were allowed (on_unmatched)")
            for request, nearest, _ in self.unmatched:
                lines.append(f"unmatched: {request.method} {request.target}")
                lines.append(nearest)
            errors = [e for route in self.routes for e in route.predicate_errors] + self.errors
            if errors:
                lines.append("server errors:")
                lines.extend("  " + line for error in errors for line in error.splitlines())
            return "\n".join(lines)

    # -- serving --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        head = record(scope)
        if self.fallback is not None and not self._may_answer(head):
            # Only the app can answer: it reads the body itself, as it arrives.
            await self._serve_app(head, scope, receive, send, body_read=False)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its whole body
        request = dataclasses.replace(head, body=body)
        route, nearest, why = self._match(request)
        if route is None and self.fallback is not None:
            await self._serve_app(request, scope, _replay(body, receive), send, body_read=True)
            return
        if route is None:
            with self._lock:
                self.unmatched.append((request, nearest, why))
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
        self._append_log(
            dataclasses.replace(
                request,
                route=None if route is None else route.name,
                status=response.status,
                fault=None if response.fault is None else response.fault.kind,
            )
        )
        await send_response(response, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket route's script; else the app; else a refusal, failing a strict check."""
        with self._lock:
            route = next(
                (r for r in self.websockets if r.path == scope["path"] and not r.exhausted), None
            )
        if route is not None:
            await route.serve(scope, receive, send)
            return
        if self.fallback is not None:
            await self._call_fallback(scope, receive, send)
            return
        request = record({**scope, "method": "WEBSOCKET"})
        with self._lock:
            self.unmatched.append((request, "  no websocket expectation matched", ""))
        await send({"type": "websocket.close", "code": 1000})

    def _candidates(self) -> list[Route]:
        """The routes that may take the next request (call with the lock held)."""
        pending_ordered = [r for r in self.routes if r.ordered and not r.exhausted]
        candidates = [r for r in self.routes if not r.ordered and not r.exhausted]
        if pending_ordered:
            candidates.insert(0, pending_ordered[0])
        return candidates

    def _may_answer(self, head: Recorded) -> bool:
        """Whether a route may answer a request with this head (its body still unread)."""
        with self._lock:
            return any(not route.head_differences(head) for route in self._candidates())

    def _match(self, request: Recorded) -> tuple[Route | None, str, str]:
        """The route that takes ``request``; else ``None``, the nearest-expectation notes and a
        one-line reason. Each route's predicate runs at most once per request."""
        with self._lock:
            differences: dict[int, list[str]] = {}
            for route in self._candidates():
                differences[id(route)] = route.differences(request)
                if not differences[id(route)]:
                    route.calls.append(request)
                    return route, "", ""
            for route in self.routes:
                if id(route) not in differences:
                    differences[id(route)] = route.differences(request)
            return None, *self._nearest(request, differences)

    def _nearest(self, request: Recorded, differences: dict[int, list[str]]) -> tuple[str, str]:
        if not self.routes:
            return "  no expectations are registered", ""
        best = min(self.routes, key=lambda route: len(differences[id(route)]))
        notes = [f"  nearest expectation {best.name}: {best.describe()}"]
        found = list(differences[id(best)])
        why = ""
        if best.exhausted:
            found.append(f"times: already called {best.call_count} of {best.times}")
            if not differences[id(best)]:
                why = (
                    f"{ordinal(best.call_count + 1)} request to {request.method} {request.path}: "
                    f"expectation {best.name} allowed {best.times}; pass times=None for any "
                    "number"
                )
        if best.ordered and any(
            r.ordered and not r.exhausted for r in self.routes[: self.routes.index(best)]
        ):
            found.append("ordered: an earlier ordered expectation is still pending")
        notes.extend(f"    - {line}" for line in found)
        close = difflib.get_close_matches(
            request.path, [str(r.path) for r in self.routes if isinstance(r.path, str)], n=1
        )
        if close and close[0] != request.path:
            notes.append(f"    (did you mean path {close[0]!r}?)")
        return "\n".join(notes), why

    async def _serve_app(
        self, request: Recorded, scope: Scope, receive: Receive, send: Send, *, body_read: bool
    ) -> None:
        """Let the app answer ``request``, and log it.

        When the stub has not read the body (``body_read`` false), the app reads it through
        ``receive`` as the client sends it (so ``Expect: 100-continue`` is answered only when the
        app asks for the body), and the log records the body the app read. The log entry is
        written before the last message of the response goes out, so a client that has the whole
        response also finds its request in the log.
        """
        chunks: list[bytes] = []
        status: int | None = None
        logged = False

        def log() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            entry = dataclasses.replace(request, status=500 if status is None else status)
            if not body_read:
                entry = dataclasses.replace(entry, body=b"".join(chunks))
            self._append_log(entry)

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body", False)
            ):
                log()
            await send(message)

        try:
            await self._call_fallback(scope, recording_receive, recording_send)
        finally:
            log()

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
        if self.fallback is None:
            await complete_lifespan(receive, send)
            return
        await run_app_lifespan(
            self.fallback, self.lifespan_mode, scope, receive, send, self.record_error
        )


def only_disconnects(exc: BaseException) -> bool:
    """Whether ``exc`` is only the client going away (not an app bug)."""
    if isinstance(exc, ClientDisconnected):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_disconnects(inner) for inner in exc.exceptions)
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client disconnects first. (trioserve's
    ``max_body_size``, 100 MiB by default, bounds it: larger bodies are refused with 413.)"""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for an app, after the stub has read the whole body."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
