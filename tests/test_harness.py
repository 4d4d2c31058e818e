"""harness without the plugin: open_server (trio) and serving (thread), stubs, faults, checks.

Each fault is shown from the client's side: what bytes (or which error) a client gets.
"""

from __future__ import annotations

import ast
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import harness
import trioserve
from harness import Fault, HarnessError


async def raw_get(srv: harness.HarnessServer, path: str = "/") -> bytes:
    """Send a GET over a plain socket and read until the server closes (bounded)."""
    stream = await trio.open_tcp_stream(srv.host, srv.port)
    received = b""
    try:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        with trio.fail_after(10):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    except trio.BrokenResourceError:
        received += b"<reset>"
    finally:
        await stream.aclose()
    return received


async def test_open_server_answers_expectations_and_records_calls() -> None:
    async with harness.open_server() as srv:
        route = srv.expect("POST", "/v1/items", json={"name": "pen"}, headers={"x-key": "k"})
        route.respond(201, json={"id": 1})
        async with httpx.AsyncClient(base_url=srv.url) as client:
            response = await client.post("/v1/items", json={"name": "pen"}, headers={"X-Key": "k"})
        assert (response.status_code, response.json()) == (201, {"id": 1})
        assert route.called_once
        assert route.calls[0].json() == {"name": "pen"}
        assert srv.requests[0].method == "POST"
        assert srv.requests[0].header("x-key") == "k"


async def test_unmatched_request_fails_the_check_with_a_field_diff() -> None:
    with pytest.raises(HarnessError) as info:
        async with harness.open_server() as srv:
            srv.expect("GET", "/v1/users", query={"page": "2"}).respond(200)
            async with httpx.AsyncClient(base_url=srv.url) as client:
                response = await client.get("/v1/users", params={"page": "3"})
            assert response.status_code == 500
    report = str(info.value)
    assert "unmatched request: GET /v1/users?page=3" in report
    assert "nearest expectation #1: GET /v1/users" in report
    assert "query: expected {'page': ['2']}, got {'page': ['3']}" in report
    assert "unmet expectation #1" in report


async def test_not_strict_does_not_raise() -> None:
    async with harness.open_server(strict=False) as srv:
        srv.expect("GET", "/never").respond(200)
        async with httpx.AsyncClient(base_url=srv.url) as client:
            response = await client.get("/nothing")
    # Leaving the block did not raise, although the check finds what strict mode fails on.
    assert response.status_code == 500
    with pytest.raises(HarnessError) as info:
        srv.check()
    assert "unmatched request: GET /nothing" in str(info.value)
    assert "unmet expectation #1 GET /never" in str(info.value)


async def test_respond_seq_and_times() -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/flaky", times=3).respond_seq([503, 503, (200, {"json": {"ok": 1}})])
        async with httpx.AsyncClient(base_url=srv.url) as client:
            statuses = [(await client.get("/flaky")).status_code for _ in range(3)]
        assert statuses == [503, 503, 200]


async def test_ordered_expectations_must_come_in_order() -> None:
    with pytest.raises(HarnessError, match="unmatched request: GET /second"):
        async with harness.open_server() as srv:
            srv.expect("GET", "/first", ordered=True).respond(200)
            srv.expect("GET", "/second", ordered=True).respond(200)
            async with httpx.AsyncClient(base_url=srv.url) as client:
                assert (await client.get("/second")).status_code == 500
                assert (await client.get("/first")).status_code == 200


async def test_handler_exception_is_a_500_and_fails_the_check() -> None:
    def broken(request: harness.Recorded) -> Any:
        raise KeyError("missing field")

    with pytest.raises(HarnessError) as info:
        async with harness.open_server() as srv:
            srv.expect("GET", "/boom").respond_with(broken)
            async with httpx.AsyncClient(base_url=srv.url) as client:
                assert (await client.get("/boom")).status_code == 500
    assert "KeyError: 'missing field'" in str(info.value)


