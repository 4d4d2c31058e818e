"""Stubs nobody else has: waiting for background requests, JSON subsets and matchers with
diffs, seeded probabilistic faults, HTTP/2."""

from __future__ import annotations

import re
import threading

import httpx
import pytest
import trio

import harness
from harness import Fault, HarnessError

# -- wait_for -------------------------------------------------------------------------------


def test_wait_for_returns_a_request_sent_in_the_background() -> None:
    with harness.serving() as srv:
        srv.expect("POST", "/hook").respond(204)
        sender = threading.Thread(
            target=httpx.post, args=(srv.url_for("/hook"),), kwargs={"json": {"event": "done"}}
        )
        sender.start()
        request = srv.wait_for(lambda req: req.path == "/hook", timeout=10)
        sender.join()
    assert request.json() == {"event": "done"}


def test_wait_for_times_out_with_the_report() -> None:
    with harness.serving(strict=False) as srv:
        srv.on_unmatched(404)
        httpx.get(srv.url_for("/other"))
        with pytest.raises(HarnessError) as info:
            srv.wait_for(lambda req: req.path == "/hook", timeout=0.05)
    message = str(info.value)
    assert message.startswith("no request accepted by <function")
    assert "arrived within 0.05 s" in message
    assert "1. GET /other -> 404" in message


async def test_wait_for_async_in_the_servers_own_trio_run() -> None:
    async with harness.open_server() as srv, trio.open_nursery() as nursery:
        srv.expect("POST", "/hook").respond(204)

        async def send_later() -> None:
            async with httpx.AsyncClient() as client:
                await client.post(srv.url_for("/hook"), content=b"late")

        nursery.start_soon(send_later)
        request = await srv.wait_for_async(timeout=10)
        assert request.body == b"late"
        with pytest.raises(RuntimeError, match="wait_for_async"):
            srv.wait_for()


async def test_wait_for_async_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async with harness.open_server() as srv:
        with pytest.raises(HarnessError, match="no request arrived within 30 s"):
            await srv.wait_for_async(timeout=30)
        assert trio.current_time() >= 30


async def test_wait_for_async_on_a_threaded_server() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/").respond(200)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, httpx.get, srv.url_for("/"))
            request = await srv.wait_for_async(timeout=10)
    assert request.method == "GET"


# -- JSON subsets and matchers --------------------------------------------------------------


def test_json_contains_matches_a_subset_with_matchers_inside() -> None:
    with harness.serving() as srv:
        srv.expect(
            "POST",
            "/orders",
            json_contains={
                "customer": {"id": 7},
                "items": [{"sku": harness.matches_regex(r"[A-Z]{3}-\d+")}],
            },
        ).respond(201)
        document = {"customer": {"id": 7, "name": "Ada"}, "items": [{"sku": "PEN-1", "n": 2}]}
        assert httpx.post(srv.url_for("/orders"), json=document).status_code == 201


def test_json_contains_mismatch_is_reported_path_by_path() -> None:
    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect(
            "POST",
            "/orders",
            json_contains={
                "customer": {"id": 7, "vip": True},
                "items": [{"sku": harness.matches_regex(r"[A-Z]{3}-\d+")}],
                "total": harness.match(lambda v: v > 0, "a positive total"),
            },
        ).respond(201)
        document = {"customer": {"id": 8}, "items": [{"sku": "pen"}], "total": -1}
        assert httpx.post(srv.url_for("/orders"), json=document).status_code == 500
    report = str(info.value)
    for line in [
        "    - json_contains $.customer.id: expected 7, got 8",
        "    - json_contains $.customer: missing key 'vip' (expected True)",
        "    - json_contains $.items[0].sku: expected a string matching /[A-Z]{3}-\\d+/, got 'pen'",
        "    - json_contains $.total: expected a positive total, got -1",
    ]:
        assert line in report


