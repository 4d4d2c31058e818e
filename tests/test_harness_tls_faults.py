"""TLS faults: each a server whose TLS goes wrong in one way, for a client that trusts the
harness CA (what the client sees is what these tests assert)."""

from __future__ import annotations

import httpx
import pytest
import trio

import harness


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("expired_certificate", "certificate has expired"),
        ("wrong_host", "IP address mismatch"),
        ("untrusted_ca", "unable to get local issuer certificate"),
    ],
)
def test_certificate_faults_fail_verification_with_their_reason(fault: str, reason: str) -> None:
    with harness.serving(tls_fault=fault) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with pytest.raises(httpx.ConnectError, match=reason):
            httpx.get(srv.url_for("/"), verify=srv.client_ssl_context())
        assert srv.requests == []


def test_wrong_host_names_another_host_for_localhost_too() -> None:
    with (
        harness.serving(tls_fault="wrong_host") as srv,
        pytest.raises(httpx.ConnectError, match="Hostname mismatch"),
    ):
        httpx.get(f"https://localhost:{srv.port}/", verify=srv.client_ssl_context())


def test_certificate_faults_are_served_when_verification_is_off() -> None:
    with harness.serving(tls_fault="expired_certificate") as srv:
        srv.expect("GET", "/").respond(200, text="served anyway")
        assert httpx.get(srv.url_for("/"), verify=False).text == "served anyway"


async def test_handshake_stall_ends_in_the_clients_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with harness.open_server(tls_fault="handshake_stall") as srv:
        async with httpx.AsyncClient(verify=srv.client_ssl_context(), timeout=30) as client:
            with pytest.raises(httpx.ConnectTimeout):
                await client.get(srv.url_for("/"))
        assert trio.current_time() >= 30
        assert srv.requests == []


def test_an_unknown_tls_fault_is_refused_by_name() -> None:
    with (
        pytest.raises(ValueError, match="unknown TLS fault 'expired'; known: expired_certificate"),
        harness.serving(tls_fault="expired"),
    ):
        pass
