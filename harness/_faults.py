"""Canned responses and the faults that break them, as one table.

A :class:`Response` is what a route answers. Sending one is :func:`send_response`: a response
without a fault goes out as an ordinary ASGI response; a response with a fault is handed to the
fault's entry in :data:`FAULTS`, a table from :attr:`Fault.kind` to an ``async`` sender that owns
the whole answer (it may wait, send part of it, send raw bytes, or close). Adding a fault is one
sender, one entry in the table, and one constructor on :class:`Fault`.

Faults misbehave on the wire through trioserve's ``trioserve.fault`` extension
(``trioserve.fault.raw`` writes bytes as they are, ``trioserve.fault.close`` closes or resets the
connection), so a client sees exactly what a broken server would send.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from trioserve import Send

__all__ = ["FAULTS", "Fault", "Response", "as_response", "send_response"]


@dataclass(frozen=True)
class Fault:
    """A deterministic way for a response to go wrong. Build them with the class methods."""

    kind: str
    seconds: float = 0.0
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULTS)}")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait before sending the response head."""
        return cls("delay", seconds=seconds)

    @classmethod
    def drip(cls, chunk_size: int, interval: float) -> Fault:
        """Send the body ``chunk_size`` bytes at a time, ``interval`` seconds apart."""
        return cls("drip", seconds=interval, size=chunk_size)

    @classmethod
    def hang(cls) -> Fault:
        """Never answer (the server's teardown cancels it)."""
        return cls("hang")

    @classmethod
    def empty_response(cls) -> Fault:
        """Close the connection before sending any byte."""
        return cls("empty_response")

    @classmethod
    def reset(cls) -> Fault:
        """Reset the connection (TCP RST) instead of answering."""
        return cls("reset")

    @classmethod
    def truncate(cls, after_bytes: int) -> Fault:
        """Declare the whole Content-Length, send only ``after_bytes`` of the body, close."""
        return cls("truncate", size=after_bytes)

    @classmethod
    def malformed_chunk(cls) -> Fault:
        """A chunked response whose first chunk-size line is not hexadecimal."""
        return cls("malformed_chunk")

    @classmethod
    def bad_status_line(cls) -> Fault:
        """A status line that is not HTTP."""
        return cls("bad_status_line")

    @classmethod
    def garbage_then_close(cls, size: int = 64) -> Fault:
        """``size`` bytes of binary garbage, then close."""
        return cls("garbage_then_close", size=size)

    @classmethod
    def close_after_response(cls) -> Fault:
        """Answer normally, then close without having said ``Connection: close``."""
        return cls("close_after_response")

    @classmethod
    def slow_headers(cls, interval: float) -> Fault:
        """Send the response head one line at a time, ``interval`` seconds apart."""
        return cls("slow_headers", seconds=interval)


