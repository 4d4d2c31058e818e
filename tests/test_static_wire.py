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
from trioserve._static import choose_coding
from trioserve._static._codecs import available_codings

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


# -- compression on the fly: no sibling --------------------------------------------------------

JS_BYTES = b"".join(b"export const v%d = %d; // a comment\n" % (i, i * 7) for i in range(9000))


@pytest.fixture
def plain_site(tmp_path: Path) -> Path:
    write(tmp_path / "app.js", JS_BYTES)  # ~300 KiB: streamed on the first request
    write(tmp_path / "small.json", b'{"items": [' + b'"x", ' * 400 + b'"y"]}')  # ~2 KiB
    write(tmp_path / "tiny.css", b"p { color: red }\n")  # under 1 KiB
    write(tmp_path / "photo.png", b"\x89PNG\r\n" + bytes(5000))
    return tmp_path


@pytest.fixture
def plain_server(plain_site: Path) -> Iterator[HarnessServer]:
    with serving(app=StaticFiles(plain_site)) as srv:
        yield srv


@pytest.mark.parametrize("path", ["/app.js", "/small.json"])
def test_requests_decodes_what_it_asked_for_by_default(
    plain_server: HarnessServer, plain_site: Path, path: str
) -> None:
    # requests (urllib3) sends "gzip, deflate, br, zstd" when it can decode brotli and zstd, as
    # with trioserve[compression] installed: the server's best coding of those wins.
    advertised = requests.utils.default_headers()["Accept-Encoding"]
    expected = choose_coding(str(advertised), available_codings())
    assert expected == "zstd"
    for _ in range(2):  # the second answer comes from the cache
        response = requests.get(plain_server.url_for(path), timeout=10)
        assert response.headers["content-encoding"] == expected
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.content == (plain_site / path[1:]).read_bytes()


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_httpx_decodes_each_coding(
    plain_server: HarnessServer, plain_site: Path, coding: str
) -> None:
    for _ in range(2):
        response = httpx.get(
            plain_server.url_for("/app.js"), headers={"Accept-Encoding": coding}, timeout=10
        )
        assert response.headers["content-encoding"] == coding
        assert response.content == JS_BYTES


def test_curl_compressed_decodes_and_ranges_stay_identity(plain_server: HarnessServer) -> None:
    url = plain_server.url_for("/app.js")
    assert curl("--compressed", url).stdout == JS_BYTES
    head = curl("--compressed", "--dump-header", "-", "--output", "/dev/null", url).stdout
    assert b"content-encoding: zstd" in head.lower()
    assert curl("--compressed", "--range", "100-199", url).stdout == JS_BYTES[100:200]


def test_etag_of_each_coding_revalidates_to_304(plain_server: HarnessServer) -> None:
    url = plain_server.url_for("/app.js")
    tags = set()
    for coding in ("gzip", "br", "zstd", "identity"):
        first = httpx.get(url, headers={"Accept-Encoding": coding}, timeout=10)
        tag = first.headers["etag"]
        tags.add(tag)
        again = httpx.get(
            url, headers={"Accept-Encoding": coding, "If-None-Match": tag}, timeout=10
        )
        assert again.status_code == 304
        assert again.headers["etag"] == tag
    assert len(tags) == 4


@pytest.mark.parametrize("path", ["/tiny.css", "/photo.png"])
def test_small_or_incompressible_files_go_out_as_they_are(
    plain_server: HarnessServer, plain_site: Path, path: str
) -> None:
    response = requests.get(plain_server.url_for(path), timeout=10)
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str((plain_site / path[1:]).stat().st_size)
    assert response.content == (plain_site / path[1:]).read_bytes()


# -- dot segments over the wire ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        ("/docs/../app.css", 200, CSS_BYTES),
        ("/docs/./../docs/../app.css", 200, CSS_BYTES),
        ("/%2e%2e/app.css", 404, None),  # decoded to "/../app.css": above the root
        ("/docs/../../secret.txt", 404, None),
        ("/docs/..%2f..%2fsecret.txt", 404, None),
    ],
)
def test_dot_segments_over_the_wire(
    site: Path, server: HarnessServer, target: str, status: int, body: bytes | None
) -> None:
    (site / "docs").mkdir()
    write(site.parent / "secret.txt", b"outside the root")
    # curl --path-as-is sends the target exactly as written.
    result = curl("--path-as-is", "--write-out", "\n%{http_code}", server.url + target)
    content, _, code = result.stdout.rpartition(b"\n")
    assert int(code) == status
    if body is not None:
        assert content == body
    assert b"outside the root" not in content


# -- directory listings ------------------------------------------------------------------------


@pytest.fixture
def listed_server(site: Path) -> Iterator[HarnessServer]:
    write(site / "files" / "small.txt", b"s")
    write(site / "files" / "large.bin", bytes(3000), mtime_ns=2_000_000_000 * 10**9)
    write(site / "files" / "sub" / "x.txt", b"x")
    write(site / "files" / ".secret", b"hidden")
    with serving(app=StaticFiles(site, autoindex=True)) as srv:
        yield srv


def test_listing_negotiates_html_json_and_text(listed_server: HarnessServer) -> None:
    url = listed_server.url_for("/files/")
    page = httpx.get(url, headers={"Accept": "text/html,*/*;q=0.8"}, timeout=10)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["vary"] == "Accept"
    assert '<a href="large.bin">large.bin</a>' in page.text
    assert "2.9 KiB" in page.text
    assert ".secret" not in page.text
    listing = httpx.get(url, headers={"Accept": "application/json"}, timeout=10).json()
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("sub", "directory", None),
        ("large.bin", "file", 3000),
        ("small.txt", "file", 1),
    ]
    assert listing["entries"][1]["mtime"] == "2033-05-18T03:33:20Z"
    text = requests.get(url, headers={"Accept": "text/plain"}, timeout=10)
    assert text.text == "sub/\nlarge.bin\nsmall.txt\n"


def test_listing_sorts_through_its_links(listed_server: HarnessServer) -> None:
    url = listed_server.url_for("/files/", sort="time", order="desc")
    text = requests.get(url, headers={"Accept": "text/plain"}, timeout=10).text
    assert text.splitlines()[:2] == ["sub/", "large.bin"]
    page = requests.get(url, timeout=10).text
    assert 'href="?sort=time&amp;order=asc"' in page  # the current column flips its order
