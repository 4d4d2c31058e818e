"""Serving asyncio-only ASGI apps (Django, Quart, ...) on trio, through trio-asyncio.

Starlette and FastAPI run on trio as they are (through anyio). Apps written directly against
asyncio (``asyncio.gather``, ``loop.run_in_executor``, asgiref's ``sync_to_async``) need an
asyncio event loop: with ``Config(asyncio_app=True)`` (``--asyncio-app``) the server opens a
trio-asyncio loop for its whole life and runs each app call as asyncio code inside it, with
``receive`` and ``send`` wrapped the other way.

trio-asyncio's ``run_in_executor`` only accepts its own executor; asgiref (so Django) passes a
``concurrent.futures`` executor, which is adapted here with ``asyncio.wrap_future``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import Any

from ._errors import ConfigError
from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["AsyncioApp", "asyncio_loop", "require_trio_asyncio"]


def require_trio_asyncio() -> Any:
    """The trio_asyncio module.

    Raises:
        ConfigError: it is not installed.
    """
    try:
        import trio_asyncio
    except ImportError:
        raise ConfigError(
            "--asyncio-app needs trio-asyncio: pip install 'trioserve[asyncio]'"
        ) from None
    return trio_asyncio


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """An asyncio event loop running inside trio, for as long as the block lasts."""
    trio_asyncio = require_trio_asyncio()
    async with trio_asyncio.open_loop() as loop:
        loop.run_in_executor = functools.partial(
            _run_in_any_executor, loop, loop.run_in_executor, trio_asyncio.TrioExecutor
        )
        yield


def _run_in_any_executor(
    loop: asyncio.AbstractEventLoop,
    original: Callable[..., Any],
    own_executor: type,
    executor: Executor | None,
    function: Callable[..., Any],
    *args: Any,
) -> Any:
    if executor is None or isinstance(executor, own_executor):
        return original(executor, function, *args)
    return asyncio.wrap_future(executor.submit(function, *args), loop=loop)


class AsyncioApp:
    """Runs an asyncio-only ASGI app from trio (inside :func:`asyncio_loop`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._trio_asyncio = require_trio_asyncio()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trio_asyncio = self._trio_asyncio
        await trio_asyncio.aio_as_trio(self._run)(
            scope, trio_asyncio.trio_as_aio(receive), trio_asyncio.trio_as_aio(send)
        )

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
