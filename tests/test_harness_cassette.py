"""Record and replay: a real upstream once, then its answers from the cassette."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import harness
from harness import HarnessError


def record_session(upstream: harness.HarnessServer, cassette: Path, **options: object) -> None:
    with harness.recording(upstream.url, cassette, **options) as recorder:  # type: ignore[arg-type]
        verify = recorder.client_ssl_context() if recorder.scheme == "https" else True
        with httpx.Client(base_url=recorder.url, verify=verify) as client:
            assert client.get("/v1/users/7", params={"full": "1"}).json() == {"id": 7}
            created = client.post("/v1/items", json={"name": "pen"})
            assert (created.status_code, created.headers["etag"]) == (201, '"v1"')
            assert client.get("/logo.png").content == b"\x89PNG\x00\xff"
        assert [r.target for r in recorder.requests] == [
            "/v1/users/7?full=1",
            "/v1/items",
            "/logo.png",
        ]


def upstream_expectations(upstream: harness.HarnessServer) -> None:
    upstream.expect("GET", "/v1/users/7", query={"full": "1"}).respond(200, json={"id": 7})
    upstream.expect("POST", "/v1/items", json={"name": "pen"}).respond(
        201, json={"id": 1}, headers={"etag": '"v1"'}
    )
    upstream.expect("GET", "/logo.png").respond(200, body=b"\x89PNG\x00\xff")


def test_record_then_replay_without_the_upstream(tmp_path: Path) -> None:
    cassette = tmp_path / "api.json"
    with harness.serving() as upstream:
        upstream_expectations(upstream)
        record_session(upstream, cassette)
    document = json.loads(cassette.read_text())
    assert [e["request"]["target"] for e in document["exchanges"]] == [
        "/v1/users/7?full=1",
        "/v1/items",
        "/logo.png",
    ]
    assert document["exchanges"][2]["response"]["body"] == {"base64": "iVBORwD/"}
    # The upstream is gone; the replay answers the same requests the same way.
    with harness.replaying(cassette) as replay, httpx.Client(base_url=replay.url) as client:
        assert client.get("/v1/users/7", params={"full": "1"}).json() == {"id": 7}
        created = client.post("/v1/items", json={"name": "pen"})
        assert (created.status_code, created.json(), created.headers["etag"]) == (
            201,
            {"id": 1},
            '"v1"',
        )
        assert client.get("/logo.png").content == b"\x89PNG\x00\xff"


def test_recording_an_https_upstream_through_a_tls_recorder(tmp_path: Path) -> None:
    cassette = tmp_path / "api.json"
    with harness.serving(tls=True) as upstream:
        upstream_expectations(upstream)
        record_session(upstream, cassette, verify=upstream.client_ssl_context(), tls=True)
    assert json.loads(cassette.read_text())["upstream"].startswith("https://")


def test_replay_is_strict_on_requests_the_cassette_does_not_have(tmp_path: Path) -> None:
    cassette = tmp_path / "api.json"
    with harness.serving() as upstream:
        upstream_expectations(upstream)
        record_session(upstream, cassette)
    with (
        pytest.raises(HarnessError) as info,
        harness.replaying(cassette) as replay,
        httpx.Client(base_url=replay.url) as client,
    ):
        assert client.get("/v1/users/7", params={"full": "1"}).status_code == 200
        assert client.post("/v1/items", json={"name": "pencil"}).status_code == 500
    report = str(info.value)
    assert "unmatched request: POST /v1/items" in report
    assert 'body: expected b\'{"name":"pen"}\', got b\'{"name":"pencil"}\'' in report
    assert "unmet expectation #3 GET /logo.png" in report
