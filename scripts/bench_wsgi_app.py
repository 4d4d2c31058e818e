"""The WSGI app of ``scripts/bench.py``'s wsgi-hello scenario: ``scripts.bench_wsgi_app:hello``.

The WSGI twin of ``scripts.bench_apps:hello``: the same 13-byte ``text/plain`` body with a
Content-Length, so the figures compare the servers' WSGI paths and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["hello"]

_BODY = b"Hello, world!"
_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(_BODY)))]


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", _HEADERS)
    return [_BODY]
