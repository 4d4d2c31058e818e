"""The harness pytest plugin, used exactly as a downstream project would use it.

Every test writes a small downstream test module with ``pytester`` and runs it (in-process
unless threads or trio's global state make a subprocess safer), then checks the outcomes and
the report text pytest prints.
"""

from __future__ import annotations

import shutil
import time

import pytest

pytestmark: list[pytest.MarkDecorator] = []

# Options every downstream run uses: the plugin must declare its marker and ini option.
STRICT = ("--strict-markers", "--strict-config", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Write ``source`` as the downstream test module and run it in-process."""
    pytester.makepyfile(test_downstream=source)
    return pytester.runpytest(*STRICT, *args)


def run_subprocess(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Write ``source`` as the downstream test module and run it in a fresh interpreter."""
    pytester.makepyfile(test_downstream=source)
    return pytester.runpytest_subprocess(*STRICT, *args, timeout=60)


# -- 1. sync style ----------------------------------------------------------------------------


def test_sync_clients_over_plain_http(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import json
        import urllib.request

        import httpx
        import requests

        def test_httpx(http_server):
            http_server.expect("GET", "/x").respond(200, json={"client": "httpx"})
            response = httpx.get(http_server.url_for("/x"))
            assert response.status_code == 200
            assert response.json() == {"client": "httpx"}
            assert http_server.url == f"http://127.0.0.1:{http_server.port}"
            assert http_server.scheme == "http"

        def test_requests(http_server):
            http_server.expect("GET", "/x", query={"page": "2"}).respond(200, json={"client": "requests"})
            response = requests.get(http_server.url_for("/x", page=2), timeout=5)
            assert response.json() == {"client": "requests"}

        def test_urllib(http_server):
            http_server.expect("GET", "/x").respond(200, json={"client": "urllib"})
            with urllib.request.urlopen(http_server.url_for("/x"), timeout=5) as response:
                assert response.status == 200
                assert response.headers["content-type"] == "application/json"
                assert json.loads(response.read()) == {"client": "urllib"}
        """,
    )
    result.assert_outcomes(passed=3)


def test_sync_clients_over_tls(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import json
        import ssl
        import urllib.request

        import httpx
        import pytest
        import requests

        def test_httpx(https_server):
            https_server.expect("GET", "/x").respond(200, json={"client": "httpx"})
            response = httpx.get(https_server.url_for("/x"), verify=https_server.client_ssl_context())
            assert response.json() == {"client": "httpx"}
            assert https_server.url.startswith("https://127.0.0.1:")

        def test_httpx_by_name(https_server):
            https_server.expect("GET", "/x").respond(200, text="by name")
            url = f"https://localhost:{https_server.port}/x"
            assert httpx.get(url, verify=https_server.client_ssl_context()).text == "by name"

        def test_requests(https_server):
            https_server.expect("GET", "/x").respond(200, json={"client": "requests"})
            response = requests.get(https_server.url_for("/x"), verify=https_server.ca_path, timeout=5)
            assert response.json() == {"client": "requests"}

        def test_urllib(https_server):
            https_server.expect("GET", "/x").respond(200, json={"client": "urllib"})
            context = https_server.client_ssl_context()
            with urllib.request.urlopen(https_server.url_for("/x"), context=context, timeout=5) as response:
                assert json.loads(response.read()) == {"client": "urllib"}

        def test_urllib_with_ca_file(https_server):
            https_server.expect("GET", "/x").respond(200, text="ca file")
            context = ssl.create_default_context(cafile=https_server.ca_path)
            with urllib.request.urlopen(https_server.url_for("/x"), context=context, timeout=5) as response:
                assert response.read() == b"ca file"

        def test_untrusted_by_default(https_server):
            https_server.expect_no_requests()
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(https_server.url_for("/x"))
        """,
    )
    result.assert_outcomes(passed=6)


def test_ipv6_unix_socket_and_mtls(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import ssl

        import httpx
        import pytest
        import requests

        def test_ipv6(server_factory):
            server = server_factory(host="::1")
            server.expect("GET", "/six").respond(200, json={"family": 6})
            assert server.url == f"http://[::1]:{server.port}"
            assert httpx.get(server.url_for("/six")).json() == {"family": 6}

        def test_ipv6_tls(server_factory):
            server = server_factory(host="::1", tls=True)
            server.expect("GET", "/six").respond(200, json={"family": 6})
            response = httpx.get(server.url_for("/six"), verify=server.client_ssl_context())
            assert response.json() == {"family": 6}

        def test_unix_socket(server_factory):
            server = server_factory(uds=True)
            server.expect("GET", "/unix").respond(200, json={"over": "uds"})
            assert server.uds_path
            transport = httpx.HTTPTransport(uds=server.uds_path)
            with httpx.Client(transport=transport) as client:
                assert client.get(server.url_for("/unix")).json() == {"over": "uds"}

        def test_mtls_accepted(server_factory):
            server = server_factory(mtls=True)
            server.expect("GET", "/m", times=2).respond(200, json={"mutual": True})
            response = httpx.get(server.url_for("/m"), verify=server.client_ssl_context())
            assert response.json() == {"mutual": True}
            response = requests.get(
                server.url_for("/m"), verify=server.ca_path, cert=server.client_cert_path, timeout=5
            )
            assert response.json() == {"mutual": True}

        def test_mtls_refused_without_client_certificate(server_factory):
            server = server_factory(mtls=True)
            server.expect_no_requests()
            context = ssl.create_default_context(cafile=server.ca_path)
            with pytest.raises(httpx.TransportError):
                httpx.get(server.url_for("/m"), verify=context)
            assert server.requests == []
        """,
    )
    result.assert_outcomes(passed=5)


# -- 2. asyncio style -------------------------------------------------------------------------


def test_asyncio_clients(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import aiohttp
        import httpx
        import pytest

        pytestmark = pytest.mark.anyio

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        async def test_httpx(http_server):
            http_server.expect("GET", "/x").respond(200, json={"client": "httpx"})
            async with httpx.AsyncClient() as client:
                response = await client.get(http_server.url_for("/x"))
            assert response.json() == {"client": "httpx"}

        async def test_httpx_tls(https_server):
            https_server.expect("GET", "/x").respond(200, json={"client": "httpx"})
            async with httpx.AsyncClient(verify=https_server.client_ssl_context()) as client:
                response = await client.get(https_server.url_for("/x"))
            assert response.json() == {"client": "httpx"}

        async def test_aiohttp(http_server):
            http_server.expect("POST", "/x", json={"n": 1}).respond(201, json={"client": "aiohttp"})
            async with aiohttp.ClientSession() as session:
                async with session.post(http_server.url_for("/x"), json={"n": 1}) as response:
                    assert response.status == 201
                    assert await response.json() == {"client": "aiohttp"}

        async def test_aiohttp_tls(https_server):
            https_server.expect("GET", "/x").respond(200, json={"client": "aiohttp"})
            async with aiohttp.ClientSession() as session:
                url = https_server.url_for("/x")
                async with session.get(url, ssl=https_server.client_ssl_context()) as response:
                    assert await response.json() == {"client": "aiohttp"}

        async def test_unmatched_fails_asyncio_test_too(http_server):
            async with httpx.AsyncClient() as client:
                response = await client.get(http_server.url_for("/nobody-expects-this"))
            assert response.status_code == 500
        """,
    )
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(["*unmatched request: GET /nobody-expects-this*"])


# -- 3. trio style ----------------------------------------------------------------------------

TRIO_INI = "[pytest]\ntrio_mode = true\n"


def test_trio_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_INI)
    result = run_subprocess(
        pytester,
        """
        import httpx

        async def test_trio_server(trio_server):
            trio_server.expect("GET", "/x").respond(200, json={"style": "trio"})
            async with httpx.AsyncClient() as client:
                response = await client.get(trio_server.url_for("/x"))
            assert response.json() == {"style": "trio"}

        async def test_trio_server_factory_tls(trio_server_factory):
            server = await trio_server_factory(tls=True)
            server.expect("GET", "/x").respond(200, json={"style": "trio", "tls": True})
            async with httpx.AsyncClient(verify=server.client_ssl_context()) as client:
                response = await client.get(server.url_for("/x"))
            assert response.json() == {"style": "trio", "tls": True}

        async def test_two_servers(trio_server_factory):
            first = await trio_server_factory()
            second = await trio_server_factory()
            first.expect("GET", "/one").respond(200, text="1")
            second.expect("GET", "/two").respond(200, text="2")
            async with httpx.AsyncClient() as client:
                assert (await client.get(first.url_for("/one"))).text == "1"
                assert (await client.get(second.url_for("/two"))).text == "2"

        async def test_unmatched_fails(trio_server):
            async with httpx.AsyncClient() as client:
                response = await client.get(trio_server.url_for("/stray"))
            assert response.status_code == 500
        """,
    )
    # pytest-trio runs fixture teardown inside the test's trio.run: the check may surface as a
    # failure of the call or as a teardown error.
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 3, outcomes
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1, outcomes
    result.stdout.fnmatch_lines(["*unmatched request: GET /stray*"])


