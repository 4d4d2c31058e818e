"""Timeouts: a slow route against the client's timeout, and a connection that is refused."""

from __future__ import annotations

import socket

import pytest
from tinyhttp import Client, ConnectError, Timeout

from harness import HarnessServer


def test_read_timeout(server: HarnessServer) -> None:
    with pytest.raises(Timeout):
        Client(server.url, timeout=0.2).get("/slow_response")


def test_connect_error_on_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        with pytest.raises(ConnectError):
            Client(f"http://127.0.0.1:{port}").get("/")
