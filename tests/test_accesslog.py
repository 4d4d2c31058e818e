"""Access log lines: atoms, headers, JSON, validation, and the log file reopened on SIGUSR1."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from trioserve import Config, ConfigError
from trioserve._accesslog import AccessRecord, check_format

from ._helpers import ServerProcess
from .conftest import connection, hello_app


def record(**overrides: Any) -> AccessRecord:
    values: dict[str, Any] = {
        "client": "203.0.113.5:4000",
        "method": "POST",
        "target": "/items?x=1",
        "status": 201,
        "bytes_sent": 17,
        "duration": 0.0025,
        "http_version": "1.1",
        "scheme": "https",
        "tls_version": 0x0304,
        "request_headers": [(b"user-agent", b"curl/8"), (b"x-request-id", b"abc123")],
        "response_headers": [(b"content-type", b"application/json")],
    }
    values.update(overrides)
    return AccessRecord(**values)


def test_atoms_and_headers() -> None:
    line = record().format(
        "{client} {method} {path} {query} {status} {bytes} {duration_us} {tls_version} "
        "{request_id} {request_header[User-Agent]} {response_header[content-type]} "
        "{request_header[missing]}"
    )
    assert line == (
        "203.0.113.5:4000 POST /items x=1 201 17 2500 TLSv1.3 abc123 curl/8 application/json -"
    )


def test_request_id_is_generated_when_absent() -> None:
    first = record(request_headers=[]).fields["request_id"]
    second = record(request_headers=[]).fields["request_id"]
    assert len(first) == 32
    assert first != second


def test_json_line() -> None:
    data = json.loads(record().json())
    assert data["status"] == 201
    assert data["user_agent"] == "curl/8"
    assert data["duration_us"] == 2500
    assert data["time"].endswith("Z")


@pytest.mark.parametrize(
    ("template", "message"),
    [("{nope}", "unknown atom 'nope'"), ("{status", "bad format"), ("{0}", "bad format")],
)
def test_bad_templates_are_config_errors(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_format(template)
    with pytest.raises(ConfigError, match="access_log_format"):
        Config(access_log_format=template)


async def test_custom_format_on_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    config = Config(
        access_log_format="{method} {target} {status} {response_header[content-length]} "
        "{request_header[x-trace]}"
    )
    async with connection(hello_app, config) as (client, _):
        await client.request("GET", "/fmt?q=1", headers=[("X-Trace", "t-1")])
        await client.response()
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert lines == ["GET /fmt?q=1 200 9 t-1"]


async def test_a_client_rewritten_as_a_list_is_logged_and_the_connection_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # ASGI lets middleware rewrite the scope: a [host, port] list is as good as a tuple (the
    # compiled build once refused it in the access log and dropped the connection).
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def proxied(scope: Any, receive: Any, send: Any) -> None:
        scope["client"] = ["2001:db8::1", 443]
        await hello_app(scope, receive, send)

    async with connection(proxied, Config(access_log_format="{client} {status}")) as (client, _):
        for _ in range(2):
            await client.request("GET", "/")
            response, _ = await client.response()
            assert response.status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    assert lines == ["[2001:db8::1]:443 200"] * 2


async def test_json_on_the_wire(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with connection(hello_app, Config(access_log_json=True)) as (client, _):
        await client.request("GET", "/j")
        await client.response()
    [line] = [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]
    data = json.loads(line)
    assert (data["method"], data["target"], data["status"], data["client"]) == (
        "GET",
        "/j",
        200,
        "127.0.0.1:5000",
    )


def test_access_log_file_is_reopened_on_sigusr1(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    log = tmp_path / "access.log"
    server = ServerProcess.start(
        *("--root", str(tmp_path), "--access-log-file", str(log), "--access-log-json"),
        cwd=tmp_path,
    )
    try:
        httpx.get(server.url + "/a.txt?first", timeout=10)
        log.rename(tmp_path / "access.log.1")  # what logrotate does
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for_line("SIGUSR1: access log reopened")
        httpx.get(server.url + "/a.txt?second", timeout=10)
    finally:
        status, err = server.stop(signal.SIGINT)
    assert status == 0
    old = (tmp_path / "access.log.1").read_text().splitlines()
    assert [json.loads(line)["target"] for line in old] == ["/a.txt?first"]
    new = log.read_text().splitlines()
    assert [json.loads(line)["target"] for line in new] == ["/a.txt?second"]
    assert "SIGUSR1: access log reopened" in err