def test_custom_matchers_for_headers_and_the_whole_request_explain_themselves() -> None:
    class SignedBody(harness.Matcher):
        def difference(self, actual: harness.Recorded) -> str | None:
            signature = actual.headers.get("x-signature")
            if signature == f"len={len(actual.body)}":
                return None
            return f"x-signature {signature!r} does not sign a {len(actual.body)}-byte body"

    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect(
            "POST",
            "/",
            headers={"x-request-id": harness.matches_regex(r"[0-9a-f]{8}")},
            predicate=SignedBody(),
        ).respond(200)
        ok = {"x-request-id": "0123abcd", "x-signature": "len=5"}
        assert httpx.post(srv.url_for("/"), content=b"hello", headers=ok).status_code == 200
        bad = {"x-request-id": "nope", "x-signature": "len=1"}
        assert httpx.post(srv.url_for("/"), content=b"hello", headers=bad).status_code == 500
    report = str(info.value)
    assert "header x-request-id: expected a string matching /[0-9a-f]{8}/, got 'nope'" in report
    assert "predicate: x-signature 'len=1' does not sign a 5-byte body" in report


# -- seeded probabilistic faults ------------------------------------------------------------


def failures(seed: int | None, *, rounds: int = 40) -> tuple[list[bool], str]:
    with harness.serving() as srv:
        route = srv.expect("GET", "/", times=None).respond(200, text="ok")
        route.fault(Fault.reset(), fail_rate=0.3, seed=seed)
        outcome = []
        with httpx.Client() as client:
            for _ in range(rounds):
                try:
                    outcome.append(client.get(srv.url_for("/")).status_code != 200)
                except httpx.TransportError:
                    outcome.append(True)
        assert [r.fault == "reset" for r in srv.requests] == outcome
        return outcome, srv.report()


def test_a_seeded_fail_rate_fails_the_same_requests_every_run() -> None:
    first, report = failures(seed=1234)
    second, _ = failures(seed=1234)
    assert first == second
    assert 0 < sum(first) < len(first)  # some failed, some did not
    assert failures(seed=99)[0] != first
    assert "fault=reset fail_rate=0.3 seed=1234" in report
    assert "broken by fault reset" in report


def test_an_unseeded_fail_rate_shows_the_seed_to_replay_it() -> None:
    outcome, report = failures(seed=None, rounds=10)
    seed = int(re.search(r"seed=(\d+)", report)[1])  # type: ignore[index]
    assert failures(seed=seed, rounds=10)[0] == outcome


def test_fail_rate_out_of_range_is_refused() -> None:
    route = harness.Route(
        "GET", "/", query=None, headers=None, json=None, body=None, predicate=None,
        times=1, ordered=False, name="#1",
    )  # fmt: skip
    with pytest.raises(ValueError, match="fail_rate must be between 0 and 1"):
        route.fault(Fault.reset(), fail_rate=1.5)


# -- HTTP/2 ---------------------------------------------------------------------------------


def test_stubs_over_http2_with_tls_and_the_session_ca() -> None:
    with harness.serving(tls=True) as srv:
        srv.expect("POST", "/v1/items", json_contains={"name": "pen"}).respond(201, json={"id": 1})
        srv.expect("GET", "/slow").respond(200, text="slow").fault(Fault.delay(0.01))
        with httpx.Client(http2=True, verify=srv.client_ssl_context()) as client:
            created = client.post(srv.url_for("/v1/items"), json={"name": "pen", "n": 1})
            slow = client.get(srv.url_for("/slow"))
        assert (created.http_version, created.status_code, created.json()) == (
            "HTTP/2",
            201,
            {"id": 1},
        )
        assert (slow.http_version, slow.status_code) == ("HTTP/2", 200)
        assert [r.http_version for r in srv.requests] == ["2", "2"]
        assert srv.connection_count == 1
        assert "over HTTP/2" in srv.report()


def test_stubs_over_h2c_prior_knowledge() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/", headers={"x-key": "k"}).respond(200, text="h2c")
        with httpx.Client(http1=False, http2=True) as client:
            response = client.get(srv.url_for("/"), headers={"X-Key": "k"})
        assert (response.http_version, response.text) == ("HTTP/2", "h2c")
        assert srv.requests[0].http_version == "2"


def test_a_reset_fault_over_http2_is_a_client_error() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/").fault(Fault.reset())
        with (
            httpx.Client(http1=False, http2=True) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.get(srv.url_for("/"))


def test_an_empty_delayed_response_over_http2() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/").respond(200).fault(Fault.delay(0.01))
        with httpx.Client(http1=False, http2=True, timeout=2) as client:
            assert client.get(srv.url_for("/")).status_code == 200
