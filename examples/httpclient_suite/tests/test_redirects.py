"""Redirects: followed with their history, method rewriting, limits, and not following."""

from __future__ import annotations

import pytest
from tinyhttp import Client, TooManyRedirects

from harness import HarnessServer


def test_301_is_followed(server: HarnessServer) -> None:
    response = Client(server.url).get("/redirect_301")
    assert (response.status, response.text) == (200, "Hello, world!")
    assert [step.status for step in response.history] == [301]
    assert response.url == server.url_for("/")


def test_303_turns_a_post_into_a_get(server: HarnessServer) -> None:
    response = Client(server.url).post("/redirect_303", content=b"form data")
    assert response.status == 200
    assert [(r.method, r.path) for r in server.requests][-2:] == [
        ("POST", "/redirect_303"),
        ("GET", "/echo_headers"),
    ]


def test_307_keeps_the_method_and_body(server: HarnessServer) -> None:
    response = Client(server.url).post("/redirect_307", content=b"keep me")
    assert response.content == b"keep me"
    assert server.requests[-1].method == "POST"


def test_not_following_returns_the_redirect(server: HarnessServer) -> None:
    response = Client(server.url).get("/redirect_301", follow_redirects=False)
    assert response.status == 301
    assert response.headers["location"] == "/"


def test_a_redirect_loop_ends_with_too_many_redirects(server: HarnessServer) -> None:
    with pytest.raises(TooManyRedirects):
        Client(server.url, max_redirects=3).get("/redirect_loop")
    assert len(server.requests) == 4  # the first request and three redirects
