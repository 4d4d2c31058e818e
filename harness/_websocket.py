"""Websocket stubs: a script of sends, expected messages and a close, run for each connection.

``srv.expect_websocket(path)`` returns a :class:`WebSocketRoute`; its builder methods append
steps to a script (``send``, ``send_json``, ``expect_message``, ``expect_json``, ``close``,
``drop_mid_message``) or refuse the handshake (``deny``). Every websocket connection to the
path runs the script from the start: it accepts, then takes the steps in order, each expected
message compared with what the client sent. A message that does not match ends the script:
the connection is closed with 1008 (policy violation) and the difference is kept for the
report. Once the script is done without a close, the server keeps reading (messages are
recorded) until the client closes.

What makes a strict test fail: a websocket route used fewer times than ``times``, a script
step that was never reached because the client left, and a message that did not match.
"""

from __future__ import annotations

import json as jsonlib
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from trioserve import Message, Receive, Scope, Send

from ._matchers import Matcher, json_differences

__all__ = ["WebSocketRoute", "WebSocketSession"]

# Close code for a client message the script did not expect (RFC 6455: policy violation).
MISMATCH_CLOSE: Final = 1008
# What a session records for a connection dropped without a close frame (RFC 6455 7.1.5: the
# code a client reports then; it never travels on the wire).
ABNORMAL_CLOSE: Final = 1006
# RFC 6455 5.2: the FIN bit, and the opcodes of a text and a binary frame.
_FIN: Final = 0x80
_TEXT: Final = 0x1
_BINARY: Final = 0x2


@dataclass
class WebSocketSession:
    """One websocket connection a route served: what each side sent, and how it ended."""

    path: str
    received: list[str | bytes] = field(default_factory=list)
    sent: list[str | bytes] = field(default_factory=list)
    #: The close code the client sent, or the one the script closed with.
    close_code: int | None = None
    problems: list[str] = field(default_factory=list)
    #: The script step under way ("step 2, expect_message('x')"); None once the script is done.
    pending: str | None = None


@dataclass(frozen=True)
class _Step:
    kind: str  # "send", "expect", "close", "drop"
    payload: Any = None
    reason: str = ""
    after: int = 0
    fragmented: bool = False

    def describe(self) -> str:
        if self.kind == "close":
            return f"close({self.payload})"
        if self.kind == "drop":
            return f"drop_mid_message({self.payload!r}, after={self.after})"
        return f"{'send' if self.kind == 'send' else 'expect_message'}({self.payload!r})"


