"""--compress-apps: CompressApps, the static files' compression on the fly for app responses.

ASGI-level tests (the messages the server would get), then the flag end to end."""

from __future__ import annotations

import gzip
import signal
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from trioserve._cli import main
from trioserve._compress_app import CompressApps

from .test_cli import stop
from .test_cli_files import start_collecting

TEXT = b"<p>hello, compressible world</p>\n" * 100  # 3,300 bytes


def app_sending(*messages: dict[str, Any]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    return app


def start(status: int = 200, **headers: str) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def call(
    app: Any, *headers: tuple[bytes, bytes], method: str = "GET", **options: Any
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": "/", "headers": list(headers)}
    await CompressApps(app, codings=("gzip",), **options)(scope, receive, send)
    return sent


GZIP = (b"accept-encoding", b"gzip, deflate")


async def test_a_whole_html_body_is_gzipped_with_its_length_vary_and_etag() -> None:
    app = app_sending(
        start(content_type="text/html", content_length="3300", etag='"v1"'), body(TEXT)
    )
    first, second = await call(app, GZIP)
    headers = dict(first["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert headers[b"vary"] == b"Accept-Encoding"
    assert headers[b"etag"] == b'"v1-gzip"'
    assert gzip.decompress(second["body"]) == TEXT
    assert headers[b"content-length"] == b"%d" % len(second["body"])
    assert second["more_body"] is False


async def test_a_streamed_body_is_compressed_piece_by_piece_without_a_length() -> None:
    app = app_sending(
        start(content_type="application/json", vary="Origin"),
        body(TEXT, more=True),
        body(TEXT, more=True),
        body(b""),
    )
    sent = await call(app, GZIP)
    headers = dict(sent[0]["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert headers[b"vary"] == b"Origin, Accept-Encoding"
    assert b"content-length" not in headers
    assert sent[-1]["more_body"] is False
    assert gzip.decompress(b"".join(m["body"] for m in sent[1:])) == TEXT * 2


@pytest.mark.parametrize(
    ("response", "request_headers", "method"),
    [
        ((start(content_type="text/html", content_encoding="br"), body(TEXT)), [GZIP], "GET"),
        (
            (start(content_type="text/event-stream"), body(TEXT, more=True), body(b"")),
            [GZIP],
            "GET",
        ),
        ((start(content_type="image/png"), body(TEXT)), [GZIP], "GET"),
        ((start(content_type="text/html"), body(TEXT[:1023])), [GZIP], "GET"),
        (
            (
                start(content_type="text/html", content_length="1000"),
                body(TEXT[:1000], more=True),
                body(b""),
            ),
            [GZIP],
            "GET",
        ),
        ((start(206, content_type="text/html"), body(TEXT)), [GZIP], "GET"),
        ((start(content_type="text/html"), body(TEXT)), [GZIP, (b"range", b"bytes=0-9")], "GET"),
        ((start(content_type="text/html"), body(TEXT)), [(b"accept-encoding", b"identity")], "GET"),
        ((start(content_type="text/html"), body(TEXT)), [], "GET"),
        ((start(content_type="text/html", content_length="3300"), body(b"")), [GZIP], "HEAD"),
    ],
    ids=[
        "has-content-encoding",
        "event-stream",
        "image",
        "under-threshold",
        "declared-length-under-threshold",
        "206",
        "range-request",
        "identity-only",
        "no-accept-encoding",
        "head",
    ],
)
async def test_what_is_left_alone(
    response: tuple[dict[str, Any], ...], request_headers: list[tuple[bytes, bytes]], method: str
) -> None:
    sent = await call(app_sending(*response), *request_headers, method=method)
    assert sent == list(response)


async def test_the_threshold_is_the_setting() -> None:
    app = app_sending(start(content_type="text/plain"), body(TEXT[:100]))
    [first, second] = await call(app, GZIP, min_size=50)
    assert dict(first["headers"])[b"content-encoding"] == b"gzip"
    assert gzip.decompress(second["body"]) == TEXT[:100]


def test_compress_apps_without_an_app_is_bad_usage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--root", str(tmp_path), "--compress-apps"]) == 2
    assert capsys.readouterr().err == (
        "trioserve: error: --compress-apps compresses an APP's responses (files: --compress)\n"
    )


def test_the_flag_compresses_an_apps_responses_on_the_wire(tmp_path: Path) -> None:
    (tmp_path / "page_app.py").write_text(
        textwrap.dedent(
            f"""
            async def app(scope, receive, send):
                if scope["type"] != "http":
                    return
                await send({{"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/html; charset=utf-8")]}})
                await send({{"type": "http.response.body", "body": {TEXT!r}}})
            """
        )
    )
    process, url, _ = start_collecting(
        ["page_app:app", "--app-dir", str(tmp_path), "--compress-apps", "--lifespan", "off"],
        cwd=tmp_path,
    )
    try:
        gz = httpx.get(url + "/", headers={"accept-encoding": "gzip"}, timeout=10)
        assert gz.headers["content-encoding"] == "gzip"
        assert gz.content == TEXT  # httpx decoded it
        plain = httpx.get(url + "/", headers={"accept-encoding": "identity"}, timeout=10)
        assert "content-encoding" not in plain.headers
        assert plain.content == TEXT
    finally:
        status, _ = stop(process, signal.SIGINT)
    assert status == 0
