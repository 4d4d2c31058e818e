"""tinyhttp's test app and servers, laid out as httpx's own tests/conftest.py is.

httpx serves one raw ASGI ``app`` (a route per behaviour under test) with uvicorn in a thread,
once per session, over plain HTTP and over TLS with a trustme CA. The same fixtures here are
harness's, so none of the thread, the readiness polling or the shutdown flag is ours to write.
What they replace (see README.md) is a session fixture along these lines:

    class ThreadedUvicorn(uvicorn.Server):          # subclassed only to silence signals
        def install_signal_handlers(self): ...

        @contextlib.contextmanager
        def run_in_thread(self):
            thread = threading.Thread(target=self.run)
            thread.start()
            try:
                while not self.started:              # poll until the socket is bound
                    time.sleep(1e-3)
                yield self
            finally:
                self.should_exit = True
                thread.join()

    @pytest.fixture(scope="session")
    def server():
        config = uvicorn.Config(app=app, lifespan="off", loop="asyncio")
        with ThreadedUvicorn(config=config).run_in_thread() as running:
            yield running                            # tests build URLs from running.config
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from harness import HarnessServer

# The project's own modules (a real project would install itself instead).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# How long /slow_response keeps a client waiting at most (it answers early if the client
# leaves): well past the timeouts the tests set, short enough not to hold up the session's end.
SLOW_SECONDS = 2.0

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


async def _reply(
    send: Send, status: int, body: bytes = b"", content_type: str = "text/plain"
) -> None:
    headers = [(b"content-type", content_type.encode())] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, 200, b"Hello, world!")


async def slow_response(scope: Scope, receive: Receive, send: Send) -> None:
    with anyio.move_on_after(SLOW_SECONDS):
        while (await receive())["type"] != "http.disconnect":
            pass
    await _reply(send, 200, b"Hello, slow world!")


async def status_code(scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, int(scope["path"].rsplit("/", 1)[1]))


async def echo_body(scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, 200, await _read_body(receive), "application/octet-stream")


async def echo_headers(scope: Scope, receive: Receive, send: Send) -> None:
    fields = {name.decode(): value.decode() for name, value in scope["headers"]}
    await _reply(send, 200, json.dumps(fields).encode(), "application/json")


async def json_document(scope: Scope, receive: Receive, send: Send) -> None:
    await _reply(send, 200, json.dumps({"hello": "world"}).encode(), "application/json")


async def stream(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for number in range(3):
        await send({"type": "http.response.body", "body": b"chunk %d;" % number, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def redirect(status: int, location: bytes) -> Callable[..., Any]:
    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await _read_body(receive)
        headers = [(b"location", location)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return answer


ROUTES: dict[str, Callable[..., Any]] = {
    "/": hello,
    "/slow_response": slow_response,
    "/echo_body": echo_body,
    "/echo_headers": echo_headers,
    "/json": json_document,
    "/stream": stream,
    "/redirect_301": redirect(301, b"/"),
    "/redirect_303": redirect(303, b"/echo_headers"),
    "/redirect_307": redirect(307, b"/echo_body"),
    "/redirect_loop": redirect(302, b"/redirect_loop"),
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The test app: raw ASGI, no lifespan (as httpx's), one route per behaviour."""
    assert scope["type"] == "http"
    path = scope["path"]
    handler = status_code if path.startswith("/status/") else ROUTES.get(path)
    if handler is None:
        await _reply(send, 404, b"Not found")
    else:
        await handler(scope, receive, send)


@pytest.fixture(scope="session")
def server(session_server_factory: Callable[..., HarnessServer]) -> HarnessServer:
    """``app`` on 127.0.0.1 for the whole session, plain HTTP."""
    return session_server_factory(app=app, lifespan="off")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def cert_pem_file(ca: trustme.CA) -> Iterator[str]:
    """The CA certificate as a file, for clients that take a ``cafile``."""
    with ca.cert_pem.tempfile() as path:
        yield path


@pytest.fixture(scope="session")
def https_server(
    session_server_factory: Callable[..., HarnessServer], ca: trustme.CA
) -> HarnessServer:
    """``app`` over TLS, with a certificate for 127.0.0.1 and localhost issued by ``ca``."""
    return session_server_factory(app=app, lifespan="off", tls=ca)