@dataclass(init=False)
class Response:
    """A canned response: ``Response(200, json={...})``, ``Response(404, text="gone")``,
    ``Response(200, body=b"...", headers={"etag": '"1"'})``.

    ``json`` and ``text`` add a Content-Type unless ``headers`` has one. ``chunks`` (with
    ``interval`` seconds between them) makes a chunked body instead.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunks: Sequence[bytes] | None
    interval: float
    fault: Fault | None

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | str | None = None,
        *,
        json: Any = None,
        text: str | None = None,
        chunks: Sequence[bytes] | None = None,
        interval: float = 0.0,
        fault: Fault | None = None,
    ) -> None:
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or ())
        names = {name.lower() for name, _ in pairs}
        data = b""
        if json is not None:
            data = jsonlib.dumps(json).encode()
            if "content-type" not in names:
                pairs.append(("content-type", "application/json"))
        elif text is not None:
            data = text.encode()
            if "content-type" not in names:
                pairs.append(("content-type", "text/plain; charset=utf-8"))
        elif body is not None:
            data = body.encode() if isinstance(body, str) else body
        self.status = status
        self.headers = pairs
        self.body = data
        self.chunks = chunks
        self.interval = interval
        self.fault = fault

    @classmethod
    def make(
        cls,
        status: int = 200,
        *,
        json: Any = None,
        body: bytes | str | None = None,
        text: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        fault: Fault | None = None,
    ) -> Response:
        """The same as ``Response(status, ...)`` (kept for existing tests)."""
        return cls(status, headers, body, json=json, text=text, fault=fault)


def as_response(value: Any) -> Response:
    """A :class:`Response` from what ``respond_seq`` items and handlers may return."""
    if isinstance(value, Response):
        return value
    if isinstance(value, int):
        return Response.make(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], Mapping):
        return Response.make(value[0], **value[1])
    if isinstance(value, Mapping):
        return Response.make(**value)
    if isinstance(value, bytes | str):
        return Response.make(200, body=value)
    raise TypeError(f"cannot make a response from {value!r}")


async def send_response(response: Response, send: Send) -> None:
    """Send ``response`` through ASGI, broken as its fault says."""
    if response.fault is None:
        await _send_plain(response, send)
    else:
        await FAULTS[response.fault.kind](response, response.fault, send)


# -- the wire primitives ------------------------------------------------------------------------


def _encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def _send_head(response: Response, send: Send, *, content_length: bool) -> None:
    headers = _encode_headers(response.headers)
    if content_length:
        headers.append((b"content-length", b"%d" % len(response.body)))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})


async def _send_piece(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_end(send: Send) -> None:
    await send({"type": "http.response.body", "body": b""})


async def _send_raw(send: Send, data: bytes) -> None:
    await send({"type": "trioserve.fault.raw", "data": data})


async def _close(send: Send, *, reset: bool = False) -> None:
    await send({"type": "trioserve.fault.close", "reset": reset})


async def _send_plain(response: Response, send: Send) -> None:
    if response.chunks is not None:
        await _send_head(response, send, content_length=False)
        for number, chunk in enumerate(response.chunks):
            if number and response.interval:
                await trio.sleep(response.interval)
            await _send_piece(send, chunk)
        await _send_end(send)
    else:
        await _send_head(response, send, content_length=True)
        await send({"type": "http.response.body", "body": response.body})


# -- the faults ---------------------------------------------------------------------------------
# Each sender owns the whole answer. Faults about a Content-Length body (drip, truncate) leave a
# streamed response (``respond_stream``) as it is: its chunks already have their own timing.


async def _delay(response: Response, fault: Fault, send: Send) -> None:
    await trio.sleep(fault.seconds)
    await _send_plain(response, send)


async def _drip(response: Response, fault: Fault, send: Send) -> None:
    if response.chunks is not None:
        await _send_plain(response, send)
        return
    await _send_head(response, send, content_length=True)
    step = max(fault.size, 1)
    for start in range(0, len(response.body), step):
        if start:
            await trio.sleep(fault.seconds)
        await _send_piece(send, response.body[start : start + step])
    await _send_end(send)


async def _hang(response: Response, fault: Fault, send: Send) -> None:
    await trio.sleep_forever()


async def _empty_response(response: Response, fault: Fault, send: Send) -> None:
    await _close(send)


async def _reset(response: Response, fault: Fault, send: Send) -> None:
    await _close(send, reset=True)


async def _truncate(response: Response, fault: Fault, send: Send) -> None:
    if response.chunks is not None:
        await _send_plain(response, send)
        return
    await _send_head(response, send, content_length=True)
    await _send_piece(send, response.body[: fault.size])
    await _close(send)


async def _malformed_chunk(response: Response, fault: Fault, send: Send) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    await _send_raw(send, head + b"zz\r\nnot hex\r\n")
    await _close(send)


async def _bad_status_line(response: Response, fault: Fault, send: Send) -> None:
    await _send_raw(send, b"HTPT/1.x 2OO MAYBE\r\n\r\n")
    await _close(send)


async def _garbage_then_close(response: Response, fault: Fault, send: Send) -> None:
    # Deterministic bytes, so that a failing test fails the same way twice.
    await _send_raw(send, bytes((index * 73 + 41) % 256 for index in range(fault.size)))
    await _close(send)


async def _close_after_response(response: Response, fault: Fault, send: Send) -> None:
    await _send_plain(response, send)
    await _close(send)


async def _slow_headers(response: Response, fault: Fault, send: Send) -> None:
    body = response.body
    lines = [f"HTTP/1.1 {response.status} OK\r\n".encode()]
    lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers]
    lines += [b"content-length: %d\r\n" % len(body), b"connection: close\r\n", b"\r\n"]
    for number, line in enumerate(lines):
        if number:
            await trio.sleep(fault.seconds)
        await _send_raw(send, line)
    await _send_raw(send, body)
    await _close(send)


FaultSender = Callable[[Response, Fault, Send], Awaitable[None]]

#: Every fault kind and the sender that answers with it.
FAULTS: dict[str, FaultSender] = {
    "delay": _delay,
    "drip": _drip,
    "hang": _hang,
    "empty_response": _empty_response,
    "reset": _reset,
    "truncate": _truncate,
    "malformed_chunk": _malformed_chunk,
    "bad_status_line": _bad_status_line,
    "garbage_then_close": _garbage_then_close,
    "close_after_response": _close_after_response,
    "slow_headers": _slow_headers,
}
