"""harness servers with trioserve settings: config=, keyword settings, lifespan modes, tls=."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

import harness
import trioserve
from harness._settings import build_config


async def hello(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "this app refuses the lifespan scope"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def failing_startup(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await hello(scope, receive, send)


async def test_lifespan_auto_is_the_default_and_serves_an_app_that_refuses_it() -> None:
    async with harness.open_server(app=hello) as srv, httpx.AsyncClient() as client:
        response = await client.get(srv.url_for("/"))
    assert (response.status_code, response.text) == (200, "hello")


async def test_lifespan_auto_still_fails_on_a_failed_startup() -> None:
    with pytest.raises(trioserve.TrioserveError, match="no database"):
        async with harness.open_server(app=failing_startup):
            pass


async def test_lifespan_off_never_runs_the_startup() -> None:
    async with (
        harness.open_server(app=failing_startup, lifespan="off") as srv,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(srv.url_for("/"))).text == "hello"


async def test_keyword_settings_reach_the_server() -> None:
    async with harness.open_server(server_header="stub/1.0", keep_alive_timeout=1.5) as srv:
        srv.expect("GET", "/").respond(204)
        async with httpx.AsyncClient() as client:
            response = await client.get(srv.url_for("/"))
        assert response.headers["server"] == "stub/1.0"
        assert srv.server.config.keep_alive_timeout == 1.5
        assert srv.server.config.fault_injection


async def test_config_replaces_the_defaults_and_keywords_override_it() -> None:
    config = trioserve.Config(port=0, server_header="from-config", date_header=False)
    async with harness.open_server(config=config, server_header="from-keyword") as srv:
        srv.expect("GET", "/").respond(204)
        async with httpx.AsyncClient() as client:
            response = await client.get(srv.url_for("/"))
    assert response.headers["server"] == "from-keyword"
    assert "date" not in response.headers


def test_port_and_timeouts_are_passed_through_unchanged() -> None:
    config = build_config(
        config=None,
        host=None,
        uds=None,
        tls=None,
        settings={"port": 8123, "header_timeout": 2.0, "http2": False},
    )
    assert (config.host, config.port, config.header_timeout, config.http2) == (
        "127.0.0.1",
        8123,
        2.0,
        False,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prot": 1}, "unknown harness option or trioserve setting 'prot'"),
        ({"binds": ("127.0.0.1:0",)}, "one listener"),
        ({"fault_injection": False}, "always allow fault injection"),
    ],
)
async def test_settings_the_harness_cannot_take_are_refused_by_name(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        async with harness.open_server(**settings):
            pass


async def uses_asyncio(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send(
        {"type": "http.response.body", "body": type(asyncio.get_running_loop()).__name__.encode()}
    )


def test_asyncio_app_runs_an_asyncio_app() -> None:
    with harness.serving(app=uses_asyncio, asyncio_app=True) as srv:
        response = httpx.get(srv.url_for("/"))
    assert response.status_code == 200
    assert "EventLoop" in response.text


def test_http2_setting_decides_the_alpn_offer() -> None:
    for http2, expected, logged in [(True, "HTTP/2", "2"), (False, "HTTP/1.1", "1.1")]:
        with harness.serving(tls=True, http2=http2) as srv:
            srv.expect("GET", "/").respond(200)
            with httpx.Client(http2=True, verify=srv.client_ssl_context()) as client:
                assert client.get(srv.url_for("/")).http_version == expected
            assert srv.requests[0].http_version == logged


def test_tls_with_an_existing_trustme_ca() -> None:
    ca = trustme.CA()
    with harness.serving(tls=ca) as srv:
        srv.expect("GET", "/").respond(200, text="trusted")
        context = httpx.create_ssl_context()
        ca.configure_trust(context)
        assert httpx.get(srv.url_for("/"), verify=context).text == "trusted"
        assert Path(srv.ca_path).read_bytes() == ca.cert_pem.bytes()


def test_tls_with_a_certificate_and_key_pair(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    with harness.serving(tls=(tmp_path / "cert.pem", tmp_path / "key.pem")) as srv:
        srv.expect("GET", "/").respond(200, text="own certificate")
        assert srv.url.startswith("https://")
        context = httpx.create_ssl_context()
        ca.configure_trust(context)
        assert httpx.get(srv.url_for("/"), verify=context).text == "own certificate"
        with pytest.raises(RuntimeError, match="trust its CA yourself"):
            srv.ca_path  # noqa: B018


def test_settings_reach_servers_from_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx

        def test_factory(server_factory):
            srv = server_factory(server_header="from-factory")
            srv.expect("GET", "/").respond(200)
            assert httpx.get(srv.url_for("/")).headers["server"] == "from-factory"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
