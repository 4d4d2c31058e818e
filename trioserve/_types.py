"""The ASGI 3 types, defined once for trioserve and harness.

The callables (``ASGIApp``, ``Receive``, ``Send``) take and give plain mappings, because that is
what apps exchange with any server; the TypedDicts below describe what trioserve itself builds
(scopes) and the messages it understands, so that code which builds one is checked field by field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

__all__ = [
    "ASGIApp",
    "ASGIInfo",
    "HTTPDisconnectEvent",
    "HTTPRequestEvent",
    "HTTPResponseBodyEvent",
    "HTTPResponsePathsendEvent",
    "HTTPResponseStartEvent",
    "HTTPScope",
    "Headers",
    "LifespanScope",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "WebSocketScope",
]

#: Any ASGI scope, as an app receives it.
Scope: TypeAlias = MutableMapping[str, Any]
#: Any ASGI event, in either direction.
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Header fields as ASGI carries them: lowercased names (on requests), raw bytes.
Headers: TypeAlias = list[tuple[bytes, bytes]]


class ASGIInfo(TypedDict):
    version: str
    spec_version: str


class HTTPScope(TypedDict):
    """An ``http`` connection scope (ASGI HTTP spec 2.4)."""

    type: Literal["http"]
    asgi: ASGIInfo
    http_version: str
    server: tuple[str, int] | None
    client: tuple[str, int] | None
    scheme: str
    method: str
    root_path: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: Iterable[tuple[bytes, bytes]]
    state: dict[str, Any]
    extensions: dict[str, Any]


class WebSocketScope(TypedDict):
    """A ``websocket`` connection scope."""

    type: Literal["websocket"]
    asgi: ASGIInfo
    http_version: str
    server: tuple[str, int] | None
    client: tuple[str, int] | None
    scheme: str
    root_path: str
    path: str
    raw_path: bytes
    query_string: bytes
    headers: Iterable[tuple[bytes, bytes]]
    subprotocols: NotRequired[list[str]]
    state: dict[str, Any]
    extensions: dict[str, Any]


class LifespanScope(TypedDict):
    type: Literal["lifespan"]
    asgi: ASGIInfo
    state: dict[str, Any]


class HTTPRequestEvent(TypedDict):
    type: Literal["http.request"]
    body: bytes
    more_body: bool


class HTTPDisconnectEvent(TypedDict):
    type: Literal["http.disconnect"]


class HTTPResponseStartEvent(TypedDict):
    type: Literal["http.response.start"]
    status: int
    headers: NotRequired[Iterable[tuple[bytes, bytes]]]
    trailers: NotRequired[bool]


class HTTPResponseBodyEvent(TypedDict):
    type: Literal["http.response.body"]
    body: NotRequired[bytes]
    more_body: NotRequired[bool]


class HTTPResponsePathsendEvent(TypedDict):
    type: Literal["http.response.pathsend"]
    path: str
