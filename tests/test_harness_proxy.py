"""The forward-proxy stub: what clients send through HTTP_PROXY / HTTPS_PROXY, CONNECT included."""

from __future__ import annotations

import httpx
import pytest
import requests
import trio

import harness


def test_plain_http_through_the_proxy_is_recorded_and_forwarded() -> None:
    with harness.serving() as srv, harness.proxy() as proxy:
        srv.expect("POST", "/v1/items", json={"name": "pen"}).respond(201, json={"id": 1})
        with httpx.Client(proxy=proxy.url) as client:
            response = client.post(
                srv.url_for("/v1/items"),
                json={"name": "pen"},
                headers={"Proxy-Authorization": "Basic dTpw", "X-Trace": "t1"},
            )
        assert (response.status_code, response.json()) == (201, {"id": 1})
        [seen] = proxy.requests
        assert (seen.method, seen.target, seen.body) == (
            "POST",
            srv.url_for("/v1/items"),
            b'{"name":"pen"}',
        )
        assert seen.headers["proxy-authorization"] == "Basic dTpw"
        # What reached the server: origin form, the proxy's own headers gone.
        [forwarded] = srv.requests
        assert forwarded.target == "/v1/items"
        assert forwarded.headers["x-trace"] == "t1"
        assert "proxy-authorization" not in forwarded.headers


def test_https_through_the_proxy_is_a_recorded_connect_tunnel() -> None:
    with harness.serving(tls=True) as srv, harness.proxy() as proxy:
        srv.expect("GET", "/secret").respond(200, text="through the tunnel")
        with httpx.Client(proxy=proxy.url, verify=srv.client_ssl_context()) as client:
            response = client.get(srv.url_for("/secret"))
        assert response.text == "through the tunnel"
        [connect] = proxy.requests
        assert (connect.method, connect.target) == ("CONNECT", f"127.0.0.1:{srv.port}")
        assert srv.requests[0].path == "/secret"


def test_the_proxy_env_is_what_requests_follows(monkeypatch: pytest.MonkeyPatch) -> None:
    with harness.serving(tls=True) as srv, harness.proxy() as proxy:
        srv.expect("GET", "/").respond(200, text="ok")
        for name, value in proxy.env.items():
            monkeypatch.setenv(name, value)
        assert requests.get(srv.url_for("/"), verify=srv.ca_path, timeout=10).text == "ok"
        assert [r.method for r in proxy.requests] == ["CONNECT"]


def test_a_request_not_in_proxy_form_gets_400() -> None:
    with harness.proxy() as proxy:
        response = httpx.get(proxy.url + "/not-absolute")
    assert response.status_code == 400
    assert proxy.requests == []


async def test_open_proxy_in_trio() -> None:
    async with harness.open_server() as srv, harness.open_proxy() as proxy:
        srv.expect("GET", "/").respond(200, text="trio")
        async with httpx.AsyncClient(proxy=proxy.url) as client:
            assert (await client.get(srv.url_for("/"))).text == "trio"
        assert proxy.requests[0].method == "GET"
        await trio.lowlevel.checkpoint()