def test_trio_open_server_with_an_app(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_INI)
    result = run_subprocess(
        pytester,
        """
        import httpx
        import pytest
        import trio

        import harness

        EVENTS = []

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    EVENTS.append(message["type"])
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            body = b"hello " + scope["path"].encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})

        async def test_open_server_app():
            async with harness.open_server(app=app) as server:
                assert EVENTS == ["lifespan.startup"]
                async with httpx.AsyncClient() as client:
                    response = await client.get(server.url_for("/there"))
                assert response.text == "hello /there"
            assert EVENTS == ["lifespan.startup", "lifespan.shutdown"]
            assert [request.path for request in server.requests] == ["/there"]

        async def test_open_server_tls_stub_in_front_of_app():
            async with harness.open_server(app=app, tls=True) as server:
                server.expect("GET", "/stubbed").respond(200, text="from the stub")
                async with httpx.AsyncClient(verify=server.client_ssl_context()) as client:
                    assert (await client.get(server.url_for("/stubbed"))).text == "from the stub"
                    assert (await client.get(server.url_for("/app"))).text == "hello /app"

        async def test_open_server_strict_exit_raises():
            with pytest.raises(harness.HarnessError, match="unmatched request: GET /nope"):
                async with harness.open_server() as server:
                    async with httpx.AsyncClient() as client:
                        await client.get(server.url_for("/nope"))

        async def test_open_server_hang_is_cancelled_at_exit():
            async with harness.open_server() as server:
                server.expect("GET", "/hang").respond(200).fault(harness.Fault.hang())
                async with httpx.AsyncClient(timeout=0.2) as client:
                    with pytest.raises(httpx.ReadTimeout):
                        await client.get(server.url_for("/hang"))
                started = trio.current_time()
            assert trio.current_time() - started < 1.0
        """,
    )
    result.assert_outcomes(passed=4)


