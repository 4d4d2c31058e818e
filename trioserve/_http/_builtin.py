"""The server's own answers, before any app: the health path and the redirect to HTTPS.

Both speak through an :class:`Exchange`, so they work on every wire protocol.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import RequestRefused
from ._exchange import Exchange
from ._scope import origin_form

__all__ = ["answer_health", "answer_redirect"]

_HEALTH_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store")]


async def answer_health(exchange: Exchange, *, draining: bool) -> int:
    """The health answer: 200, or 503 once the server is shutting down. Returns the status."""
    status, body = (503, b"draining\n") if draining else (200, b"ok\n")
    await exchange.send_response(status, _HEALTH_HEADERS, body, end=True)
    return status


async def answer_redirect(
    exchange: Exchange, target: bytes, headers: Sequence[tuple[bytes, bytes]], https_port: int
) -> int:
    """A plain listener with --redirect-to-https: 308 to the same URL over HTTPS.

    Raises:
        RequestRefused: no usable Host to redirect to (400).
    """
    raw_host = next((value for name, value in headers if name == b"host"), b"")
    authority = raw_host.decode("latin-1")
    if authority.startswith("["):
        host = authority[: authority.find("]") + 1]
    else:
        host = authority.rsplit(":", 1)[0]
    if not host or any(char in host for char in "/\\@ "):
        raise RequestRefused(400, "A redirect to HTTPS needs a valid Host header.")
    port = "" if https_port == 443 else f":{https_port}"
    if not target.startswith(b"/"):
        target = origin_form(target)
    location = f"https://{host}{port}{target.decode('ascii')}".encode()
    await exchange.send_response(308, [(b"location", location)], b"", end=True)
    return 308
