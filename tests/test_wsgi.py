"""WSGI apps (PEP 3333) through trioserve.WSGIApp: hand-written apps over the in-memory
connection (bytes on the wire), then Flask, sync Django and httpbin over real sockets, on
HTTP/1.1 and HTTP/2.

The hand-written apps run in worker threads; where a test must act between two steps of an app
it hands over with ``threading.Event``s, each wait bounded by ``STEP`` (a hung test fails, it
never stands in for an event).
"""

from __future__ import annotations

import io
import json
import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing

import trioserve
from trioserve import Config, WSGIApp, as_asgi

from ._helpers import ServerProcess, in_thread, serving
from .conftest import connection, header

STEP = 10.0  # seconds a thread waits for the test's next step before the test fails

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def hello(environ: Environ, start_response: StartResponse) -> list[bytes]:
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def environ_dump(environ: Environ, start_response: StartResponse) -> list[bytes]:
    shown = {key: value for key, value in environ.items() if isinstance(value, str | tuple | bool)}
    body = json.dumps(shown).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Spy:
    """Wraps an ASGI app and records the types of the messages it sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def spying_send(message: Any) -> None:
            self.sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, spying_send)


class Closing:
    """A response iterable that records whether close() was called."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        self.closed.set()


def wait(event: threading.Event) -> None:
    assert event.wait(STEP), "the test did not take its next step"


# -- responses ------------------------------------------------------------------------------------


async def test_a_wsgi_app_answers_over_http11() -> None:
    async with connection(WSGIApp(hello)) as (client, _):
        await client.request("GET", "/some/where?x=1")
        response, body = await client.response()
    assert response.status_code == 200
    assert header(response, b"content-length") == b"16"
    assert body == b"GET /some/where\n"


async def test_an_iterable_body_is_streamed_chunk_by_chunk() -> None:
    # Each chunk reaches the client before the app is asked for the next one.
    proceed = [threading.Event() for _ in range(3)]

    def chunks() -> Iterator[bytes]:
        for index, step in enumerate(proceed):
            yield b"chunk %d;" % index
            wait(step)

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return chunks()

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response = await client.next_event()
        assert isinstance(response, h11.Response)
        assert header(response, b"transfer-encoding") == b"chunked"
        for index, step in enumerate(proceed):
            data = await client.next_event()
            assert data.data == b"chunk %d;" % index
            step.set()
        assert isinstance(await client.next_event(), h11.EndOfMessage)


async def test_the_head_waits_for_the_first_non_empty_chunk() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b""
        start_response("404 Not Found", [], (ValueError, ValueError("changed"), None))
        yield b""
        yield b"gone"

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    # start_response() with exc_info may replace the response while no byte has gone out.
    assert (response.status_code, body) == (404, b"gone")


async def test_write_sends_at_once_and_the_iterable_follows() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        write(b"and again; ")
        return [b"then ", b"returned"]

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    assert response.status_code == 200
    assert body == b"written, and again; then returned"


async def test_an_empty_body_still_gets_the_status_and_headers() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("204 No Content", [("X-Answer", "none")])
        return []

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    assert (response.status_code, header(response, b"x-answer"), body) == (204, b"none", b"")


async def test_more_body_than_the_content_length_is_cut_at_the_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        return [b"abc", b"defgh", b"ijk"]

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
        # The connection is still usable: the response was whole.
        await client.request("GET", "/")
        again, _ = await client.response()
    assert (response.status_code, body, again.status_code) == (200, b"abcde", 200)
    assert "more than its Content-Length" in caplog.text


# -- close() --------------------------------------------------------------------------------------


async def test_close_is_called_after_a_whole_response() -> None:
    result = Closing([b"one", b"two"])

    def app(environ: Environ, start_response: StartResponse) -> Closing:
        start_response("200 OK", [])
        return result

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        _, body = await client.response()
    assert body == b"onetwo"
    assert result.closed.is_set()