ECHO_APP = """
import httpx
import pytest

LARGE = bytes(range(256)) * 4096

async def echo(scope, receive, send):
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
"""


def test_request_bodies_reach_apps_and_stubs_in_sync_fixtures(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        ECHO_APP
        + """
@pytest.fixture(scope="session")
def shared_app(session_server_factory):
    return session_server_factory(app=echo)

@pytest.mark.parametrize("content", [b"hello", LARGE, iter([b"chunk-1,", b"chunk-2"])])
def test_function_scoped_app(server_factory, content):
    server = server_factory(app=echo)
    response = httpx.post(server.url_for("/echo"), content=content)
    assert response.content == server.requests[0].body
    assert response.content in (b"hello", LARGE, b"chunk-1,chunk-2")

@pytest.mark.parametrize("content", [b"hello", LARGE, iter([b"chunk-1,", b"chunk-2"])])
def test_session_scoped_app(shared_app, content):
    response = httpx.post(shared_app.url_for("/echo"), content=content)
    assert response.content == shared_app.requests[0].body
    assert response.content in (b"hello", LARGE, b"chunk-1,chunk-2")

def test_app_behind_an_expectation(server_factory):
    server = server_factory(app=echo)
    server.expect("POST", "/echo", json={"other": 1}, times=None).respond(200)
    assert httpx.post(server.url_for("/echo"), content=b"to the app").content == b"to the app"

def test_stub(http_server):
    http_server.expect("POST", "/in", body=LARGE).respond(201)
    assert httpx.post(http_server.url_for("/in"), content=LARGE).status_code == 201
    assert http_server.requests[0].body == LARGE
""",
    )
    result.assert_outcomes(passed=8)


