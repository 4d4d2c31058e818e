"""The ASGI ``http`` scope of one request, built from a protocol-neutral request head.

Both wire protocols describe a request as a :class:`RequestHead` plus what they know of the
connection (:class:`ConnectionInfo`); this module turns those into the scope an app receives,
including the rewrite of client, scheme and Host from a trusted proxy's headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from .._config import Config
from .._errors import RequestRefused
from .._proxy import TrustedPeers, read_forwarded
from .._types import ASGIInfo, HTTPScope, Scope
from ._authority import valid_host
from ._events import RequestHead
from ._state import ServerState

__all__ = [
    "ASGI_INFO",
    "ConnectionInfo",
    "build_scope",
    "connection_info",
    "format_address",
    "origin_form",
    "target_authority",
    "websocket_scope",
]

ASGI_INFO: Final[ASGIInfo] = {"version": "3.0", "spec_version": "2.4"}


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What every request of one connection shares in its scope.

    ``forwarded`` is the proxy-header mode to apply (``None``: the peer is not trusted, or proxy
    headers are off): decided once per connection.
    """

    client: tuple[str, int] | None
    server: tuple[str, int] | None
    scheme: str
    tls: dict[str, Any] | None
    forwarded: str | None
    trusted: TrustedPeers | None
    connection_id: int


def connection_info(
    state: ServerState,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    scheme: str,
    tls: dict[str, Any] | None,
) -> ConnectionInfo:
    """What the requests of a new connection share (numbers the connection)."""
    config = state.config
    trusted = state.trusted
    return ConnectionInfo(
        client=client,
        server=server,
        scheme=scheme,
        tls=tls,
        # Proxy headers count only from a trusted peer; decided once per connection.
        forwarded=(
            config.proxy_headers
            if trusted is not None
            and config.proxy_headers != "off"
            and trusted.trusts(None if client is None else client[0])
            else None
        ),
        trusted=trusted,
        connection_id=next(state.connection_ids),
    )


def build_scope(
    head: RequestHead, info: ConnectionInfo, config: Config, state: dict[str, Any]
) -> Scope:
    """The ``http`` scope for ``head``.

    Raises:
        RequestRefused: the request target is malformed (400).
    """
    target = head.target
    headers = head.headers
    if target[:1] != b"/":
        authority = target_authority(target)
        if authority is not None:
            # RFC 9112 section 3.2.2: with an absolute-form target, the target's authority is
            # the host, whatever the Host header says.
            headers = _with_host(headers, authority)
        target = origin_form(target)
    raw_path, _, query = target.partition(b"?")
    path = raw_path.decode("ascii")
    if "%" in path:
        path = unquote(path)
    root_path = config.root_path
    extensions: dict[str, Any] = {"http.response.pathsend": {}, "http.response.trailers": {}}
    if info.tls is not None:
        extensions["tls"] = info.tls
    if config.fault_injection:
        extensions["trioserve.fault"] = {"connection_id": info.connection_id}
    # Typed as HTTPScope while it is built (every field checked), handed out as a plain mapping
    # (what apps get, and what they may change).
    built: HTTPScope = {
        "type": "http",
        "asgi": ASGI_INFO,
        "http_version": head.http_version,
        "server": info.server,
        "client": info.client,
        "scheme": info.scheme,
        "method": head.method.decode("ascii"),
        "root_path": root_path,
        "path": root_path + path if root_path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": list(headers),
        "state": state.copy(),
        "extensions": extensions,
    }
    # (Not typing.cast: in the pure build that is a function call on every request.)
    scope: Scope = built  # type: ignore[assignment]
    if info.forwarded is not None:
        _apply_forwarded(scope, info)
    return scope


def websocket_scope(
    head: RequestHead, info: ConnectionInfo, config: Config, state: dict[str, Any]
) -> Scope:
    """The ``websocket`` scope for an upgrade request ``head``.

    Raises:
        RequestRefused: the request target is malformed (400).
    """
    scope = build_scope(head, info, config, state)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
    del scope["method"]
    scope["extensions"] = {"websocket.http.response": {}}
    if info.tls is not None:
        scope["extensions"]["tls"] = info.tls
    if config.fault_injection:
        scope["extensions"]["trioserve.fault"] = {"connection_id": info.connection_id}
    return scope


def _apply_forwarded(scope: Scope, info: ConnectionInfo) -> None:
    """Rewrite client, scheme and Host from a trusted proxy's headers."""
    assert info.forwarded is not None
    assert info.trusted is not None
    forwarded = read_forwarded(scope["headers"], info.forwarded, info.trusted)
    if forwarded.client is not None:
        scope["client"] = (forwarded.client, 0)
    if forwarded.scheme in ("http", "https"):
        scope["scheme"] = forwarded.scheme
    if forwarded.host is not None:
        host = forwarded.host.encode("latin-1")
        scope["headers"] = [
            (name, host if name == b"host" else value) for name, value in scope["headers"]
        ]


def target_authority(target: bytes) -> bytes | None:
    """The authority of an absolute-form target (``None`` for another form).

    Raises:
        RequestRefused: the authority is not ``host[:port]`` (userinfo, an empty host) (400).
    """
    _, sep, rest = target.partition(b"://")
    if not sep:
        return None
    end = len(rest)
    for index, char in enumerate(rest):
        if char in b"/?":
            end = index
            break
    authority = rest[:end]
    # An http(s) URI with an empty host is invalid (RFC 9110 section 4.2.1).
    if not authority or authority[:1] == b":" or not valid_host(authority):
        raise RequestRefused(400, "Malformed request target: invalid authority.")
    return authority


def _with_host(headers: Sequence[tuple[bytes, bytes]], host: bytes) -> list[tuple[bytes, bytes]]:
    replaced = [(name, host if name == b"host" else value) for name, value in headers]
    if not any(name == b"host" for name, _ in headers):
        replaced.append((b"host", host))
    return replaced


def origin_form(target: bytes) -> bytes:
    """The path-and-query part of an absolute-form (or asterisk-form) request target.

    Raises:
        RequestRefused: not an ``http`` or ``https`` URL (400).
    """
    if target == b"*":
        return target
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise RequestRefused(400, "Malformed request target.")
    for index, char in enumerate(rest):
        if char in b"/?":
            rest = rest[index:]
            break
    else:
        return b"/"
    return rest if rest[:1] == b"/" else b"/" + rest


def format_address(address: object) -> str:
    """``host:port`` (brackets around IPv6 hosts), ``unix:PATH``, or ``-`` when unknown.

    ``address`` is a scope's ``client`` or ``server`` (which an app or middleware may have
    rewritten: any two items, a list as well as a tuple), or a unix socket's path.
    """
    if address is None:
        return "-"
    if isinstance(address, str):
        return f"unix:{address}"
    pair: Any = address
    try:
        first, port = pair
    except (TypeError, ValueError):
        return str(address)
    host = str(first)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
