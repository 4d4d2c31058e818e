"""trioserve._static over real sockets: what httpx, requests and curl decode from StaticFiles."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from harness import HarnessServer, serving
from trioserve import StaticFiles

from .static_helpers import write

# Text that compresses well, several chunks long, with every line distinct.
CSS = "".join(f".rule-{i} {{ color: #{i:06x}; margin: {i % 17}px; }}\n" for i in range(4000))
CSS_BYTES = CSS.encode()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    write(tmp_path / "app.css", CSS_BYTES)
    # A precompressed sibling with other bytes than the identity file would give when ranged:
    # a range served from it could never decode to the identity's bytes.
    write(tmp_path / "app.css.gz", gzip.compress(CSS_BYTES, mtime=0))
    return tmp_path


@pytest.fixture
def server(site: Path) -> Iterator[HarnessServer]:
    with serving(app=StaticFiles(site)) as srv:
        yield srv


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        check=True,
    )


def test_requests_gets_the_gzip_sibling_decoded(server: HarnessServer) -> None:
    response = requests.get(server.url_for("/app.css"), timeout=10)
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == CSS_BYTES


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_range_request_from_a_gzip_client_gets_identity_bytes(
    server: HarnessServer, client: str
) -> None:
    url = server.url_for("/app.css")
    headers = {"Range": "bytes=100-5099", "Accept-Encoding": "gzip, deflate, br, zstd"}
    if client == "requests":
        response = requests.get(url, headers=headers, timeout=10)
        status, got, content = response.status_code, response.headers, response.content
    else:
        reply = httpx.get(url, headers=headers, timeout=10)
        status, got, content = reply.status_code, reply.headers, reply.content
    assert status == 206
    assert "content-encoding" not in got
    assert got["content-range"] == f"bytes 100-5099/{len(CSS_BYTES)}"
    assert content == CSS_BYTES[100:5100]


def test_multipart_ranges_from_a_gzip_client_are_not_labelled_gzip(server: HarnessServer) -> None:
    response = requests.get(
        server.url_for("/app.css"), headers={"Range": "bytes=0-9,200-209"}, timeout=10
    )
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges; boundary=")
    assert "content-encoding" not in response.headers
    assert CSS_BYTES[0:10] in response.content
    assert CSS_BYTES[200:210] in response.content


def test_curl_compressed_range_gets_identity_bytes(server: HarnessServer) -> None:
    result = curl("--compressed", "--range", "1000-2999", server.url_for("/app.css"))
    assert result.stdout == CSS_BYTES[1000:3000]
    whole = curl("--compressed", server.url_for("/app.css"))
    assert whole.stdout == CSS_BYTES
