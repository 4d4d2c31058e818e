"""The access log's lines, for the responses of apps and of the server itself, and the hint
for an app that needs asyncio."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from sniffio import AsyncLibraryNotFoundError

from .._accesslog import AccessRecord
from .._config import Config
from .._types import Scope
from ._events import RequestHead
from ._scope import ConnectionInfo, format_address

__all__ = ["ASYNCIO_HINT", "log_access", "log_error_response", "needs_asyncio"]

access_log = logging.getLogger("trioserve.access")

_ERROR_HEADERS: Final = ((b"content-type", b"text/plain; charset=utf-8"),)


def log_access(
    config: Config,
    scope: Scope,
    target: bytes,
    status: int,
    bytes_sent: int,
    duration: float,
    response_headers: Sequence[tuple[bytes, bytes]],
) -> None:
    """Write one access-log line (the default format, a template, or JSON)."""
    if config.access_log_format is not None or config.access_log_json:
        tls: dict[str, Any] | None = scope["extensions"].get("tls")
        record = AccessRecord(
            client=format_address(scope.get("client")),
            method=scope["method"],
            target=target.decode("ascii", "replace"),
            status=status,
            bytes_sent=bytes_sent,
            duration=duration,
            http_version=scope["http_version"],
            scheme=scope["scheme"],
            tls_version=None if tls is None else tls.get("tls_version"),
            request_headers=scope["headers"],
            response_headers=list(response_headers),
        )
        if config.access_log_json:
            access_log.info("%s", record.json())
        else:
            assert config.access_log_format is not None
            access_log.info("%s", record.format(config.access_log_format))
        return
    access_log.info(
        '%s - "%s %s HTTP/%s" %d %d %.1fms',
        format_address(scope.get("client")),
        scope["method"],
        target.decode("ascii", "replace"),
        scope["http_version"],
        status,
        bytes_sent,
        duration * 1000.0,
    )


def log_error_response(
    config: Config,
    info: ConnectionInfo,
    head: RequestHead | None,
    status: int,
    body_bytes: int,
    duration: float,
) -> None:
    """The access line of an error the server answered itself (a refused request), in the same
    format and with the same fields as an app's response; ``head`` is ``None`` when the request
    could not be parsed at all."""
    extensions: dict[str, Any] = {} if info.tls is None else {"tls": info.tls}
    scope: Scope = {
        "client": info.client,
        "method": "-" if head is None else head.method.decode("ascii", "replace"),
        "http_version": "1.1" if head is None else head.http_version,
        "scheme": info.scheme,
        "headers": [] if head is None else list(head.headers),
        "extensions": extensions,
    }
    log_access(
        config,
        scope,
        b"-" if head is None else head.target,
        status,
        body_bytes,
        duration,
        _ERROR_HEADERS,
    )


# What an asyncio-only app (Django's async views, Quart, aiohttp clients) runs into on trio: asyncio
# finding no loop, sniffio finding no asyncio, trio meeting an asyncio future.
_ASYNCIO_SIGNS: Final = (
    "no running event loop",
    "no current event loop",
    "framework like asyncio",
)
ASYNCIO_HINT: Final = (
    "The app seems to need asyncio: start trioserve with --asyncio-app "
    "(pip install 'trioserve[asyncio]')"
)


def needs_asyncio(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps or groups) says the app needs asyncio."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AsyncLibraryNotFoundError):
            return True
        if any(sign in str(current) for sign in _ASYNCIO_SIGNS):
            return True
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False
