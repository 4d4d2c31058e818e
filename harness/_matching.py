"""Expectations: what a request must look like to match a route, and how the route answers.

A :class:`Route` is a builder (``respond``, ``respond_seq``, ``respond_stream``,
``respond_with``, ``fault``) plus :meth:`Route.differences`, the field-by-field reasons a
:class:`Recorded` request does not match it (empty when it does). The head fields (method, path,
query, headers) can be checked before the request body is read; :attr:`Route.needs_body` says
whether the body fields (json, body, predicate) must be checked too.
"""

from __future__ import annotations

import dataclasses
import inspect
import json as jsonlib
import random
import re
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from trioserve import Scope

from ._faults import Fault, Response, as_response
from ._matchers import Matcher, json_differences

__all__ = ["Handler", "Headers", "PathMatcher", "Recorded", "Route", "ordinal", "record"]

Handler = Callable[["Recorded"], Any]
PathMatcher = str | re.Pattern[str] | Callable[[str], bool]


class Headers(Mapping[str, str]):
    """Request headers as a case-insensitive mapping: ``headers["Content-Type"]`` and
    ``headers.get(...)`` give the first value of a field, :meth:`get_all` every value.

    Args:
        pairs: The header fields in the order they came (names lower-case).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._all: dict[str, list[str]] = {}
        for name, value in pairs:
            self._all.setdefault(name.lower(), []).append(value)

    def __getitem__(self, name: str) -> str:
        return self._all[name.lower()][0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def get_all(self, name: str) -> list[str]:
        """Every value of field ``name``, in order (empty if absent)."""
        return list(self._all.get(name.lower(), ()))

    def __repr__(self) -> str:
        return f"Headers({self._all!r})"


@dataclass(frozen=True)
class Recorded:
    """One request the server received.

    ``headers`` is a case-insensitive mapping (first value of each field; ``get_all`` for every
    value); ``header_list`` the fields as they came, names lower-case. ``body`` is the whole
    request body; for a request answered by ``app=`` (which reads the body itself, as it
    arrives), it is the part the app read. ``http_version`` is ``"1.1"``, ``"1.0"`` or ``"2"``.
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    header_list: list[tuple[str, str]]
    body: bytes
    http_version: str
    connection_id: int | None
    route: str | None = None
    status: int | None = None
    #: The fault that broke the answer (its kind), if one did.
    fault: str | None = None

    @property
    def headers(self) -> Headers:
        """The header fields as a case-insensitive mapping."""
        return Headers(self.header_list)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((value for key, value in self.header_list if key == name), None)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)


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
        predicate: Callable[[Recorded], bool] | Matcher | None,
        times: int | None,
        ordered: bool,
        name: str,
        json_contains: Any = None,
    ) -> None:
        self.method = None if method is None else method.upper()
        self.path = path
        self.query = _normalise_query(query)
        self.headers = {key.lower(): value for key, value in (headers or {}).items()}
        self.json = json
        self.json_contains = json_contains
        self.body = body
        self.predicate = predicate
        self.times = times
        self.ordered = ordered
        self.name = name
        self.calls: list[Recorded] = []
        #: Tracebacks of this route's predicate, one per request it raised on.
        self.predicate_errors: list[str] = []
        self._responses: list[Response] = [Response.make(200)]
        self._repeat_last = True
        self._handler: Handler | None = None
        self._fault: Fault | None = None
        self._fail_rate = 1.0
        self.seed: int | None = None
        self._random = random.Random()

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
        self._responses = [as_response(item) for item in responses]
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

    def fault(self, fault: Fault, *, fail_rate: float = 1.0, seed: int | None = None) -> Route:
        """Make this route's responses fail in this way: all of them, or with ``fail_rate``
        (0 to 1) a random share of them, drawn from a generator seeded with ``seed`` so that
        the same requests fail the same way run after run (without ``seed``, one is picked
        and shown in the report, to replay a failure)."""
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, not {fail_rate!r}")
        self._fault = fault
        self._fail_rate = fail_rate
        if fail_rate < 1.0:
            self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
            self._random = random.Random(self.seed)
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
        if self.json_contains is not None:
            parts.append(f"json_contains={self.json_contains!r}")
        if self._fault is not None and self._fail_rate < 1.0:
            parts.append(f"fault={self._fault.kind} fail_rate={self._fail_rate} seed={self.seed}")
        return " ".join(parts)

    # -- matching -----------------------------------------------------------------------------

    @property
    def needs_body(self) -> bool:
        """Whether matching looks at the request body (json, body or predicate)."""
        return (
            self.json is not None
            or self.json_contains is not None
            or self.body is not None
            or self.predicate is not None
        )

    def differences(self, request: Recorded) -> list[str]:
        """Why ``request`` does not match (empty when it does)."""
        return self.head_differences(request) + self.body_differences(request)

    def head_differences(self, request: Recorded) -> list[str]:
        """Why the method, path, query or headers of ``request`` do not match."""
        problems = []
        if self.method is not None and request.method != self.method:
            problems.append(f"method: expected {self.method}, got {request.method}")
        if not _path_matches(self.path, request.path):
            problems.append(f"path: expected {self.describe().split(' ')[1]}, got {request.path}")
        if self.query is not None and request.query != self.query:
            problems.append(f"query: expected {self.query}, got {request.query}")
        for name, expected in self.headers.items():
            actual = request.header(name)
            if isinstance(expected, Matcher):
                difference = expected.difference(actual)
                if difference is not None:
                    problems.append(f"header {name}: {difference}")
                continue
            ok = (
                expected(actual)
                if callable(expected) and actual is not None
                else actual == expected
            )
            if not ok:
                problems.append(f"header {name}: expected {expected!r}, got {actual!r}")
        return problems

    def body_differences(self, request: Recorded) -> list[str]:
        """Why the body of ``request`` does not match (``predicate`` counts as a body field: it
        may look at anything)."""
        problems = []
        if self.json is not None:
            try:
                actual_json = request.json()
            except ValueError:
                problems.append(f"json: expected {self.json!r}, got a body that is not JSON")
            else:
                if actual_json != self.json:
                    problems.append(f"json: expected {self.json!r}, got {actual_json!r}")
        if self.json_contains is not None:
            try:
                actual_json = request.json()
            except ValueError:
                problems.append("json_contains: got a body that is not JSON")
            else:
                problems.extend(
                    f"json_contains {line}"
                    for line in json_differences(self.json_contains, actual_json)
                )
        if self.body is not None and request.body != self.body:
            problems.append(f"body: expected {self.body!r}, got {request.body!r}")
        if isinstance(self.predicate, Matcher):
            difference = self.predicate.difference(request)
            if difference is not None:
                problems.append(f"predicate: {difference}")
        elif self.predicate is not None:
            try:
                matched = self.predicate(request)
            except Exception as exc:
                # Reported with its traceback (the request stays unmatched, and logged).
                self.predicate_errors.append(
                    f"the predicate of expectation {self.name} raised on {request.method} "
                    f"{request.target}:\n" + traceback.format_exc()
                )
                problems.append(f"predicate: raised {exc!r}")
            else:
                if not matched:
                    problems.append("predicate: returned false")
        return problems

    async def answer(self, request: Recorded) -> Response:
        """The response to ``request``, the latest of this route's calls."""
        index = len(self.calls) - 1
        if self._handler is not None:
            result = self._handler(request)
            if inspect.isawaitable(result):
                result = await result
            response = as_response(result)
        else:
            response = self._responses[min(index, len(self._responses) - 1)]
        if self._fault is not None and response.fault is None and self._draw():
            response = dataclasses.replace(response, fault=self._fault)
        return response

    def _draw(self) -> bool:
        """Whether this response is broken (always, unless a ``fail_rate`` was given)."""
        return self._fail_rate >= 1.0 or self._random.random() < self._fail_rate


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


def record(scope: Scope, body: bytes = b"") -> Recorded:
    """The record of an HTTP request with this scope and body."""
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
        header_list=[
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ],
        body=body,
        http_version=scope.get("http_version", "1.1"),
        connection_id=extension.get("connection_id"),
    )


def ordinal(number: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``... ``11th``, ``12th``, ``21st``."""
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
