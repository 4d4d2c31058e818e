"""ASGI applications served by ``scripts/bench.py``.

Run from the repository root so that ``scripts.bench_apps`` is importable (``scripts`` is a
namespace package):

* ``scripts.bench_apps:hello``: the smallest useful ASGI 3 app (13-byte ``text/plain`` body).
* ``scripts.bench_apps:static_app``: Starlette ``StaticFiles`` over ``$BENCH_STATIC_DIR``.

``static_app`` is a small wrapper object rather than a module ``__getattr__`` because hypercorn
resolves the attribute with ``eval(name, vars(module))``, which never calls ``__getattr__``.
The ``StaticFiles`` instance is built on the lifespan startup event (so a bad directory fails
at startup) or, for servers that do not run lifespan, on the first request.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["hello", "static_app"]

_HELLO_BODY = b"Hello, world!"
_HELLO_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(_HELLO_BODY)).encode("ascii")),
    ],
}
_HELLO_BODY_MSG: Message = {"type": "http.response.body", "body": _HELLO_BODY}


async def _lifespan(receive: Receive, send: Send, startup: Callable[[], None] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if startup is not None:
                    startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every HTTP request with ``200 Hello, world!``."""
    if scope["type"] == "http":
        # Fresh dicts per call: servers may annotate or consume the messages they receive.
        await send(dict(_HELLO_START))
        await send(dict(_HELLO_BODY_MSG))
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send, None)


class LazyStaticFiles:
    """``starlette.staticfiles.StaticFiles`` over an environment-variable directory, built lazily.

    Importing this module never requires ``$BENCH_STATIC_DIR`` nor Starlette; only serving does.
    """

    def __init__(self, env_var: str = "BENCH_STATIC_DIR") -> None:
        self._env_var = env_var
        self._app: ASGIApp | None = None

    def _build(self) -> ASGIApp:
        if self._app is None:
            from starlette.staticfiles import StaticFiles

            self._app = StaticFiles(directory=os.environ[self._env_var])
        return self._app

    def _startup(self) -> None:
        self._build()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self._startup)
            return
        app = self._app if self._app is not None else self._build()
        await app(scope, receive, send)


static_app = LazyStaticFiles()