def test_request_bodies_reach_apps_and_stubs_in_trio_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini(TRIO_INI)
    result = run_subprocess(
        pytester,
        ECHO_APP
        + """
async def pieces():
    yield b"chunk-1,"
    yield b"chunk-2"

@pytest.mark.parametrize("content", [b"hello", LARGE, "chunked"])
async def test_trio_app(trio_server_factory, content):
    server = await trio_server_factory(app=echo)
    async with httpx.AsyncClient() as client:
        sent = pieces() if content == "chunked" else content
        response = await client.post(server.url_for("/echo"), content=sent)
    assert response.content == server.requests[0].body
    assert response.content in (b"hello", LARGE, b"chunk-1,chunk-2")

async def test_trio_stub(trio_server):
    trio_server.expect("POST", "/in", body=LARGE).respond(201)
    async with httpx.AsyncClient() as client:
        assert (await client.post(trio_server.url_for("/in"), content=LARGE)).status_code == 201
""",
    )
    result.assert_outcomes(passed=4)


# -- 4. strictness and the report -------------------------------------------------------------


def test_unmatched_request_errors_with_a_field_diff(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_wrong_body_and_header(http_server):
            http_server.expect(
                "POST", "/users", json={"name": "ada"}, headers={"x-api-key": "k"}
            ).respond(201)
            response = httpx.post(
                http_server.url_for("/users"), json={"name": "bob"}, headers={"x-api-key": "wrong"}
            )
            assert response.status_code == 500

        def test_typo_in_path(http_server):
            http_server.expect("GET", "/api/orders").respond(200)
            assert httpx.get(http_server.url_for("/api/order", id=3)).status_code == 500
        """,
    )
    # The test bodies pass; the harness check errors both at teardown.
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_wrong_body_and_header*",
            "*unmatched request: POST /users*",
            "*nearest expectation #1: POST /users*",
            "*- header x-api-key: expected 'k', got 'wrong'*",
            "*- json: expected {'name': 'ada'}, got {'name': 'bob'}*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_typo_in_path*",
            "*unmatched request: GET /api/order?id=3*",
            "*unmet expectation #1 GET /api/orders: called 0 of 1 times*",
            "*nearest expectation #1: GET /api/orders*",
            "*- path: expected /api/orders, got /api/order*",
            "*(did you mean path '/api/orders'?)*",
        ]
    )


def test_unmet_times_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_called_once_of_two(http_server):
            http_server.expect("GET", "/twice", times=2).respond(200)
            assert httpx.get(http_server.url_for("/twice")).status_code == 200

        def test_called_twice_of_one(http_server):
            http_server.expect("GET", "/once").respond(200)
            assert httpx.get(http_server.url_for("/once")).status_code == 200
            assert httpx.get(http_server.url_for("/once")).status_code == 500
        """,
    )
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_called_once_of_two*",
            "*unmet expectation #1 GET /twice*1 of 2*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_called_twice_of_one*",
            "*unmatched request: GET /once*",
            "*- times: already called 1 of 1*",
        ]
    )


def test_strict_off_by_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import pytest

        @pytest.mark.harness(strict=False)
        def test_lenient(http_server):
            http_server.expect("GET", "/never", times=2).respond(200)
            assert httpx.get(http_server.url_for("/stray")).status_code == 500

        @pytest.mark.harness(strict=False)
        def test_lenient_factory(server_factory):
            server = server_factory(tls=True)
            response = httpx.get(server.url_for("/stray"), verify=server.client_ssl_context())
            assert response.status_code == 500
        """,
    )
    result.assert_outcomes(passed=2)


def test_strict_off_by_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nharness_strict = false\n")
    result = run(
        pytester,
        """
        import httpx
        import pytest

        def test_lenient(http_server):
            http_server.expect("GET", "/never").respond(200)
            assert httpx.get(http_server.url_for("/stray")).status_code == 500

        @pytest.mark.harness(strict=True)
        def test_marker_wins(http_server):
            assert httpx.get(http_server.url_for("/stray-strict")).status_code == 500
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unmatched request: GET /stray-strict*"])
    result.stdout.no_fnmatch_line("*unmatched request: GET /stray *")


def test_handler_exception_fails_with_its_traceback(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_handler_answers(http_server):
            def handler(request):
                return 201, {"json": {"echo": request.json()}}
            http_server.expect("POST", "/echo").respond_with(handler)
            response = httpx.post(http_server.url_for("/echo"), json=[1, 2])
            assert response.status_code == 201
            assert response.json() == {"echo": [1, 2]}

        def test_handler_raises(http_server):
            def handler(request):
                raise RuntimeError("kaboom-handler")
            http_server.expect("GET", "/boom").respond_with(handler)
            assert httpx.get(http_server.url_for("/boom")).status_code == 500
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_handler_raises*",
            "*handler of route #1 (GET /boom) raised:*",
            "*Traceback (most recent call last):*",
            "*RuntimeError: kaboom-handler*",
        ]
    )


