"""Helpers shared by the test modules: a scripted HTTP client over trio streams, test apps."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio.testing

from trioserve import Config
from trioserve._h11._connection import H11Connection
from trioserve._h11._fast import FastProtocol, PythonProtocol
from trioserve._h11._protocol import ServerProtocol
from trioserve._http._state import ServerState

from ._helpers import run_in_scope

pytest_plugins = ["pytester"]


@pytest.fixture(params=["h11", "httptools", "python"])
def http_parser(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> type[ServerProtocol]:
    """Each HTTP/1.1 parser in turn (the protocol class); connections use it too: every
    server state made in the test has its config's ``http_parser`` set to it (patching the
    connection module's globals would not reach a compiled build)."""
    cls = {"h11": ServerProtocol, "httptools": FastProtocol, "python": PythonProtocol}[
        request.param
    ]
    real_init = ServerState.__init__

    def init(self: ServerState, app: Any, config: Config) -> None:
        real_init(self, app, dataclasses.replace(config, http_parser=request.param))

    monkeypatch.setattr(ServerState, "__init__", init)
    return cls


class ScriptedClient:
    """Drives one connection from the client side, with a real ``h11.Connection(h11.CLIENT)``."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.h11.send(event)
            if data:
                await self.stream.send_all(data)

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> None:
        all_headers = [("host", "test"), *(headers or [])]
        if body is not None and not any(n.lower() == "transfer-encoding" for n, _ in all_headers):
            all_headers.append(("content-length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(65536))

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next final response and its whole body (interim 1xx responses are skipped)."""
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        assert isinstance(event, h11.Response), event
        body = b""
        while True:
            part = await self.next_event()
            if isinstance(part, h11.EndOfMessage):
                break
            assert isinstance(part, h11.Data), part
            body += part.data
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return event, body

    async def read_until_eof(self) -> bytes:
        data = b""
        while True:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return data
            data += chunk


def header(response: h11.Response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return bytes(value)
    return None


@asynccontextmanager
async def connection(
    app: Any,
    config: Config | None = None,
    *,
    lockstep: bool = False,
) -> AsyncIterator[tuple[ScriptedClient, ServerState]]:
    """Run one H11Connection over an in-memory stream pair; yield its client and state.

    With ``lockstep=True`` the streams have no buffer at all, so a client that does not read
    stalls the server's writes (the write-timeout tests need that).
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    state = ServerState(app, config or Config(access_log=False))
    conn = H11Connection(
        server_stream, state, client=("127.0.0.1", 5000), server=("127.0.0.1", 8000)
    )
    async with trio.open_nursery() as nursery:
        # The server's keep-alive timer, as a running server has it (sleep_until/sleep: the
        # autojump clock drives it like any other timeout).
        timing = trio.CancelScope()
        nursery.start_soon(run_in_scope, timing, state.idle_timer.run)
        nursery.start_soon(conn.run)
        yield ScriptedClient(client_stream), state
        await client_stream.aclose()
        timing.cancel()


async def hello_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers 200 with the method and path, and echoes the request body."""
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['method']} {scope['path']}\n".encode() + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(text))],
        }
    )
    await send({"type": "http.response.body", "body": text})


@pytest.fixture
def quiet_config() -> Config:
    return Config(access_log=False)
