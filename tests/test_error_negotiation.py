"""Errors the server writes itself follow the request's Accept, on HTTP/1.1 and HTTP/2 (h2c):
problem+json, HTML or text, with ``Vary: Accept``, client-safe words, and the body's size in the
access log. Real sockets on 127.0.0.1 port 0, httpx as the client; raw bytes for what httpx
cannot send (a malformed request line)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from trioserve import Config, Server

PROTOCOLS = {"http/1.1": {"http1": True, "http2": False}, "h2": {"http1": False, "http2": True}}


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/crash":
        raise ValueError("secret internal detail")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[str]:
    server = Server(
        app, Config(host="127.0.0.1", port=0, access_log=True, max_body_size=10, **config)
    )
    async with trio.open_nursery() as nursery:
        [(_, port)] = await nursery.start(server.serve)
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


class AccessSizes(logging.Handler):
    """(status, body bytes) of each access line of the server under test.

    A response's line may be logged after its last byte is sent: a test waits for it
    (:meth:`wait`) before it stops the server.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.sizes: list[tuple[int, int]] = []
        self._logged = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = re.search(r'" (\d{3}) (\d+) ', record.getMessage())
        assert match, record.getMessage()
        self.sizes.append((int(match.group(1)), int(match.group(2))))
        self._logged.set()

    async def wait(self) -> list[tuple[int, int]]:
        with trio.fail_after(10):
            await self._logged.wait()
        return self.sizes


@pytest.fixture
def access() -> Iterator[AccessSizes]:
    logger = logging.getLogger("trioserve.access")
    handler = AccessSizes()
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


# (Accept, Content-Type, what the 500's body is, parsed)
FORMS = [
    (
        "application/json",
        "application/problem+json",
        lambda body: (
            json.loads(body)
            == {"type": "about:blank", "title": "Internal Server Error", "status": 500}
        ),
    ),
    (
        "text/html,application/xhtml+xml,*/*;q=0.8",
        "text/html; charset=utf-8",
        lambda body: (
            "<h1>500 Internal Server Error</h1>" in body and body.startswith("<!DOCTYPE html>")
        ),
    ),
    (None, "text/plain; charset=utf-8", lambda body: body == "500 Internal Server Error\n"),
]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize(("accept", "content_type", "check"), FORMS)
async def test_the_500_for_a_failing_app_follows_accept(
    access: AccessSizes,
    protocol: str,
    accept: str | None,
    content_type: str,
    check: Any,
) -> None:
    async with (
        running() as url,
        httpx.AsyncClient(**PROTOCOLS[protocol]) as client,  # type: ignore[arg-type]
    ):
        del client.headers["accept"]  # httpx sends */* unless told not to
        headers = {} if accept is None else {"accept": accept}
        response = await client.get(url + "/crash", headers=headers)
        assert await access.wait() == [(500, len(response.content))]
    assert response.http_version == protocol.upper().replace("H2", "HTTP/2")
    assert response.status_code == 500
    assert response.headers["content-type"] == content_type
    assert response.headers["vary"] == "Accept"
    assert check(response.text), response.text
    assert "secret" not in response.text  # never the exception's words


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
async def test_a_refused_body_is_problem_json_for_a_json_client(
    access: AccessSizes, protocol: str
) -> None:
    async with (
        running() as url,
        httpx.AsyncClient(**PROTOCOLS[protocol]) as client,  # type: ignore[arg-type]
    ):
        response = await client.post(
            url + "/up", content=b"x" * 100, headers={"accept": "application/json"}
        )
        assert await access.wait() == [(413, len(response.content))]
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["vary"] == "Accept"
    assert response.json() == {
        "type": "about:blank",
        "title": "Content Too Large",
        "status": 413,
        "detail": "Request body too large.",
    }


async def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


async def test_a_malformed_request_line_gets_words_not_a_repr() -> None:
    async with running() as url:
        raw = await raw_exchange(url, b"GARBAGE\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nvary: Accept\r\n" in head
    assert body == b"400 Bad Request: Malformed request: illegal request line.\n"


async def test_a_malformed_header_line_gets_words_not_a_repr() -> None:
    async with running() as url:
        raw = await raw_exchange(url, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # (h11 refused the head before it was parsed: no Accept to follow, so text.)
    assert body == b"400 Bad Request: Malformed request: illegal header line.\n"


async def test_a_refused_head_for_a_browser_is_an_html_page() -> None:
    async with running() as url:
        raw = await raw_exchange(
            url, b"GET /page#top HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n"
        )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\ncontent-type: text/html; charset=utf-8\r\n" in head
    assert b"\r\nvary: Accept\r\n" in head
    assert b"<h1>400 Bad Request</h1>" in body
    assert b"<p>Malformed request target: it has a #fragment.</p>" in body
    assert b"content-length: %d\r\n" % len(body) in head


async def test_a_head_request_refused_gets_no_body_but_the_same_headers() -> None:
    async with running() as url:
        raw = await raw_exchange(
            url,
            b"HEAD / HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n"
            b"Content-Length: 100\r\n\r\n",
        )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"\r\ncontent-type: application/problem+json\r\n" in head
    assert body == b""