APP_RAISES = """
import httpx
import pytest

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["path"] == "/boom":
        raise RuntimeError("kaboom-app")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"fine"})
"""


def test_app_exception_fails_with_its_traceback(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        APP_RAISES
        + """
def test_app_fine(server_factory):
    server = server_factory(app=app)
    assert httpx.get(server.url_for("/ok")).text == "fine"

def test_app_raises(server_factory):
    server = server_factory(app=app)
    assert httpx.get(server.url_for("/boom")).status_code == 500
""",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_app_raises*",
            "*server error:*",
            "*Exception in ASGI application (GET /boom*",
            "*RuntimeError: kaboom-app*",
        ]
    )


def test_app_exception_belongs_to_its_own_server(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        APP_RAISES
        + """
@pytest.mark.harness(strict=False)
def test_two_servers(server_factory):
    broken = server_factory(app=app)
    healthy = server_factory(app=app)
    assert httpx.get(broken.url_for("/boom")).status_code == 500
    assert httpx.get(healthy.url_for("/ok")).text == "fine"
    assert len(broken.errors) == 1
    assert healthy.errors == []
""",
    )
    result.assert_outcomes(passed=1)


def test_app_startup_failure_fails_setup(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import pytest

        async def app(scope, receive, send):
            assert scope["type"] == "lifespan"
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "database unreachable"})

        @pytest.fixture
        def app_server(server_factory):
            return server_factory(app=app)

        def test_uses_app(app_server):
            raise AssertionError("not reached")
        """,
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at setup of test_uses_app*", "*lifespan startup failed: database unreachable*"]
    )


def test_client_side_failure_gets_the_report_section(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_client_side(http_server):
            http_server.expect("GET", "/x").respond(200, json={"ok": True})
            http_server.expect("POST", "/y", times=None).respond(202)
            assert httpx.get(http_server.url_for("/x")).json() == {"ok": True}
            assert httpx.post(http_server.url_for("/y"), content=b"data").status_code == 202
            assert False, "the client side failed"
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the client side failed*",
            "*- harness server -*",
            "harness server at http://127.0.0.1:*",
            "requests received:",
            "*1. GET /x -> 200 (route #1, connection *)",
            "*2. POST /y -> 202 (route #2, connection *)",
            "expectations:",
            "*#1 GET /x: called 1 of 1 times",
            "*#2 POST /y: called 1 times",
        ]
    )


# -- 5. responses, expectations, the log ------------------------------------------------------


def test_respond_seq_retries_and_times_none(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        def test_retry_until_ok(http_server):
            route = http_server.expect("GET", "/flaky", times=3).respond_seq(
                [503, 503, (200, {"json": {"ok": True}})]
            )
            session = requests.Session()
            retry = Retry(total=3, status_forcelist=[503], backoff_factor=0, allowed_methods=None)
            session.mount("http://", HTTPAdapter(max_retries=retry))
            response = session.get(http_server.url_for("/flaky"), timeout=5)
            assert response.json() == {"ok": True}
            assert route.call_count == 3
            assert [request.status for request in http_server.requests] == [503, 503, 200]

        def test_seq_repeats_the_last(http_server):
            http_server.expect("GET", "/s", times=None).respond_seq([503, {"status": 200, "text": "up"}])
            with httpx.Client() as client:
                codes = [client.get(http_server.url_for("/s")).status_code for _ in range(4)]
            assert codes == [503, 200, 200, 200]

        def test_times_none(http_server):
            busy = http_server.expect("GET", "/poll", times=None).respond(204)
            http_server.expect("GET", "/unused", times=None).respond(200)
            with httpx.Client() as client:
                for _ in range(5):
                    assert client.get(http_server.url_for("/poll")).status_code == 204
            assert busy.call_count == 5
            assert busy.called and not busy.called_once
        """,
    )
    result.assert_outcomes(passed=3)


