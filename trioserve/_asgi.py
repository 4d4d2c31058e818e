"""Loading ASGI apps by name, and composing them (static mounts in front of an app)."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Sequence
from typing import Any, Literal

from ._errors import AppLoadError
from ._lifespan import complete_lifespan
from ._types import ASGIApp, Receive, Scope, Send
from ._wsgi import DEFAULT_WSGI_THREADS, WSGIApp

__all__ = ["Mounts", "as_asgi", "as_asgi3", "load_app"]

Interface = Literal["auto", "asgi", "wsgi"]


def load_app(
    spec: str,
    *,
    app_dir: str | None = None,
    factory: bool = False,
    interface: Interface = "auto",
    wsgi_threads: int = DEFAULT_WSGI_THREADS,
) -> ASGIApp:
    """Import the app named by ``"package.module:attribute"``, as an ASGI 3 app.

    The attribute may be dotted (``"pkg.mod:holder.app"``); without one, ``app`` is used. ASGI 2
    apps (``app(scope)`` returning ``instance(receive, send)``, classes included) and WSGI apps
    are detected (see :func:`as_asgi`) and adapted to ASGI 3.

    Args:
        spec: ``MODULE[:ATTR]``.
        app_dir: A directory to put first on ``sys.path`` before importing.
        factory: Call the attribute (with no arguments) to get the app.
        interface: As for :func:`as_asgi`.
        wsgi_threads: As for :func:`as_asgi`.

    Raises:
        AppLoadError: with a one-line message saying what went wrong.
    """
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppLoadError(f"{spec!r} is not of the form MODULE:ATTRIBUTE")
    if not all(part.isidentifier() for part in attribute.split(".")):
        raise AppLoadError(f"{attribute!r} is not a valid attribute name in {spec!r}")
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            exc.name == module_name or module_name.startswith(exc.name + ".")
        ):
            raise AppLoadError(f"could not import module {module_name!r}: not found") from exc
        raise AppLoadError(f"could not import module {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"could not import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    app: Any = module
    for part in attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if factory:
        if not callable(app):
            raise AppLoadError(f"--factory: {spec!r} is a {type(app).__name__}, not callable")
        try:
            app = app()
        except Exception as exc:
            raise AppLoadError(
                f"--factory: calling {spec!r} raised {type(exc).__name__}: {exc}"
            ) from exc
    return as_asgi(app, interface=interface, wsgi_threads=wsgi_threads, name=spec)


def as_asgi(
    app: Any,
    *,
    interface: Interface = "auto",
    wsgi_threads: int = DEFAULT_WSGI_THREADS,
    name: str = "the app",
) -> ASGIApp:
    """``app`` as an ASGI 3 app: itself, or adapted from ASGI 2 or WSGI.

    ``trioserve.serve(trioserve.as_asgi(flask_app), config)`` serves a WSGI app. With
    ``interface="auto"`` the kind is told from the callable, as uvicorn does: a coroutine
    function (or an object whose ``__call__`` is one) or a three-argument callable is ASGI 3, a
    class or a one-argument callable ASGI 2, and a callable taking exactly two positional
    arguments, ``app(environ, start_response)``, is WSGI (PEP 3333), run by :class:`WSGIApp`.

    Args:
        app: The application.
        interface: ``"auto"``, ``"asgi"`` (3 or 2) or ``"wsgi"`` (no guessing).
        wsgi_threads: The thread pool's size for a WSGI app (see :class:`WSGIApp`).
        name: What to call the app in error messages.

    Raises:
        AppLoadError: ``app`` is not an application of that interface.
    """
    if isinstance(app, WSGIApp):
        return app
    if interface == "wsgi":
        if not callable(app):
            raise AppLoadError(f"{name!r} is a {type(app).__name__}, not a WSGI application")
        return WSGIApp(app, threads=wsgi_threads)
    if interface == "auto" and is_wsgi(app):
        return WSGIApp(app, threads=wsgi_threads)
    return as_asgi3(app, name=name)


def is_wsgi(app: Any) -> bool:
    """Whether ``app`` looks like a WSGI app: ``app(environ, start_response)``."""
    # Two positional arguments and neither one nor three: app(environ, start_response).
    return (
        callable(app)
        and not inspect.isclass(app)
        and not _is_coroutine_callable(app)
        and _binds(app, 2)
        and not _binds(app, 1)
        and not _binds(app, 3)
    )


def as_asgi3(app: Any, *, name: str = "the app") -> ASGIApp:
    """``app`` as an ASGI 3 callable: itself, or an adapter around an ASGI 2 app.

    Raises:
        AppLoadError: ``app`` is neither.
    """
    if not callable(app):
        raise AppLoadError(f"{name!r} is a {type(app).__name__}, not an ASGI application")
    if inspect.isclass(app):
        # ASGI 2's classic form: instantiated with the scope, then awaited as instance(receive,
        # send). (A class that is itself awaitable is not an ASGI app at all.)
        return _ASGI2Adapter(app)
    if _is_coroutine_callable(app) or _binds(app, 3):
        return app  # type: ignore[no-any-return]
    if _binds(app, 1):
        return _ASGI2Adapter(app)
    raise AppLoadError(
        f"{name!r} does not look like an ASGI application: expected ASGI 3 "
        "`async def app(scope, receive, send)` or ASGI 2 `app(scope)` returning "
        "`async def instance(receive, send)`, or a WSGI `app(environ, start_response)`"
    )


def _is_coroutine_callable(app: Any) -> bool:
    # An instance whose class defines ``async def __call__`` (Starlette, FastAPI, Django).
    call = type(app).__call__ if not inspect.isroutine(app) else None
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)


def _binds(app: Any, count: int) -> bool:
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return count == 3  # builtins and C callables: give them the benefit of the doubt
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


class _ASGI2Adapter:
    """Runs an ASGI 2 (double-callable) app as an ASGI 3 one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instance = self.app(scope)
        await instance(receive, send)


class Mounts:
    """Routes requests under path prefixes to mounted apps, and the rest to a fallback app.

    ``Mounts([("/assets", StaticFiles("public"))], app)`` serves ``/assets/...`` from the
    directory and everything else with ``app``. The mounted app sees ``root_path`` extended by
    the prefix and ``path`` unchanged, the convention Starlette's ``Mount`` uses.

    Args:
        mounts: ``(prefix, app)`` pairs; a prefix starts with ``/`` and does not end with one.
        fallback: The app for every other path; ``None`` answers 404.
    """

    def __init__(self, mounts: Sequence[tuple[str, ASGIApp]], fallback: ASGIApp | None) -> None:
        for prefix, _ in mounts:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(
                    f"mount prefix must start with '/' and not end with one: {prefix!r}"
                )
        # Longest prefix first, so /static/img wins over /static.
        self.mounts = sorted(mounts, key=lambda item: len(item[0]), reverse=True)
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            else:
                await complete_lifespan(receive, send)
            return
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        route = path[len(root_path) :] if path.startswith(root_path) else path
        for prefix, app in self.mounts:
            if route == prefix or route.startswith(prefix + "/"):
                await app({**scope, "root_path": root_path + prefix}, receive, send)
                return
        if self.fallback is not None:
            await self.fallback(scope, receive, send)
        elif scope["type"] == "http":
            await _not_found(send)
        else:
            await send({"type": "websocket.close", "code": 1000})


async def _not_found(send: Send) -> None:
    body = b"Not Found\n"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
