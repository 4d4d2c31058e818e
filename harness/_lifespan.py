"""The lifespan of what a harness server serves: its own (nothing to do) or ``app=``'s.

The server would explain a failed startup with its own command-line options; the harness says
what happened in its own terms instead.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from trioserve import Message, Receive, Scope, Send

__all__ = ["complete_lifespan", "run_app_lifespan"]


async def complete_lifespan(receive: Receive, send: Send) -> None:
    """A lifespan with nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def run_app_lifespan(
    app: Any,
    mode: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    record_error: Callable[[str], object],
) -> None:
    """Run ``app``'s lifespan; if its startup does not complete, answer
    ``lifespan.startup.failed`` with the reason in harness terms. Under ``mode="auto"``, an app
    that raises before taking ``lifespan.startup`` does not support lifespan: the exception goes
    to the server, which serves the app without it.

    A crash at shutdown goes to ``record_error`` (for the report) and is re-raised.
    """
    took_startup = answered = False

    async def watching_receive() -> Message:
        nonlocal took_startup
        message = await receive()
        took_startup = took_startup or message["type"] == "lifespan.startup"
        return message

    async def watching_send(message: Message) -> None:
        nonlocal answered
        answered = answered or message["type"].startswith("lifespan.startup.")
        await send(message)

    try:
        await app(scope, watching_receive, watching_send)
    except Exception as exc:
        if answered:  # a crash at shutdown: keep it for the report
            record_error("the app raised (lifespan):\n" + traceback.format_exc())
            raise
        if not took_startup and mode == "auto":
            raise
        if took_startup:
            reason = "harness: the app's lifespan startup raised:\n" + traceback.format_exc()
        else:
            reason = (
                f"harness: the app does not support the ASGI lifespan protocol (it raised "
                f"{exc!r} on the lifespan scope); with lifespan='on' the "
                "harness runs the startup and shutdown of app= around the test, so the app "
                "must answer lifespan.startup (lifespan='auto', the default, serves it "
                "without)"
            )
        await send({"type": "lifespan.startup.failed", "message": reason})
        return
    if not answered and (took_startup or mode != "auto"):
        await send(
            {
                "type": "lifespan.startup.failed",
                "message": "harness: the app returned from its lifespan call without "
                "answering lifespan.startup (with lifespan.startup.complete or .failed)",
            }
        )