def test_respond_stream(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import time

        import httpx

        def test_chunks_arrive_one_by_one(http_server):
            http_server.expect("GET", "/events").respond_stream(
                ["data: 1\\n\\n", "data: 2\\n\\n", "data: 3\\n\\n"],
                interval=0.05,
                content_type="text/event-stream",
            )
            started = time.monotonic()
            arrivals = []
            with httpx.stream("GET", http_server.url_for("/events")) as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert response.headers["transfer-encoding"] == "chunked"
                for chunk in response.iter_raw():
                    arrivals.append((chunk, time.monotonic() - started))
            assert [chunk for chunk, _ in arrivals] == [b"data: 1\\n\\n", b"data: 2\\n\\n", b"data: 3\\n\\n"]
            assert arrivals[-1][1] >= 0.09
            assert arrivals[-1][1] - arrivals[0][1] >= 0.09
        """,
    )
    result.assert_outcomes(passed=1)


def test_ordered_expectations(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def expect_login_flow(server):
            server.expect("POST", "/login", ordered=True).respond(200, json={"token": "t"})
            server.expect("GET", "/me", ordered=True).respond(200, json={"user": "ada"})

        def test_in_order(http_server):
            expect_login_flow(http_server)
            with httpx.Client() as client:
                assert client.post(http_server.url_for("/login")).json() == {"token": "t"}
                assert client.get(http_server.url_for("/me")).json() == {"user": "ada"}

        def test_out_of_order(http_server):
            expect_login_flow(http_server)
            with httpx.Client() as client:
                assert client.get(http_server.url_for("/me")).status_code == 500
                assert client.post(http_server.url_for("/login")).status_code == 200
                assert client.get(http_server.url_for("/me")).status_code == 200
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_out_of_order*",
            "*unmatched request: GET /me*",
            "*nearest expectation #2: GET /me*",
            "*- ordered: an earlier ordered expectation is still pending*",
        ]
    )


def test_expect_no_requests(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_quiet(http_server):
            http_server.expect_no_requests()

        def test_noisy(http_server):
            http_server.expect_no_requests()
            httpx.get(http_server.url_for("/ping"))
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_noisy*", "*expected no requests, got 1*"]
    )


def test_on_unmatched(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx

        def test_answered_and_not_a_failure(http_server):
            http_server.on_unmatched(404, json={"error": "not stubbed"})
            response = httpx.get(http_server.url_for("/anything"))
            assert (response.status_code, response.json()) == (404, {"error": "not stubbed"})
            assert [r.target for r in http_server.requests] == ["/anything"]

        def test_unmet_expectations_still_fail(http_server):
            http_server.on_unmatched(404)
            http_server.expect("GET", "/wanted").respond(200)
            assert httpx.get(http_server.url_for("/other")).status_code == 404
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_unmet_expectations_still_fail*",
            "*unmet expectation #1 GET /wanted: called 0 of 1 times*",
        ]
    )
    assert "unmatched request: GET /other" not in result.stdout.str()


def test_request_log_and_connection_count(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import requests

        def test_log(http_server):
            http_server.expect("POST", "/items", query={"x": "1"}).respond(201)
            response = httpx.post(
                http_server.url_for("/items", x=1), json={"name": "widget"}, headers={"X-Trace": "t1"}
            )
            assert response.status_code == 201
            [request] = http_server.requests
            assert request.method == "POST"
            assert request.target == "/items?x=1"
            assert request.path == "/items"
            assert request.query == {"x": ["1"]}
            assert request.header("x-trace") == "t1"
            assert ("x-trace", "t1") in request.header_list
            assert request.json() == {"name": "widget"}
            assert request.body == b'{"name":"widget"}'
            assert request.http_version == "1.1"
            assert isinstance(request.connection_id, int)
            assert request.route == "#1"
            assert request.status == 201

        def test_keep_alive_client_uses_one_connection(http_server):
            http_server.expect("GET", "/k", times=3).respond(200)
            with httpx.Client() as client:
                for _ in range(3):
                    assert client.get(http_server.url_for("/k")).status_code == 200
            assert http_server.connection_count == 1
            assert len({request.connection_id for request in http_server.requests}) == 1

        def test_requests_session_pools(http_server):
            http_server.expect("GET", "/k", times=3).respond(200)
            with requests.Session() as session:
                for _ in range(3):
                    assert session.get(http_server.url_for("/k"), timeout=5).status_code == 200
            assert http_server.connection_count == 1

        def test_fresh_connections(http_server):
            http_server.expect("GET", "/f", times=3).respond(200)
            for _ in range(3):
                assert httpx.get(http_server.url_for("/f")).status_code == 200
            assert http_server.connection_count == 3
            assert len(http_server.requests) == 3
        """,
    )
    result.assert_outcomes(passed=4)


