"""Behind a proxy: trusted peers, X-Forwarded-*, Forwarded, PROXY protocol v1/v2, health path."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest
import trio

import trioserve
from trioserve import Config, ConfigError
from trioserve._proxy import (
    ProxyHeaderError,
    TrustedPeers,
    parse_proxy_header,
    read_forwarded,
)

from .conftest import connection


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


# -- pure functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "host", "trusted"),
    [
        ("127.0.0.1,::1", "127.0.0.1", True),
        ("127.0.0.1,::1", "::1", True),
        ("127.0.0.1,::1", "10.0.0.1", False),
        ("10.0.0.0/8", "10.2.3.4", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("*", "203.0.113.9", True),
        ("unix", None, True),
        ("127.0.0.1", None, False),
        ("127.0.0.1", "not-an-ip", False),
    ],
)
def test_trusted_peers(spec: str, host: str | None, trusted: bool) -> None:
    assert TrustedPeers(spec).trusts(host) is trusted


def test_bad_trusted_peer_spec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="forwarded_allow_ips: not an IP address"):
        Config(forwarded_allow_ips="localhost")


def test_x_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    trusted = TrustedPeers("10.0.0.0/8")
    headers = h(
        ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2"),  # 6.6.6.6 is client-supplied
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "example.org"),
    )
    info = read_forwarded(headers, "x-forwarded", trusted)
    assert (info.client, info.scheme, info.host) == ("203.0.113.7", "https", "example.org")


def test_rfc7239_forwarded() -> None:
    trusted = TrustedPeers("127.0.0.1")
    headers = h(
        ("forwarded", 'for="[2001:db8::1]:4711";proto=https;host=example.org, for=127.0.0.1')
    )
    info = read_forwarded(headers, "forwarded", trusted)
    assert (info.client, info.scheme, info.host) == ("2001:db8::1", "https", "example.org")


def test_modes_do_not_mix() -> None:
    trusted = TrustedPeers("127.0.0.1")
    headers = h(("forwarded", "for=198.51.100.1"), ("x-forwarded-for", "198.51.100.2"))
    assert read_forwarded(headers, "x-forwarded", trusted).client == "198.51.100.2"
    assert read_forwarded(headers, "forwarded", trusted).client == "198.51.100.1"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET",
            (
                len(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
                ("192.0.2.1", 56324),
                ("198.51.100.2", 443),
            ),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
            (
                len(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
                ("2001:db8::1", 1),
                ("2001:db8::2", 2),
            ),
        ),
        (b"PROXY UNKNOWN\r\n", (15, None, None)),
    ],
)
def test_proxy_v1(data: bytes, expected: Any) -> None:
    assert parse_proxy_header(data) == expected


def v2(command: int, family: int, body: bytes) -> bytes:
    return b"\r\n\r\n\x00\r\nQUIT\n" + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def test_proxy_v2_ipv4_and_local() -> None:
    body = (
        socket.inet_aton("192.0.2.1")
        + socket.inet_aton("198.51.100.2")
        + struct.pack("!HH", 1234, 443)
    )
    assert parse_proxy_header(v2(1, 0x11, body)) == (28, ("192.0.2.1", 1234), ("198.51.100.2", 443))
    assert parse_proxy_header(v2(0, 0x00, b"")) == (16, None, None)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 1.1.1.1 1.1.1.1 1 70000\r\n",
        b"PROXY SCTP 1.1.1.1 1.1.1.1 1 2\r\n",
        b"PROXY TCP4 1.1.1.1" + b" " * 120,
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00",  # version 3
    ],
)
def test_bad_proxy_headers(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(data)


# -- in the connection --------------------------------------------------------------------------


async def echo_scope(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    host = dict(scope["headers"]).get(b"host", b"").decode()
    body = json.dumps({"client": scope["client"], "scheme": scope["scheme"], "host": host})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


async def test_headers_from_a_trusted_peer_rewrite_the_scope() -> None:
    config = Config(access_log=False, proxy_headers="x-forwarded")  # the peer is 127.0.0.1
    async with connection(echo_scope, config) as (client, _):
        await client.request(
            headers=[
                ("X-Forwarded-For", "203.0.113.50"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "shop.example"),
            ]
        )
        _, body = await client.response()
    assert json.loads(body) == {
        "client": ["203.0.113.50", 0],
        "scheme": "https",
        "host": "shop.example",
    }


async def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    config = Config(access_log=False, proxy_headers="x-forwarded", forwarded_allow_ips="10.0.0.1")
    async with connection(echo_scope, config) as (client, _):
        await client.request(
            headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")]
        )
        _, body = await client.response()
    assert json.loads(body) == {"client": ["127.0.0.1", 5000], "scheme": "http", "host": "test"}


async def test_proxy_headers_off_by_default() -> None:
    async with connection(echo_scope) as (client, _):
        await client.request(headers=[("X-Forwarded-For", "6.6.6.6")])
        _, body = await client.response()
    assert json.loads(body)["client"] == ["127.0.0.1", 5000]


async def test_health_path_answers_in_the_server_and_503_while_draining() -> None:
    called = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal called
        called = True

    async with connection(app, Config(access_log=False, health_path="/healthz")) as (client, state):
        await client.request("GET", "/healthz")
        response, body = await client.response()
        assert (response.status_code, body) == (200, b"ok\n")
        state.draining = True
        await client.request("GET", "/healthz?probe=1")
        response, body = await client.response()
        assert (response.status_code, body) == (503, b"draining\n")
    assert not called


# -- PROXY protocol over real sockets -------------------------------------------------------------


async def exchange(address: tuple[str, int], data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(data)
    received = b""
    with trio.fail_after(5):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass  # closed with our bytes unread: a reset, no answer
    await stream.aclose()
    return received


async def test_proxy_protocol_sets_the_addresses() -> None:
    config = Config(port=0, access_log=False, proxy_protocol=True)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, echo_scope, config)
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        v1 = await exchange(address, b"PROXY TCP4 192.0.2.9 198.51.100.2 40000 443\r\n" + request)
        assert json.loads(v1.partition(b"\r\n\r\n")[2])["client"] == ["192.0.2.9", 40000]
        body = (
            socket.inet_aton("192.0.2.10")
            + socket.inet_aton("198.51.100.2")
            + struct.pack("!HH", 1, 443)
        )
        v2_answer = await exchange(address, v2(1, 0x11, body) + request)
        assert json.loads(v2_answer.partition(b"\r\n\r\n")[2])["client"] == ["192.0.2.10", 1]
        # No header, or a bad one: closed without an answer.
        assert await exchange(address, request) == b""
        nursery.cancel_scope.cancel()


async def test_proxy_protocol_from_an_untrusted_peer_is_refused() -> None:
    config = Config(port=0, access_log=False, proxy_protocol=True, forwarded_allow_ips="10.9.9.9")
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(trioserve.serve, echo_scope, config)
        answer = await exchange(
            address, b"PROXY TCP4 192.0.2.9 198.51.100.2 1 2\r\nGET / HTTP/1.1\r\n\r\n"
        )
        assert answer == b""
        nursery.cancel_scope.cancel()


def test_malformed_forwarded_is_not_believed() -> None:
    trusted = TrustedPeers("127.0.0.1")
    # A client-written element with an unterminated quote that would swallow what the proxy
    # appended after it.
    headers = h(("forwarded", 'for=1.2.3.4;x=", for=203.0.113.9'))
    assert read_forwarded(headers, "forwarded", trusted).client is None


def test_only_ip_addresses_become_the_client() -> None:
    trusted = TrustedPeers("*")
    for value in ('"evil" <script>', "unknown", "_hidden"):
        assert read_forwarded(h(("x-forwarded-for", value)), "x-forwarded", trusted).client is None
