"""A server that breaks the connection (harness fault injection): reported, or retried."""

from __future__ import annotations

import pytest
from tinyhttp import Client, RemoteProtocolError

from harness import Fault, HarnessServer, Response


def test_a_truncated_body_is_reported(server: HarnessServer) -> None:
    server.expect("GET", "/download").respond(200, body=b"x" * 100).fault(Fault.truncate(10))
    with pytest.raises(RemoteProtocolError, match="IncompleteRead"):
        Client(server.url).get("/download")


def test_a_reset_connection_is_reported(server: HarnessServer) -> None:
    server.expect("GET", "/download").respond(200).fault(Fault.reset())
    with pytest.raises(RemoteProtocolError):
        Client(server.url).get("/download")


def test_a_get_is_retried_after_a_reset(server: HarnessServer) -> None:
    server.expect("GET", "/download", times=2).respond_seq(
        [Response(200, fault=Fault.reset()), Response(200, text="at last")]
    )
    assert Client(server.url, retries=1).get("/download").text == "at last"


def test_a_post_is_not_retried(server: HarnessServer) -> None:
    server.expect("POST", "/orders").respond(201).fault(Fault.empty_response())
    with pytest.raises(RemoteProtocolError):
        Client(server.url, retries=3).post("/orders", content=b"{}")