# -- 6. trust for subprocesses ----------------------------------------------------------------


def test_trust_env_for_a_python_subprocess(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import os
        import subprocess
        import sys

        FETCH = (
            "import urllib.request, ssl, os, sys; print(urllib.request.urlopen(sys.argv[1], "
            "context=ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE'])).read())"
        )

        def test_python_subprocess(https_server, harness_trust_env):
            https_server.expect("GET", "/hello").respond(200, text="hello over tls")
            assert harness_trust_env == https_server.ssl_env
            assert os.environ["SSL_CERT_FILE"] == https_server.ca_path
            done = subprocess.run(
                [sys.executable, "-c", FETCH, https_server.url_for("/hello")],
                env=os.environ.copy(), capture_output=True, text=True, timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert "hello over tls" in done.stdout

        def test_requests_subprocess_uses_requests_ca_bundle(https_server, harness_trust_env):
            https_server.expect("GET", "/r").respond(200, text="requests trusts us")
            code = "import requests, sys; print(requests.get(sys.argv[1], timeout=5).text)"
            done = subprocess.run(
                [sys.executable, "-c", code, https_server.url_for("/r")],
                env=os.environ.copy(), capture_output=True, text=True, timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert "requests trusts us" in done.stdout

        def test_environment_restored(harness_ca):
            assert os.environ.get("SSL_CERT_FILE") != str(harness_ca.ca_path)
            assert os.environ.get("CURL_CA_BUNDLE") != str(harness_ca.ca_path)
        """,
    )
    result.assert_outcomes(passed=3)


if shutil.which("curl"):

    def test_trust_env_for_curl(pytester: pytest.Pytester) -> None:
        result = run(
            pytester,
            """
            import os
            import subprocess

            def curl(*args):
                return subprocess.run(
                    ["curl", "--silent", "--show-error", "--fail", "--max-time", "5", *args],
                    env=os.environ.copy(), capture_output=True, text=True, timeout=30,
                )

            def test_curl(https_server, harness_trust_env):
                https_server.expect("GET", "/c", headers={"user-agent": lambda v: v.startswith("curl/")}).respond(
                    200, text="hello curl"
                )
                assert os.environ["CURL_CA_BUNDLE"] == https_server.ca_path
                done = curl(https_server.url_for("/c"))
                assert done.returncode == 0, done.stderr
                assert done.stdout == "hello curl"

            def test_curl_mtls(server_factory, harness_trust_env):
                server = server_factory(mtls=True)
                server.expect("GET", "/m").respond(200, text="mutual")
                done = curl("--cert", server.client_cert_path, server.url_for("/m"))
                assert done.returncode == 0, done.stderr
                assert done.stdout == "mutual"

            def test_curl_untrusted_without_env(https_server):
                https_server.expect_no_requests()
                done = subprocess.run(
                    ["curl", "--silent", "--max-time", "5", https_server.url_for("/c")],
                    env={"PATH": os.environ["PATH"], "CURL_CA_BUNDLE": os.devnull},
                    capture_output=True, timeout=30,
                )
                assert done.returncode != 0
            """,
        )
        result.assert_outcomes(passed=3)


# -- 7. session servers -----------------------------------------------------------------------


def test_session_server_shared_checked_and_reset(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import pytest

        PORTS = []
        FINALIZED = []

        @pytest.fixture(scope="session")
        def api(session_server_factory):
            return session_server_factory()

        @pytest.fixture
        def tracked():
            yield
            FINALIZED.append("tracked")

        def test_first(api, tracked):
            PORTS.append(api.port)
            api.expect("GET", "/a").respond(200, text="a")
            assert httpx.get(api.url_for("/a")).text == "a"
            assert httpx.get(api.url_for("/zzz")).status_code == 500

        def test_second(api):
            PORTS.append(api.port)
            assert FINALIZED == ["tracked"]
            assert api.requests == []
            assert api.stub.routes == []
            api.expect("GET", "/b").respond(200, text="b")
            assert httpx.get(api.url_for("/b")).text == "b"
            assert PORTS[0] == PORTS[1]

        def test_third(api):
            assert api.requests == []
            api.expect_no_requests()
        """,
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_first*", "*unmatched request: GET /zzz*"]
    )


SESSION_STRICTNESS = """
import httpx
import pytest

@pytest.fixture(scope="session")
def api(session_server_factory):
    return session_server_factory()

@pytest.mark.harness(strict=False)
def test_lenient_by_marker(api):
    api.expect("GET", "/never").respond(200)
    assert httpx.get(api.url_for("/stray-marker")).status_code == 500

def test_default(api):
    assert api.requests == []  # reset after the lenient test all the same
    assert httpx.get(api.url_for("/stray-default")).status_code == 500

@pytest.mark.harness(strict=True)
def test_strict_by_marker(api):
    assert httpx.get(api.url_for("/stray-strict")).status_code == 500

@pytest.mark.harness(strict=False)
def test_lenient_last(api):  # checked after the session's teardown: still lenient
    assert httpx.get(api.url_for("/stray-last")).status_code == 500
"""


def test_session_server_strict_off_by_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, SESSION_STRICTNESS)
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_default*",
            "*unmatched request: GET /stray-default*",
            "*ERROR at teardown of test_strict_by_marker*",
            "*unmatched request: GET /stray-strict*",
        ]
    )
    for lenient in ("*/stray-marker*", "*/stray-last*", "*unmet expectation*"):
        result.stdout.no_fnmatch_line(lenient)


