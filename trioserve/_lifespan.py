"""The ASGI lifespan protocol: startup before the first connection, shutdown after the last.

Theory of operation
-------------------
The app's lifespan call runs as one task in a nursery owned by :meth:`Server.serve`, for the
whole life of the server. :meth:`Lifespan.startup` starts it, sends ``lifespan.startup`` and
waits (bounded) for the answer; only then does the server open its listeners, so an app whose
startup fails never has a port accepting connections. :meth:`Lifespan.shutdown` sends
``lifespan.shutdown`` once the last connection is gone and waits (bounded) for the answer.

In ``auto`` mode an app that raises before answering startup is taken not to support lifespan
(many plain ASGI apps raise on an unknown scope type) and is served anyway; in ``on`` mode that
is a startup failure. ``off`` never calls the app with a lifespan scope.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Final, Literal

import trio

from ._errors import TrioserveError
from ._types import ASGIApp, Message, Receive, Send

__all__ = ["Lifespan", "LifespanFailure", "complete_lifespan"]

error_log = logging.getLogger("trioserve.error")

LifespanMode = Literal["auto", "on", "off"]

_SCOPE_ASGI: Final = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailure(TrioserveError):
    """The app's lifespan startup failed (or timed out); the server did not start."""


class Lifespan:
    """Runs one app's lifespan protocol.

    Args:
        app: The ASGI app.
        mode: ``"auto"``, ``"on"`` or ``"off"``.
        state: The dict shared (shallow-copied) into every request scope.
        startup_timeout: Seconds the app gets to answer ``lifespan.startup``.
        shutdown_timeout: Seconds the app gets to answer ``lifespan.shutdown``.
    """

    def __init__(
        self,
        app: ASGIApp,
        mode: LifespanMode,
        state: dict[str, Any],
        *,
        startup_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self._app = app
        self._mode = mode
        self._state = state
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._to_app, self._app_inbox = trio.open_memory_channel[Message](1)
        self._from_app, self._server_inbox = trio.open_memory_channel[Message | None](1)
        self._running = False
        self._answered_startup = False
        self._took_startup = False
        self._crash: str | None = None
        self._task_scope = trio.CancelScope(shield=True)

    async def startup(self, nursery: trio.Nursery) -> None:
        """Start the app's lifespan task in ``nursery`` and wait for its startup answer.

        Raises:
            LifespanFailure: the app reported a failure, crashed (in ``on`` mode), or timed out.
        """
        if self._mode == "off":
            return
        nursery.start_soon(self._run_app)
        self._running = True
        await self._to_app.send({"type": "lifespan.startup"})
        with trio.move_on_after(self._startup_timeout) as waiting:
            answer = await self._server_inbox.receive()
        if waiting.cancelled_caught:
            raise LifespanFailure(
                f"lifespan startup did not complete within {self._startup_timeout:g} s"
            )
        if answer is None:  # the app returned or raised without answering
            self._running = False
            if self._took_startup and self._crash is not None:
                # It took lifespan.startup (so it does support lifespan), then crashed.
                raise LifespanFailure(
                    f"lifespan startup crashed: {self._crash} (if the app does not support "
                    "lifespan, use --lifespan off)"
                )
            if self._mode == "on":
                raise LifespanFailure(
                    "the app does not support lifespan (it returned or raised on a lifespan "
                    "scope), but --lifespan on requires it"
                )
            error_log.debug("The app does not support lifespan; serving it without")
            return
        if answer["type"] == "lifespan.startup.failed":
            reason = answer.get("message") or "(no message)"
            raise LifespanFailure(f"lifespan startup failed: {reason}")
        if answer["type"] != "lifespan.startup.complete":
            raise LifespanFailure(f"unexpected lifespan message {answer['type']!r} at startup")

    async def shutdown(self) -> None:
        """Ask the app to shut down and wait (bounded) for its answer; never raises."""
        if not self._running:
            return
        self._running = False
        with trio.move_on_after(self._shutdown_timeout) as waiting:
            try:
                await self._to_app.send({"type": "lifespan.shutdown"})
                answer = await self._server_inbox.receive()
            except (trio.BrokenResourceError, trio.EndOfChannel):
                return
        if waiting.cancelled_caught:
            error_log.error(
                "Lifespan shutdown did not complete within %g s", self._shutdown_timeout
            )
        elif answer is None:
            error_log.error("The app ended its lifespan without answering shutdown")
        elif answer["type"] == "lifespan.shutdown.failed":
            error_log.error("Lifespan shutdown failed: %s", answer.get("message") or "")

    def close(self) -> None:
        """End the app's lifespan task if it is still running (after :meth:`shutdown`)."""
        self._task_scope.cancel()

    async def _run_app(self) -> None:
        scope = {"type": "lifespan", "asgi": _SCOPE_ASGI, "state": self._state}
        try:
            # Shielded like the server's connections: when the caller cancels serve(), the
            # app must still get its lifespan.shutdown. close() ends the task for good.
            with self._task_scope:
                await self._app(scope, self._receive, self._send)
        except Exception as exc:
            self._crash = f"{type(exc).__name__}: {exc}"
            if self._mode == "on" or self._answered_startup or self._took_startup:
                error_log.exception("Exception in the ASGI app's lifespan")
            else:
                error_log.debug("The app raised on a lifespan scope", exc_info=True)
        finally:
            # None tells a waiting startup() or shutdown() that no answer is coming.
            with contextlib.suppress(
                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
            ):
                self._from_app.send_nowait(None)

    async def _receive(self) -> Message:
        message = await self._app_inbox.receive()
        if message["type"] == "lifespan.startup":
            self._took_startup = True
        return message

    async def _send(self, message: Message) -> None:
        message_type = message.get("type")
        if message_type not in (
            "lifespan.startup.complete",
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            raise RuntimeError(f"Unexpected ASGI message {message_type!r} in a lifespan scope")
        if message_type.startswith("lifespan.startup"):
            self._answered_startup = True
        await self._from_app.send(message)


async def complete_lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan scope for an app that needs no startup or shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