async def test_close_is_called_when_the_client_leaves_mid_response() -> None:
    produced: list[int] = []

    def endless() -> Iterator[bytes]:
        for number in range(1_000_000):
            produced.append(number)
            yield b"x" * 1024

    result = Closing(endless())

    def app(environ: Environ, start_response: StartResponse) -> Closing:
        start_response("200 OK", [])
        return result

    async with connection(WSGIApp(app), lockstep=True) as (client, _):
        await client.request("GET", "/")
        await client.next_event()  # the head: the app is under way
        await client.stream.aclose()
        with trio.fail_after(STEP):
            await trio.to_thread.run_sync(result.closed.wait)
    assert result.closed.is_set()
    # The server stopped asking for chunks soon after the client left (it did not run through
    # the million).
    assert len(produced) < 1000


async def test_close_is_called_when_the_app_fails_mid_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def failing() -> Iterator[bytes]:
        yield b"first"
        raise ValueError("broken generator")

    result = Closing(failing())

    def app(environ: Environ, start_response: StartResponse) -> Closing:
        start_response("200 OK", [])
        return result

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        data = await client.read_until_eof()
    # The head and the first chunk went out; the body is cut off (no final chunk) and the
    # connection closed, so the client cannot take it for a whole response.
    assert b"200 OK" in data
    assert b"first" in data
    assert not data.endswith(b"0\r\n\r\n")
    assert result.closed.is_set()
    assert "broken generator" in caplog.text


async def test_a_crash_before_the_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("no database")

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, _ = await client.response()
    assert response.status_code == 500
    assert "no database" in caplog.text


async def test_a_crash_in_the_first_iteration_closes_and_is_a_500() -> None:
    def failing() -> Iterator[bytes]:
        raise LookupError("nothing yet")
        yield b"never"

    result = Closing(failing())

    def app(environ: Environ, start_response: StartResponse) -> Closing:
        start_response("200 OK", [])
        return result

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, _ = await client.response()
    assert response.status_code == 500
    assert result.closed.is_set()


# -- exc_info -------------------------------------------------------------------------------------


async def test_exc_info_before_the_head_replaces_the_response() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        try:
            raise KeyError("template")
        except KeyError as exc:
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "text/plain")],
                (type(exc), exc, exc.__traceback__),
            )
        return [b"sorry"]

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    assert (response.status_code, header(response, b"content-type"), body) == (
        500,
        b"text/plain",
        b"sorry",
    )


async def test_exc_info_after_the_head_reraises_the_apps_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reraised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise KeyError("late failure")
        except KeyError as exc:
            try:
                start_response("500 Internal Server Error", [], (type(exc), exc, None))
            except KeyError as again:
                reraised.append(again)
                raise
        return [b"never"]

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        data = await client.read_until_eof()
    assert b"200 OK" in data
    assert b"partial" in data
    assert b"500" not in data
    assert [str(exc) for exc in reraised] == ["'late failure'"]
    assert "late failure" in caplog.text


async def test_start_response_twice_without_exc_info_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    async with connection(WSGIApp(app)) as (client, _):
        await client.request("GET", "/")
        response, _ = await client.response()
    assert response.status_code == 500
    assert "a second time without exc_info" in caplog.text


# -- the request body -----------------------------------------------------------------------------

READERS: dict[str, Callable[[Any], list[bytes]]] = {
    "read()": lambda body: [body.read()],
    "read(n)": lambda body: list(iter(lambda: body.read(7), b"")),
    "readline()": lambda body: list(iter(body.readline, b"")),
    "readline(n)": lambda body: list(iter(lambda: body.readline(4), b"")),
    "readlines()": lambda body: body.readlines(),
    "iteration": lambda body: list(body),
}
EXPECTED = {
    "read()": ["alpha\nbeta\ngamma\ndelta"],
    "read(n)": ["alpha\nb", "eta\ngam", "ma\ndelt", "a"],
    "readline()": ["alpha\n", "beta\n", "gamma\n", "delta"],
    "readline(n)": ["alph", "a\n", "beta", "\n", "gamm", "a\n", "delt", "a"],
    "readlines()": ["alpha\n", "beta\n", "gamma\n", "delta"],
    "iteration": ["alpha\n", "beta\n", "gamma\n", "delta"],
}