def test_session_server_strict_off_by_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nharness_strict = false\n")
    result = run(pytester, SESSION_STRICTNESS)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_strict_by_marker*", "*unmatched request: GET /stray-strict*"]
    )
    for lenient in ("*/stray-marker*", "*/stray-default*", "*/stray-last*"):
        result.stdout.no_fnmatch_line(lenient)


def test_session_server_strictness_given_to_the_factory_wins(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import httpx
        import pytest

        @pytest.fixture(scope="session")
        def api(session_server_factory):
            return session_server_factory(strict=False)

        @pytest.fixture(scope="session")
        def checked(session_server_factory):
            return session_server_factory(strict=True)

        @pytest.mark.harness(strict=True)
        def test_stray(api):
            assert httpx.get(api.url_for("/stray")).status_code == 500

        @pytest.mark.harness(strict=False)
        def test_stray_checked_last(checked):
            assert httpx.get(checked.url_for("/stray-checked")).status_code == 500
        """,
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_stray_checked_last*",
            "*unmatched request: GET /stray-checked*",
        ]
    )
    result.stdout.no_fnmatch_line("*GET /stray *")


# -- 8. bounded teardown ----------------------------------------------------------------------


def test_teardown_is_bounded(pytester: pytest.Pytester) -> None:
    source = """
        import socket

        import httpx
        import pytest
        import requests

        import harness

        KEEP = []  # clients and sockets left open past the end of their test

        @pytest.fixture(scope="module", autouse=True)
        def close_leftovers():
            yield
            for thing in KEEP:
                thing.close()

        def test_hung_route(http_server):
            http_server.expect("GET", "/hang").respond(200).fault(harness.Fault.hang())
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(http_server.url_for("/hang"), timeout=0.2)

        def test_hung_server_tls(https_server):
            https_server.fault(harness.Fault.hang())
            with pytest.raises(requests.exceptions.ReadTimeout):
                requests.get(https_server.url_for("/any"), verify=https_server.ca_path, timeout=0.2)

        def test_idle_keep_alive(http_server):
            http_server.expect("GET", "/k").respond(200)
            client = httpx.Client()
            assert client.get(http_server.url_for("/k")).status_code == 200
            KEEP.append(client)

        def test_idle_keep_alive_tls(https_server):
            https_server.expect("GET", "/k").respond(200)
            client = httpx.Client(verify=https_server.client_ssl_context())
            assert client.get(https_server.url_for("/k")).status_code == 200
            KEEP.append(client)

        def test_half_read_request(http_server):
            sock = socket.create_connection((http_server.host, http_server.port), timeout=1)
            sock.sendall(b"POST /upload HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 1000\\r\\n\\r\\npart")
            KEEP.append(sock)

        def test_half_sent_headers(http_server):
            sock = socket.create_connection((http_server.host, http_server.port), timeout=1)
            sock.sendall(b"GET /slow HTTP/1.1\\r\\nHost: x\\r\\n")
            KEEP.append(sock)
        """
    started = time.monotonic()
    result = run(pytester, source)
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=6)
    assert elapsed < 5.0, f"the downstream run took {elapsed:.2f} s"
