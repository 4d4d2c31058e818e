"""Requests and whole responses: methods, bodies, JSON, headers, status codes, chunked uploads."""

from __future__ import annotations

import pytest
from tinyhttp import Client

from harness import HarnessServer


def test_get(server: HarnessServer) -> None:
    response = Client(server.url).get("/")
    assert response.status == 200
    assert response.text == "Hello, world!"
    assert response.headers["content-type"] == "text/plain"
    assert response.url == server.url_for("/")


def test_post_bytes_are_echoed(server: HarnessServer) -> None:
    response = Client(server.url).post("/echo_body", content=b"Hello, world!")
    assert response.content == b"Hello, world!"
    assert server.requests[-1].headers["content-length"] == "13"


def test_post_iterable_is_uploaded_chunked(server: HarnessServer) -> None:
    parts = (part for part in [b"Hello", b", ", b"world!"])
    response = Client(server.url).post("/echo_body", content=parts)
    assert response.content == b"Hello, world!"
    assert server.requests[-1].headers["transfer-encoding"] == "chunked"


def test_post_json_and_read_json(server: HarnessServer) -> None:
    echoed = Client(server.url).post("/echo_headers", json={"a": 1}).json()
    assert isinstance(echoed, dict)
    assert echoed["content-type"] == "application/json"
    assert Client(server.url).get("/json").json() == {"hello": "world"}


def test_request_headers_are_sent(server: HarnessServer) -> None:
    echoed = Client(server.url).get("/echo_headers", headers={"X-Example": "tinyhttp"}).json()
    assert isinstance(echoed, dict)
    assert echoed["x-example"] == "tinyhttp"
    assert echoed["host"] == f"{server.host}:{server.port}"


@pytest.mark.parametrize("code", [200, 204, 404, 418, 500, 503])
def test_status_codes_are_returned_not_raised(server: HarnessServer, code: int) -> None:
    assert Client(server.url).get(f"/status/{code}").status == code


def test_streaming_response_arrives_in_pieces(server: HarnessServer) -> None:
    with Client(server.url).stream("GET", "/stream") as response:
        assert response.status == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert b"".join(response.iter_bytes()) == b"chunk 0;chunk 1;chunk 2;"