class WebSocketRoute:
    """An expected websocket path and the script each of its connections runs."""

    def __init__(self, path: str, *, times: int | None, name: str) -> None:
        self.path = path
        self.times = times
        self.name = name
        self.sessions: list[WebSocketSession] = []
        self._steps: list[_Step] = []
        self._deny_status: int | None = None
        self._lock = threading.Lock()

    # -- the script ---------------------------------------------------------------------------

    def send(self, message: str | bytes) -> WebSocketRoute:
        """Send a text (``str``) or binary (``bytes``) message."""
        self._steps.append(_Step("send", message))
        return self

    def send_json(self, document: Any) -> WebSocketRoute:
        """Send ``document`` as a JSON text message."""
        return self.send(jsonlib.dumps(document))

    def expect_message(self, expected: str | bytes | Matcher) -> WebSocketRoute:
        """Wait for the client's next message and compare it with ``expected``."""
        self._steps.append(_Step("expect", expected))
        return self

    def expect_json(self, subset: Any) -> WebSocketRoute:
        """Wait for the client's next message: a JSON document containing ``subset``."""
        return self.expect_message(_JSONContains(subset))

    def close(self, code: int = 1000, reason: str = "") -> WebSocketRoute:
        """Close the connection with ``code`` (the script ends here)."""
        self._steps.append(_Step("close", code, reason))
        return self

    def drop_mid_message(
        self, message: str | bytes, *, after: int | None = None, fragmented: bool = False
    ) -> WebSocketRoute:
        """Start sending ``message``, then drop the connection without a close frame.

        The client gets a frame header announcing the whole message and only its first
        ``after`` payload bytes (half of them by default) before the TCP connection closes
        (over HTTP/2, the stream is reset), so it sees the connection end in the middle of a
        message: a 1006 abnormal closure. With ``fragmented=True`` the first ``after`` bytes
        go out as a complete first fragment (FIN clear) whose continuation never comes. The
        script ends here. Needs the server's fault injection (harness servers have it on).
        """
        size = len(message.encode() if isinstance(message, str) else message)
        cut = size // 2 if after is None else after
        if not 0 <= cut <= size or (cut == size and not fragmented):
            raise ValueError(
                f"after={cut} must leave part of the {size}-byte message unsent "
                "(0 <= after < size; after == size only with fragmented=True)"
            )
        self._steps.append(_Step("drop", message, after=cut, fragmented=fragmented))
        return self

    def deny(self, status: int = 403) -> WebSocketRoute:
        """Refuse the handshake with an HTTP ``status``."""
        self._deny_status = status
        return self

    # -- records ------------------------------------------------------------------------------

    @property
    def call_count(self) -> int:
        """How many connections this route served."""
        return len(self.sessions)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and len(self.sessions) >= self.times

    def describe(self) -> str:
        steps = ", ".join(step.describe() for step in self._steps) or "no steps"
        return f"WEBSOCKET {self.path}: {steps}"

    def problems(self) -> list[str]:
        found = [
            f"websocket {self.name} {self.path}: {p}" for s in self.sessions for p in s.problems
        ]
        if self.times is not None and len(self.sessions) < self.times:
            found.append(
                f"unmet websocket expectation {self.name} {self.path}: connected "
                f"{len(self.sessions)} of {self.times} times"
            )
        return found

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the script for one connection."""
        session = WebSocketSession(scope["path"])
        with self._lock:
            self.sessions.append(session)
        await receive()  # websocket.connect
        if self._deny_status is not None:
            await send({"type": "websocket.http.response.start", "status": self._deny_status})
            await send({"type": "websocket.http.response.body", "body": b""})
            return
        await send({"type": "websocket.accept"})
        for number, step in enumerate(self._steps, 1):
            session.pending = f"step {number}, {step.describe()}"
            if step.kind == "send":
                session.sent.append(step.payload)
                await send(_outgoing(step.payload))
            elif step.kind == "close":
                session.close_code = step.payload
                await send({"type": "websocket.close", "code": step.payload, "reason": step.reason})
                session.pending = None
                return
            elif step.kind == "drop":
                await send({"type": "trioserve.fault.raw", "data": _frame_start(step)})
                # Recorded before the drop, so that a client that sees it sees the record too.
                session.close_code = ABNORMAL_CLOSE
                session.pending = None
                await send({"type": "trioserve.fault.close"})
                return
            else:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    session.close_code = message.get("code")
                    session.problems.append(
                        f"the client closed ({session.close_code}) before {session.pending}"
                    )
                    return
                actual = _payload(message)
                session.received.append(actual)
                difference = _difference(step.payload, actual)
                if difference is not None:
                    session.problems.append(f"{session.pending}: {difference}")
                    session.close_code = MISMATCH_CLOSE
                    await send({"type": "websocket.close", "code": MISMATCH_CLOSE})
                    return
        session.pending = None
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                session.close_code = message.get("code")
                return
            session.received.append(_payload(message))


class _JSONContains(Matcher):
    def __init__(self, subset: Any) -> None:
        self.subset = subset

    def difference(self, actual: Any) -> str | None:
        try:
            document = jsonlib.loads(actual)
        except (TypeError, ValueError):
            return f"expected JSON containing {self.subset!r}, got {actual!r}"
        lines = json_differences(self.subset, document)
        return "; ".join(lines) if lines else None

    def __repr__(self) -> str:
        return f"<JSON containing {self.subset!r}>"


def _outgoing(payload: str | bytes) -> Message:
    if isinstance(payload, str):
        return {"type": "websocket.send", "text": payload}
    return {"type": "websocket.send", "bytes": payload}


def _frame_start(step: _Step) -> bytes:
    """The start of an unmasked server frame (RFC 6455 5.2) carrying ``step.payload``: a header
    announcing the whole payload and its first ``step.after`` bytes; or, ``fragmented``, a whole
    first fragment of ``step.after`` bytes with FIN clear."""
    message = step.payload
    opcode = _TEXT if isinstance(message, str) else _BINARY
    payload = message.encode() if isinstance(message, str) else bytes(message)
    length = step.after if step.fragmented else len(payload)
    first = opcode if step.fragmented else _FIN | opcode
    if length < 126:
        header = bytes([first, length])
    elif length < 1 << 16:
        header = bytes([first, 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, 127]) + length.to_bytes(8, "big")
    return header + payload[: step.after]


def _payload(message: Message) -> str | bytes:
    text = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"")


def _difference(expected: str | bytes | Matcher, actual: str | bytes) -> str | None:
    if isinstance(expected, Matcher):
        return expected.difference(actual)
    if expected != actual:
        return f"expected {expected!r}, got {actual!r}"
    return None
