"""HTTPS against the session's trustme CA: trusted, and refused without it."""

from __future__ import annotations

import ssl

import pytest
from tinyhttp import Client, ConnectError

from harness import HarnessServer


def test_https_with_the_ca_file(https_server: HarnessServer, cert_pem_file: str) -> None:
    context = ssl.create_default_context(cafile=cert_pem_file)
    response = Client(https_server.url, ssl_context=context).get("/json")
    assert https_server.url.startswith("https://")
    assert response.json() == {"hello": "world"}


def test_https_without_the_ca_is_refused(https_server: HarnessServer) -> None:
    with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        Client(https_server.url, ssl_context=ssl.create_default_context()).get("/")
