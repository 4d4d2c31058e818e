"""harness for users coming from pytest-httpserver: one-shot routes that explain themselves,
headers as a mapping, raising predicates, ``Response(...)``, ``on_unmatched``, one short report."""

from __future__ import annotations

import httpx
import pytest

import harness
from harness import HarnessError, Response


def test_a_request_past_times_says_which_request_and_what_the_route_allowed() -> None:
    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect("GET", "/x").respond(200)
        assert httpx.get(srv.url_for("/x")).status_code == 200
        assert httpx.get(srv.url_for("/x")).status_code == 500
    assert (
        "unmatched request: GET /x (2nd request to GET /x: expectation #1 allowed 1; "
        "pass times=None for any number)" in str(info.value)
    )


def test_headers_are_a_case_insensitive_mapping_and_the_list_stays() -> None:
    with harness.serving() as srv:
        srv.expect(
            "GET", "/", predicate=lambda req: req.headers.get("X-Token") == "secret"
        ).respond(200)
        response = httpx.get(
            srv.url_for("/"), headers=[("X-Token", "secret"), ("X-Tag", "a"), ("X-Tag", "b")]
        )
        assert response.status_code == 200
        [request] = srv.requests
        assert request.headers["x-tag"] == "a"
        assert request.headers.get_all("X-TAG") == ["a", "b"]
        assert "X-Token" in request.headers
        assert request.headers.get("absent") is None
        assert [pair for pair in request.header_list if pair[0] == "x-tag"] == [
            ("x-tag", "a"),
            ("x-tag", "b"),
        ]


def test_a_raising_predicate_is_reported_with_its_traceback_and_the_request_logged() -> None:
    def predicate(request: harness.Recorded) -> bool:
        return request.json()["missing"] == 1  # type: ignore[no-any-return]

    with pytest.raises(HarnessError) as info, harness.serving() as srv:
        srv.expect("POST", "/", predicate=predicate).respond(200)
        assert httpx.post(srv.url_for("/"), json={"other": 1}).status_code == 500
        assert [(r.method, r.target, r.status) for r in srv.requests] == [("POST", "/", 500)]
    report = str(info.value)
    assert "the predicate of expectation #1 raised on POST /:" in report
    assert "Traceback (most recent call last):" in report
    assert "KeyError: 'missing'" in report
    assert "predicate: raised KeyError('missing')" in report
    assert "1. POST / -> 500 (route -" in report


def test_response_takes_json_text_and_headers_directly() -> None:
    assert Response(201, json={"id": 1}) == Response.make(201, json={"id": 1})
    with harness.serving() as srv:
        srv.expect("GET", "/seq", times=2).respond_seq(
            [Response(503, text="busy", headers={"retry-after": "1"}), Response(200, json=[1])]
        )
        srv.expect("GET", "/handler").respond_with(lambda req: Response(202, json={"ok": True}))
        first = httpx.get(srv.url_for("/seq"))
        second = httpx.get(srv.url_for("/seq"))
        third = httpx.get(srv.url_for("/handler"))
    assert (first.status_code, first.text, first.headers["retry-after"]) == (503, "busy", "1")
    assert (second.status_code, second.json()) == (200, [1])
    assert (third.status_code, third.json(), third.headers["content-type"]) == (
        202,
        {"ok": True},
        "application/json",
    )


STRICT = ("--strict-markers", "--strict-config", "-p", "no:cacheprovider")


def test_a_failed_test_is_one_failure_with_the_report_not_an_extra_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_downstream="""
        import httpx

        def test_sync(http_server):
            http_server.expect("GET", "/never").respond(200)
            httpx.get(http_server.url_for("/unexpected"))
            assert False, "the test body failed"

        async def test_trio(trio_server):
            trio_server.expect("GET", "/never").respond(200)
            assert False, "the trio test body failed"
        """
    )
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(failed=2, errors=0)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: the test body failed*",
            "*- harness server -*",
            "unmatched: GET /unexpected",
        ]
    )


def test_a_failed_check_has_a_short_traceback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_downstream="""
        import httpx

        def test_sync(http_server):
            http_server.expect("GET", "/never").respond(200)

        async def test_trio(trio_server):
            trio_server.expect("GET", "/never").respond(200)
        """
    )
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    result = pytester.runpytest(*STRICT)
    result.assert_outcomes(passed=1, errors=1, failed=1)  # pytest-trio: teardown is the call
    output = result.stdout.str()
    assert output.count("unmet expectation #1 GET /never: called 0 of 1 times") >= 2
    sync_part, trio_part = output.split("_ test_trio _")
    for noise in ("_plugin.py", "_server.py", "contextlib", "trio/_core"):
        assert noise not in sync_part, noise
    for noise in ("_server.py", "contextlib"):
        assert noise not in trio_part, noise