async def test_app_exception_fails_the_check_with_its_traceback() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        raise ZeroDivisionError("app bug")

    with pytest.raises(HarnessError) as info:
        async with (
            harness.open_server(app=app) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            assert (await client.get("/")).status_code == 500
    assert "ZeroDivisionError: app bug" in str(info.value)


async def test_app_lifespan_startup_failure_fails_setup() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no config"})

    with pytest.raises(Exception, match="no config"):
        async with harness.open_server(app=app):
            pass


async def app_without_lifespan(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise TypeError("only HTTP here")


async def app_crashing_at_startup(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise ValueError("no database")


async def app_returning_at_startup(scope: Any, receive: Any, send: Any) -> None:
    await receive()


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (
            app_without_lifespan,
            "lifespan startup failed: harness: the app does not support the ASGI lifespan "
            "protocol (it raised TypeError('only HTTP here') on the lifespan scope); "
            "with lifespan='on' the harness runs the startup and shutdown of app= around the test",
        ),
        (
            app_crashing_at_startup,
            "lifespan startup failed: harness: the app's lifespan startup raised:\n"
            "Traceback (most recent call last):",
        ),
        (
            app_returning_at_startup,
            "lifespan startup failed: harness: the app returned from its lifespan call without "
            "answering lifespan.startup",
        ),
    ],
)
async def test_lifespan_failures_are_explained_in_harness_terms(app: Any, expected: str) -> None:
    with pytest.raises(trioserve.TrioserveError) as info:
        async with harness.open_server(app=app, lifespan="on"):
            pass
    message = str(info.value)
    assert message.startswith(expected)
    assert "--lifespan" not in message
    if app is app_crashing_at_startup:
        assert message.rstrip().endswith("ValueError: no database")


async def test_static_root_is_served_behind_expectations(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text('{"from": "disk"}')
    async with harness.open_server(root=tmp_path) as srv:
        srv.expect("GET", "/override").respond(200, text="stub")
        async with httpx.AsyncClient(base_url=srv.url) as client:
            assert (await client.get("/data.json")).json() == {"from": "disk"}
            assert (await client.get("/override")).text == "stub"


async def test_respond_stream_sends_chunks_over_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/events").respond_stream(
            ["data: 1\n\n", "data: 2\n\n"], interval=5, content_type="text/event-stream"
        )
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        start = trio.current_time()
        first = await stream.receive_some(65536)
        assert b"transfer-encoding: chunked" in first
        assert b"data: 1" in first
        assert b"data: 2" not in first
        second = await stream.receive_some(65536)
        assert b"data: 2" in second
        assert trio.current_time() - start >= 5
        await stream.aclose()


# -- request bodies reach the app --------------------------------------------------------------


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers every request with the body it read (lifespan supported)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


LARGE_BODY = bytes(range(256)) * 4096  # 1 MiB: far more than one read from the socket

# What the client sends: one bytes object (Content-Length), or pieces (chunked).
BODIES: dict[str, list[bytes]] = {
    "small": [b"hello"],
    "large": [LARGE_BODY],
    "chunked": [b"first,", b"second,", b"third"],
}


def add_expectations(srv: harness.HarnessServer, which: str) -> None:
    """No expectations, one for another path, or one for this path whose body does not match
    (so the stub reads the body before the request falls through to the app)."""
    if which == "elsewhere":
        srv.expect("GET", "/elsewhere", times=None).respond(200)
    elif which == "same path, other body":
        srv.expect("POST", "/echo", json={"other": "body"}, times=None).respond(200)


EXPECTATIONS = ["none", "elsewhere", "same path, other body"]


@pytest.mark.parametrize("expectations", EXPECTATIONS)
@pytest.mark.parametrize("body", list(BODIES))
async def test_app_receives_the_request_body_trio(body: str, expectations: str) -> None:
    pieces = BODIES[body]

    async def chunked() -> Any:
        for piece in pieces:
            yield piece

    content: Any = pieces[0] if body != "chunked" else chunked()
    async with harness.open_server(app=echo_app) as srv:
        add_expectations(srv, expectations)
        async with httpx.AsyncClient() as client:
            response = await client.post(srv.url_for("/echo"), content=content)
        assert response.content == b"".join(pieces)
        assert [(r.path, r.body, r.status) for r in srv.requests] == [
            ("/echo", b"".join(pieces), 200)
        ]


@pytest.mark.parametrize("expectations", EXPECTATIONS)
@pytest.mark.parametrize("body", list(BODIES))
def test_app_receives_the_request_body_thread(body: str, expectations: str) -> None:
    pieces = BODIES[body]
    content: Any = pieces[0] if body != "chunked" else iter(pieces)
    with harness.serving(app=echo_app) as srv:
        add_expectations(srv, expectations)
        response = httpx.post(srv.url_for("/echo"), content=content)
        assert response.content == b"".join(pieces)
        assert [(r.path, r.body, r.status) for r in srv.requests] == [
            ("/echo", b"".join(pieces), 200)
        ]


async def test_stub_records_the_body_when_no_app_is_given() -> None:
    async with harness.open_server(strict=False) as srv:
        async with httpx.AsyncClient() as client:
            await client.post(srv.url_for("/nowhere"), content=LARGE_BODY)
        assert srv.requests[0].body == LARGE_BODY


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """Read until ``marker`` has arrived (bounded)."""
    received = b""
    with trio.fail_after(10):
        while marker not in received:
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    return received


@pytest.mark.parametrize("expectations", ["none", "elsewhere"])
async def test_app_reads_the_body_as_it_arrives(expectations: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await echo_app(scope, receive, send)
            return
        first = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send(
            {"type": "http.response.body", "body": b"got:" + first["body"], "more_body": True}
        )
        rest = b""
        while (message := await receive())["more_body"]:
            rest += message["body"]
        rest += message["body"]
        await send({"type": "http.response.body", "body": b"|got:" + rest})

    async with harness.open_server(app=app) as srv:
        add_expectations(srv, expectations)
        async with await trio.open_tcp_stream(srv.host, srv.port) as stream:
            head = b"POST /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            await stream.send_all(head + b"5\r\nfirst\r\n")
            # The app answers the first chunk while the client still holds back the rest: a stub
            # that read the whole body before calling the app would never get here.
            await read_until(stream, b"got:first")
            await stream.send_all(b"6\r\nsecond\r\n0\r\n\r\n")
            assert b"|got:second" in await read_until(stream, b"\r\n0\r\n\r\n")
        assert srv.requests[0].body == b"firstsecond"


@pytest.mark.parametrize("expectations", ["none", "same path, other body"])
async def test_expect_100_continue_reaches_an_app_that_reads_the_body(expectations: str) -> None:
    async with harness.open_server(app=echo_app) as srv:
        add_expectations(srv, expectations)
        async with await trio.open_tcp_stream(srv.host, srv.port) as stream:
            await stream.send_all(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            assert (await read_until(stream, b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            response = await read_until(stream, b"hello")
            assert response.startswith(b"HTTP/1.1 200 ")


async def test_an_app_that_refuses_the_body_unread_sends_no_100_continue() -> None:
    async def refusing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await echo_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too big"})

    async with harness.open_server(app=refusing) as srv:
        async with await trio.open_tcp_stream(srv.host, srv.port) as stream:
            await stream.send_all(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            response = await read_until(stream, b"too big")
            assert response.startswith(b"HTTP/1.1 413 ")
            assert b" 100 " not in response
        assert [(r.path, r.body, r.status) for r in srv.requests] == [("/upload", b"", 413)]


# -- faults, as a client sees them ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.empty_response(), rb"\A\Z"),
        (Fault.bad_status_line(), rb"\AHTPT/1\.x 2OO MAYBE\r\n\r\n\Z"),
        (Fault.malformed_chunk(), rb"transfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n\Z"),
        (Fault.garbage_then_close(16), rb"\A[\x00-\xff]{16}\Z"),
        (Fault.truncate(3), rb"content-length: 10\r\n\r\n012\Z"),
        (Fault.close_after_response(), rb"\AHTTP/1\.1 200 OK\r\n(?![\s\S]*connection: close)"),
    ],
)
async def test_fault_bytes_on_the_wire(fault: Fault, expected: bytes) -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/f").respond(200, body=b"0123456789").fault(fault)
        received = await raw_get(srv, "/f")
    assert re.search(expected, received), received


def test_a_fault_of_unknown_kind_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'explode'"):
        Fault("explode")


async def test_reset_fault_resets_the_connection() -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/r").respond(200).fault(Fault.reset())
        assert await raw_get(srv, "/r") == b"<reset>"


async def test_reset_fault_is_a_connection_error_for_httpx() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/r").respond(200).fault(Fault.reset())
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url_for("/r"), timeout=5)


async def test_delay_and_drip_take_their_time(autojump_clock: trio.testing.MockClock) -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/slow").respond(200, body=b"abcdef").fault(Fault.delay(7))
        srv.expect("GET", "/drip").respond(200, body=b"abcdef").fault(Fault.drip(2, 3))
        start = trio.current_time()
        assert (await raw_get_keepalive(srv, "/slow")).endswith(b"abcdef")
        assert 7 <= trio.current_time() - start < 8
        start = trio.current_time()
        assert (await raw_get_keepalive(srv, "/drip")).endswith(b"abcdef")
        assert 6 <= trio.current_time() - start < 7  # three pieces, two gaps of 3 s


async def raw_get_keepalive(srv: harness.HarnessServer, path: str) -> bytes:
    """A GET with Connection: close, read to the end."""
    stream = await trio.open_tcp_stream(srv.host, srv.port)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    received = b""
    while chunk := await stream.receive_some(65536):
        received += chunk
    await stream.aclose()
    return received


async def test_slow_headers_arrive_line_by_line(autojump_clock: trio.testing.MockClock) -> None:
    async with harness.open_server() as srv:
        srv.expect("GET", "/h").respond(200, text="x").fault(Fault.slow_headers(2))
        stream = await trio.open_tcp_stream(srv.host, srv.port)
        await stream.send_all(b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await stream.receive_some(65536)
        assert first == b"HTTP/1.1 200 OK\r\n"
        start = trio.current_time()
        second = await stream.receive_some(65536)
        assert trio.current_time() - start >= 2
        assert second.startswith(b"content-type:")
        await stream.aclose()


def test_hang_is_cancelled_at_teardown_quickly() -> None:
    started = time.monotonic()
    with harness.serving() as srv:
        srv.expect("GET", "/hang").respond(200).fault(Fault.hang())
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(srv.url_for("/hang"), timeout=0.2)
        idle = socket.create_connection((srv.host, srv.port))  # an idle client, never closed
        half = socket.create_connection((srv.host, srv.port))
        half.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
    assert time.monotonic() - started < 2
    idle.close()
    half.close()


def test_refuse_connections() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/", times=None).respond(200)
        assert httpx.get(srv.url_for("/")).status_code == 200
        srv.refuse_connections()
        with pytest.raises(httpx.ConnectError):  # at once: no waiting needed
            httpx.get(srv.url_for("/"), timeout=2)


def test_server_wide_fault() -> None:
    with harness.serving(strict=False) as srv:
        srv.fault(Fault.empty_response())
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(srv.url_for("/anything"), timeout=5)


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_handle_gives_trust_for_every_kind_of_client() -> None:
    with harness.serving(tls=True) as srv:
        srv.expect("GET", "/secure", times=None).respond(200, text="ok")
        assert srv.url.startswith("https://127.0.0.1:")
        assert httpx.get(srv.url_for("/secure"), verify=srv.client_ssl_context()).text == "ok"
        context = ssl.create_default_context(cafile=srv.ca_path)
        for host in ("localhost", "127.0.0.1"):
            url = f"https://{host}:{srv.port}/secure"
            assert httpx.get(url, verify=context).text == "ok"
        assert srv.ssl_env["SSL_CERT_FILE"] == srv.ca_path
        assert srv.client_ssl_context().verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(httpx.ConnectError):
            httpx.get(srv.url_for("/secure"))  # the system trust store does not know our CA


def test_mtls_requires_the_client_certificate() -> None:
    with harness.serving(mtls=True) as srv:
        srv.expect("GET", "/", times=None).respond(200, text="hello client")
        assert httpx.get(srv.url_for("/"), verify=srv.client_ssl_context()).text == "hello client"
        bare = ssl.create_default_context(cafile=srv.ca_path)
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url_for("/"), verify=bare)
        assert Path(srv.client_cert_path).read_text().count("BEGIN CERTIFICATE") >= 1


def test_connection_count_shows_keep_alive() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/k", times=None).respond(200)
        with httpx.Client() as client:
            for _ in range(3):
                client.get(srv.url_for("/k"))
        assert srv.connection_count == 1
        for _ in range(2):
            httpx.get(srv.url_for("/k"))
        assert srv.connection_count == 3


def test_url_for_encodes_query() -> None:
    with harness.serving() as srv:
        assert srv.url_for("search", q="a b", n=2) == f"{srv.url}/search?q=a+b&n=2"


def test_harness_uses_only_the_public_trioserve_api() -> None:
    package = Path(harness.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("trioserve."), (source, node.module)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "trioserve"
            ):
                assert not node.attr.startswith("_"), (source, node.attr)


def test_app_may_be_a_wsgi_app() -> None:
    # A Flask app behind the stub, as requests' suite serves httpbin: expectations answer
    # first, the WSGI app the rest, and the request log records both with their bodies.
    import flask

    app = flask.Flask("harness_wsgi")

    @app.post("/echo")
    def echo() -> Any:
        return {"received": flask.request.get_data(as_text=True)}

    with harness.serving(app=app) as srv:
        srv.expect("GET", "/mocked").respond(200, body=b"from the stub")
        mocked = httpx.get(srv.url_for("/mocked"))
        echoed = httpx.post(srv.url_for("/echo"), content=b"hello wsgi")
        missing = httpx.get(srv.url_for("/missing"))
    assert mocked.text == "from the stub"
    assert echoed.json() == {"received": "hello wsgi"}
    assert missing.status_code == 404  # Flask's own answer
    assert [(r.path, r.body, r.status) for r in srv.requests] == [
        ("/mocked", b"", 200),
        ("/echo", b"hello wsgi", 200),
        ("/missing", b"", 404),
    ]