@pytest.mark.parametrize("reader", READERS)
async def test_wsgi_input_reads_a_chunked_body_every_way(reader: str) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        pieces = READERS[reader](environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([piece.decode() for piece in pieces]).encode()]

    async with connection(WSGIApp(app)) as (client, _):
        await client.send(
            h11.Request(
                method="POST",
                target="/",
                headers=[("host", "test"), ("transfer-encoding", "chunked")],
            )
        )
        for piece in (b"alpha\nbeta\n", b"gamma\ndel", b"ta"):
            await client.send(h11.Data(data=piece))
        await client.send(h11.EndOfMessage())
        response, body = await client.response()
    assert response.status_code == 200
    assert json.loads(body) == EXPECTED[reader]


async def test_the_body_is_read_from_the_client_only_as_the_app_reads_it() -> None:
    # Backpressure: over a stream with no buffer, the client can send only what the server
    # reads; while the app holds after reading 1000 bytes of a 4 MiB body, the client is stuck
    # near the start of it.
    piece, pieces = 64 * 1024, 64
    first_read, finish = threading.Event(), threading.Event()
    read_first: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"]
        read_first.append(len(body.read(1000)))
        first_read.set()
        wait(finish)
        rest = body.read()
        start_response("200 OK", [])
        return [b"%d" % (read_first[0] + len(rest))]

    sent = 0
    async with connection(WSGIApp(app), lockstep=True) as (client, _):

        async def upload() -> None:
            nonlocal sent
            headers = [("host", "test"), ("content-length", str(piece * pieces))]
            await client.send(h11.Request(method="POST", target="/", headers=headers))
            for _ in range(pieces):
                await client.send(h11.Data(data=b"x" * piece))
                sent += piece
            await client.send(h11.EndOfMessage())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            with trio.fail_after(STEP):
                await trio.to_thread.run_sync(first_read.wait)
            await trio.testing.wait_all_tasks_blocked()
            assert read_first == [1000]
            assert sent <= 4 * piece  # of 64 pieces
            finish.set()
            response, body = await client.response()
    assert (response.status_code, body) == (200, b"%d" % (piece * pieces))


async def test_a_client_that_leaves_mid_body_is_an_error_for_the_app() -> None:
    errors: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [])
        return [b"unreachable"]

    async with connection(WSGIApp(app)) as (client, _):
        await client.send(
            h11.Request(
                method="POST", target="/", headers=[("host", "test"), ("content-length", "100")]
            )
        )
        await client.send(h11.Data(data=b"only ten.."))
        await client.stream.aclose()
    assert [type(exc) for exc in errors] == [trioserve.ClientDisconnected]


# -- the environ ----------------------------------------------------------------------------------


async def test_the_environ_follows_pep_3333() -> None:
    config = Config(access_log=False, root_path="/mount")
    async with connection(WSGIApp(environ_dump), config) as (client, _):
        await client.request(
            "POST",
            "/caf%C3%A9/x?q=%20x&y",
            headers=[
                ("content-type", "text/plain"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("x_multi", "smuggled"),
                ("user-agent", "test-client"),
            ],
            body=b"hi",
        )
        response, body = await client.response()
    environ = json.loads(body)
    assert response.status_code == 200
    expected = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "/mount",
        # PEP 3333: the path's bytes (UTF-8 here) as latin-1 characters.
        "PATH_INFO": "/café/x".encode().decode("latin-1"),
        "QUERY_STRING": "q=%20x&y",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5000",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "2",
        "HTTP_HOST": "test",
        "HTTP_X_MULTI": "a, b",
        "HTTP_USER_AGENT": "test-client",
        "wsgi.url_scheme": "http",
        "wsgi.version": [1, 0],
        "wsgi.multithread": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    assert {key: environ.get(key) for key in expected} == expected
    # A header name with "_" would pose as the dashed one; it is dropped.
    assert not any(key.startswith("HTTP_X_MULTI_") for key in environ)
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


async def test_the_environ_honours_a_trusted_proxy() -> None:
    config = Config(access_log=False, proxy_headers="x-forwarded")
    async with connection(WSGIApp(environ_dump), config) as (client, _):
        await client.request(
            "GET",
            "/",
            headers=[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")],
        )
        _, body = await client.response()
    environ = json.loads(body)
    assert (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"]) == ("203.0.113.7", "https")


# -- wsgi.file_wrapper ----------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    return path


async def test_file_wrapper_sends_a_whole_file_by_path(data_file: Path) -> None:
    opened: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> Any:
        file = open(data_file, "rb")  # noqa: SIM115 (closed by the server, through close())
        opened.append(file)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](file, 8192)

    spy = Spy(WSGIApp(app))
    async with connection(spy) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    assert spy.sent == ["http.response.start", "http.response.pathsend"]
    assert header(response, b"content-length") == b"256000"
    assert body == data_file.read_bytes()
    assert opened[0].closed


@pytest.mark.parametrize("case", ["seeked", "in memory", "shorter content-length"])
async def test_file_wrapper_reads_what_is_not_a_whole_file(data_file: Path, case: str) -> None:
    data = data_file.read_bytes()
    files: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> Any:
        headers = []
        file: Any = open(data_file, "rb")  # noqa: SIM115 (closed by the server)
        if case == "seeked":
            file.seek(1000)
        elif case == "in memory":
            file.close()
            file = io.BytesIO(data)
        else:
            headers.append(("Content-Length", "3000"))
        files.append(file)
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](file)

    expected = {"seeked": data[1000:], "in memory": data, "shorter content-length": data[:3000]}
    spy = Spy(WSGIApp(app))
    async with connection(spy) as (client, _):
        await client.request("GET", "/")
        response, body = await client.response()
    assert response.status_code == 200
    assert "http.response.pathsend" not in spy.sent
    assert body == expected[case]
    assert files[0].closed


# -- the thread pool ------------------------------------------------------------------------------


async def test_no_more_requests_run_at_once_than_the_pool_has_threads() -> None:
    inside = 0
    most = 0
    changed = threading.Condition()
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        nonlocal inside, most
        with changed:
            inside += 1
            most = max(most, inside)
            changed.notify_all()
        wait(release)
        with changed:
            inside -= 1
        start_response("200 OK", [])
        return [b"done"]

    wsgi = WSGIApp(app, threads=2)
    async with (
        connection(wsgi) as (first, _),
        connection(wsgi) as (second, _),
        connection(wsgi) as (third, _),
    ):
        for client in (first, second, third):
            await client.request("GET", "/")

        def two_inside() -> None:
            with changed:
                assert changed.wait_for(lambda: inside == 2, STEP)

        await trio.to_thread.run_sync(two_inside)
        await trio.testing.wait_all_tasks_blocked()
        assert inside == 2  # the third request waits for a thread
        release.set()
        bodies = [(await client.response())[1] for client in (first, second, third)]
    assert bodies == [b"done"] * 3
    assert most == 2


async def test_lifespan_completes_and_websockets_are_refused() -> None:
    sent: list[dict[str, Any]] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    wsgi = WSGIApp(hello)
    await wsgi({"type": "lifespan"}, receive, send)
    await wsgi({"type": "websocket"}, receive, send)
    assert [message["type"] for message in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


# -- telling WSGI from ASGI -----------------------------------------------------------------------


class WSGIObject:
    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        return hello(environ, start_response)


async def asgi3(scope: Any, receive: Any, send: Any) -> None:
    pass


def test_auto_detection_tells_wsgi_apps_from_asgi_apps() -> None:
    import flask

    for app in (hello, WSGIObject(), flask.Flask("detected")):
        wrapped = as_asgi(app)
        assert isinstance(wrapped, WSGIApp)
        assert wrapped.app is app
    assert as_asgi(asgi3) is asgi3
    assert not isinstance(as_asgi(lambda scope: asgi3), WSGIApp)  # ASGI 2
    already = WSGIApp(hello)
    assert as_asgi(already) is already


def test_the_interface_can_be_forced() -> None:
    def anything(*args: Any) -> Any:  # binds three arguments: ASGI 3 to auto-detection
        return hello(*args)

    assert as_asgi(anything) is anything
    forced = as_asgi(anything, interface="wsgi", wsgi_threads=3)
    assert isinstance(forced, WSGIApp)
    assert forced.threads == 3
    with pytest.raises(trioserve.AppLoadError, match="does not look like an ASGI application"):
        as_asgi(hello, interface="asgi")


def test_the_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WSGIApp(hello, threads=0)
    with pytest.raises(trioserve.ConfigError, match="wsgi_threads"):
        Config(wsgi_threads=0)


# -- real apps over real sockets: Flask, sync Django, httpbin -------------------------------------

PROTOCOLS = ["HTTP/1.1", "HTTP/2"]


def client_for(address: str, protocol: str) -> httpx.AsyncClient:
    """An httpx client speaking ``protocol`` (HTTP/2 by prior knowledge on the plain port)."""
    http2 = protocol == "HTTP/2"
    return httpx.AsyncClient(
        base_url=f"http://{address}", http1=not http2, http2=http2, timeout=STEP
    )


def flask_app(tmp_path: Path) -> Any:
    import flask

    app = flask.Flask("wsgi_test")
    report = tmp_path / "report.bin"
    report.write_bytes(bytes(range(256)) * 800)

    @app.get("/hello")
    def hello_route() -> Any:
        environ = flask.request.environ
        return {
            "hello": flask.request.args.get("name", "world"),
            "protocol": environ["SERVER_PROTOCOL"],
            "thread": threading.current_thread() is not threading.main_thread(),
        }

    @app.post("/echo")
    def echo() -> Any:
        data = flask.request.get_data()
        return {"length": len(data), "sum": sum(data) % 65521}

    @app.post("/upload")
    def upload() -> Any:
        file = flask.request.files["document"]
        return {"name": file.filename, "size": len(file.read()), "note": flask.request.form["note"]}

    @app.get("/stream")
    def stream() -> Any:
        return flask.Response((f"line {n}\n" for n in range(5)), mimetype="text/plain")

    @app.get("/report")
    def send_report() -> Any:
        return flask.send_file(report)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("flask view failed")

    return app


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as an upload of unknown length (chunked on HTTP/1.1), ``size`` bytes at a time."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_flask_app_is_served_as_it_is(
    tmp_path: Path, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    spy = Spy(as_asgi(flask_app(tmp_path)))
    upload = bytes(range(256)) * 4096  # 1 MiB, streamed to the app as it reads it
    async with serving(spy) as (_, address), client_for(address, protocol) as client:
        hello = await client.get("/hello", params={"name": "flask"})
        echo = await client.post("/echo", content=pieces(upload, 300_000))
        form = await client.post(
            "/upload", files={"document": ("notes.txt", b"x" * 70_000)}, data={"note": "hi"}
        )
        stream = await client.get("/stream")
        spy.sent.clear()
        report = await client.get("/report")
        report_messages = list(spy.sent)
        boom = await client.get("/boom")
    assert hello.http_version == protocol
    assert hello.json() == {"hello": "flask", "protocol": protocol, "thread": True}
    assert echo.json() == {"length": len(upload), "sum": sum(upload) % 65521}
    assert form.json() == {"name": "notes.txt", "size": 70_000, "note": "hi"}
    assert stream.text == "".join(f"line {n}\n" for n in range(5))
    assert report.content == (tmp_path / "report.bin").read_bytes()
    assert report.headers["content-length"] == str(256 * 800)
    assert report_messages == ["http.response.start", "http.response.pathsend"]
    assert boom.status_code == 500
    assert "flask view failed" in caplog.text


def httpbin_app() -> Any:
    import httpbin

    return httpbin.app


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_httpbin_is_served(protocol: str) -> None:
    async with (
        serving(as_asgi(httpbin_app())) as (_, address),
        client_for(address, protocol) as client,
    ):
        got = await client.get("/get", params={"a": "1"}, headers={"X-Test": "yes"})
        posted = await client.post("/post", json={"key": "value"})
        status = await client.get("/status/418")
        streamed = await client.get("/stream/3")
        some_bytes = await client.get("/bytes/5000", params={"seed": "1"})
        gzipped = await client.get("/gzip")
        redirected = await client.get("/redirect/2", follow_redirects=True)
    assert got.json()["args"] == {"a": "1"}
    assert got.json()["headers"]["X-Test"] == "yes"
    assert posted.json()["json"] == {"key": "value"}
    assert status.status_code == 418
    assert [json.loads(line)["id"] for line in streamed.text.splitlines()] == [0, 1, 2]
    assert len(some_bytes.content) == 5000
    assert gzipped.json()["gzipped"] is True
    assert redirected.status_code == 200
    assert len(redirected.history) == 2


DJANGO_PROJECT = {
    "settings.py": """
        SECRET_KEY = "test-only-" + "x" * 40
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "mysite.urls"
        INSTALLED_APPS = []
        MIDDLEWARE = []
        """,
    "urls.py": """
        import os
        import threading

        from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
        from django.urls import path

        def hello(request):
            return JsonResponse({
                "method": request.method,
                "thread": threading.current_thread() is not threading.main_thread(),
                "protocol": request.META["SERVER_PROTOCOL"],
            })

        def echo(request):
            return HttpResponse(request.body[::-1], content_type="application/octet-stream")

        def stream(request):
            return StreamingHttpResponse(b"part %d;" % n for n in range(4))

        def download(request):
            return FileResponse(open(os.environ["REPORT_FILE"], "rb"))

        urlpatterns = [
            path("", hello), path("echo", echo), path("stream", stream), path("file", download)
        ]
        """,
    "wsgi.py": """
        import os

        from django.core.wsgi import get_wsgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        application = get_wsgi_application()
        """,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_sync_django_is_served_from_its_wsgi_module(tmp_path: Path, protocol: str) -> None:
    # As a user would: a Django project's wsgi.py, started with `trioserve mysite.wsgi:application`.
    package = tmp_path / "mysite"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in DJANGO_PROJECT.items():
        (package / name).write_text(textwrap.dedent(source))
    report = tmp_path / "report.bin"
    report.write_bytes(b"django file " * 10_000)
    server = await in_thread(
        lambda: ServerProcess.start(
            "mysite.wsgi:application",
            "--no-access-log",
            cwd=tmp_path,
            env={"REPORT_FILE": str(report)},
        )
    )
    try:
        address = server.url.removeprefix("http://")
        async with client_for(address, protocol) as client:
            hello = await client.get("/")
            echo = await client.post("/echo", content=b"abcdef" * 50_000)
            stream = await client.get("/stream")
            file = await client.get("/file")
    finally:
        status, stderr = await in_thread(lambda: server.stop(signal.SIGTERM))
    assert "the WSGI app mysite.wsgi:application" in stderr
    assert hello.json() == {"method": "GET", "thread": True, "protocol": protocol}
    assert echo.content == (b"abcdef" * 50_000)[::-1]
    assert stream.text == "part 0;part 1;part 2;part 3;"
    assert file.content == report.read_bytes()
    assert file.headers["content-length"] == str(len(report.read_bytes()))
    assert status == 0


def test_the_command_line_refuses_a_wsgi_app_as_asgi(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trioserve._cli import main

    monkeypatch.setattr(sys, "path", list(sys.path))  # --app-dir adds to it

    (tmp_path / "wsgi_cli_app.py").write_text(
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'hi']\n"
    )
    status = main(["wsgi_cli_app:app", "--app-dir", str(tmp_path), "--interface", "asgi"])
    assert status == 2
    assert "does not look like an ASGI application" in capsys.readouterr().err
    status = main(["wsgi_cli_app:app", "--app-dir", str(tmp_path), "--wsgi-threads", "0"])
    assert status == 2
    assert "wsgi_threads must be at least 1" in capsys.readouterr().err
    sys.modules.pop("wsgi_cli_app", None)


async def test_serve_wraps_a_wsgi_app_itself() -> None:
    # serve() (and so Server) tells a WSGI app from the callable, as the command line does.
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from wsgi via serve()"]

    async with trio.open_nursery() as nursery:
        config = Config(host="127.0.0.1", port=0, access_log=False)
        addresses = await nursery.start(trioserve.serve, wsgi_app, config)
        host, port = addresses[0]
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{host}:{port}/")
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    assert response.text == "from wsgi via serve()"
