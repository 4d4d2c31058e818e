"""trioserve._static: the StaticFiles app end to end over ASGI, and the package's imports."""

from __future__ import annotations

import asyncio
import errno
import gzip
import json
import os
import subprocess
import sys
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import trioserve
from trioserve._static import CHUNK_SIZE, FileInfo, StaticFiles, _app, _send

from .static_helpers import (
    LAST_MODIFIED,
    MTIME_NS,
    TEXT_PLAIN,
    etag_of,
    header_map,
    make_tree,
    write,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    pathsend: str | None = None
    chunks: list[bytes] = field(default_factory=list)

    @property
    def header(self) -> dict[bytes, bytes]:
        return header_map(self.headers)


def http_scope(
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    root_path: str = "",
    query_string: bytes = b"",
    pathsend: bool = False,
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode("utf-8", "surrogateescape"),
        "query_string": query_string,
        "root_path": root_path,
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "extensions": {"http.response.pathsend": {}} if pathsend else {},
    }


class Recorder:
    """A recording ASGI send that checks the message sequence as it goes."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.done = False

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        assert not self.done, f"message after the response ended: {message}"
        if not self.messages:
            assert message["type"] == "http.response.start"
            for name, value in message["headers"]:
                assert isinstance(name, bytes)
                assert isinstance(value, bytes)
                assert name == name.lower()
        else:
            assert message["type"] in ("http.response.body", "http.response.pathsend")
            self.done = message["type"] == "http.response.pathsend" or not message.get(
                "more_body", False
            )
        self.messages.append(message)

    def response(self) -> Response:
        assert self.done
        start, *rest = self.messages
        pathsend = rest[-1]["path"] if rest[-1]["type"] == "http.response.pathsend" else None
        chunks = [m["body"] for m in rest if m["type"] == "http.response.body"]
        return Response(start["status"], start["headers"], b"".join(chunks), pathsend, chunks)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def call(app: StaticFiles, path: str, **kwargs: Any) -> Response:
    send = Recorder()
    await app(http_scope(path, **kwargs), receive, send)
    return send.response()


def parse_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[bytes, bytes], bytes]]:
    delimiter = b"--" + boundary
    closing = b"\r\n" + delimiter + b"--\r\n"
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(closing)
    parts = []
    for raw in body[len(delimiter) + 2 : -len(closing)].split(b"\r\n" + delimiter + b"\r\n"):
        head, _, data = raw.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))
        parts.append((fields, data))
    return parts


DATA = bytes(range(256)) * 800  # 200 KiB: several 64 KiB chunks


@pytest.fixture
def site(tree: Path) -> Path:
    write(tree / "big.bin", DATA)
    write(tree / "hello.txt", b"hello world\n")
    write(tree / "empty.txt", b"")
    return tree


async def test_get_streams_the_file_in_64k_chunks(site: Path) -> None:
    response = await call(StaticFiles(site), "/big.bin")
    assert response.status == 200
    assert response.body == DATA
    assert response.pathsend is None
    assert [len(chunk) for chunk in response.chunks] == [65536, 65536, 65536, 8192]
    info = FileInfo.from_stat(os.stat(site / "big.bin"))
    assert response.headers == [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"204800"),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", etag_of(info).encode()),
    ]


async def test_large_file_uses_pathsend_when_the_server_offers_it(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (CHUNK_SIZE + 1))
    response = await call(StaticFiles(tmp_path), "/big.bin", pathsend=True)
    assert response.status == 200
    assert response.pathsend == str((tmp_path / "big.bin").resolve())
    assert response.body == b""
    assert response.header[b"content-length"] == str(CHUNK_SIZE + 1).encode()


async def test_small_file_is_sent_inline_even_when_pathsend_is_offered(site: Path) -> None:
    response = await call(StaticFiles(site), "/hello.txt", pathsend=True)
    assert response.status == 200
    assert response.pathsend is None
    assert response.chunks == [b"hello world\n"]
    assert response.header[b"content-length"] == b"12"


async def test_pathsend_gets_the_real_path_of_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"y" * (CHUNK_SIZE + 1))
    (tmp_path / "link.bin").symlink_to(tmp_path / "big.bin")
    response = await call(StaticFiles(tmp_path), "/link.bin", pathsend=True)
    assert response.pathsend == str((tmp_path / "big.bin").resolve())


async def test_empty_file_gets_an_empty_body(site: Path) -> None:
    response = await call(StaticFiles(site), "/empty.txt")
    assert (response.status, response.body, response.chunks) == (200, b"", [b""])
    assert response.header[b"content-length"] == b"0"


@pytest.mark.parametrize("pathsend", [False, True])
async def test_head_sends_headers_and_no_body(site: Path, pathsend: bool) -> None:
    app = StaticFiles(site)
    get = await call(app, "/hello.txt")
    head = await call(app, "/hello.txt", method="HEAD", pathsend=pathsend)
    assert head.status == 200
    assert head.headers == get.headers
    assert (head.body, head.pathsend) == (b"", None)


async def test_if_none_match_gets_304(site: Path) -> None:
    app = StaticFiles(site, cache_control="no-cache")
    etag = (await call(app, "/hello.txt")).header[b"etag"].decode()
    response = await call(app, "/hello.txt", headers=[("If-None-Match", etag)])
    assert response.status == 304
    assert response.headers == [
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", etag.encode()),
        (b"cache-control", b"no-cache"),
    ]
    assert response.body == b""


async def test_if_modified_since_gets_304(site: Path) -> None:
    response = await call(
        StaticFiles(site), "/hello.txt", headers=[("If-Modified-Since", LAST_MODIFIED)]
    )
    assert response.status == 304


async def test_single_range_gets_206(site: Path) -> None:
    response = await call(StaticFiles(site), "/big.bin", headers=[("Range", "bytes=70000-70009")])
    assert response.status == 206
    assert response.header[b"content-range"] == b"bytes 70000-70009/204800"
    assert response.header[b"content-length"] == b"10"
    assert response.body == DATA[70000:70010]


async def test_range_spanning_chunks_is_streamed_whole(site: Path) -> None:
    response = await call(
        StaticFiles(site), "/big.bin", headers=[("Range", "bytes=1000-")], pathsend=True
    )
    assert response.status == 206
    assert response.pathsend is None
    assert response.body == DATA[1000:]
    assert max(len(chunk) for chunk in response.chunks) == 65536


async def test_several_ranges_get_a_multipart_body(site: Path) -> None:
    response = await call(
        StaticFiles(site), "/big.bin", headers=[("Range", "bytes=-5, 0-9, 100000-170000, 8-12")]
    )
    assert response.status == 206
    content_type = response.header[b"content-type"]
    prefix = b"multipart/byteranges; boundary="
    assert content_type.startswith(prefix)
    assert int(response.header[b"content-length"]) == len(response.body)
    parts = parse_multipart(response.body, content_type[len(prefix) :])
    expected = [(204795, 204799), (0, 12), (100000, 170000)]
    assert [fields[b"Content-Range"] for fields, _ in parts] == [
        f"bytes {a}-{b}/204800".encode() for a, b in expected
    ]
    assert all(fields[b"Content-Type"] == b"application/octet-stream" for fields, _ in parts)
    assert [data for _, data in parts] == [DATA[a : b + 1] for a, b in expected]


async def test_range_past_end_gets_416(site: Path) -> None:
    response = await call(StaticFiles(site), "/hello.txt", headers=[("Range", "bytes=12-")])
    assert response.status == 416
    assert response.headers == [
        TEXT_PLAIN,
        (b"content-length", b"26"),
        (b"vary", b"Accept"),
        (b"content-range", b"bytes */12"),
    ]
    assert response.body == b"416 Range Not Satisfiable\n"


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/json", b"application/problem+json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", b"text/html; charset=utf-8"),
        ("*/*", b"text/plain; charset=utf-8"),
    ],
)
@pytest.mark.parametrize(
    ("path", "method", "status"), [("/missing", "GET", 404), ("/hello.txt", "DELETE", 405)]
)
async def test_errors_follow_the_clients_accept(
    site: Path, accept: str, content_type: bytes, path: str, method: str, status: int
) -> None:
    response = await call(StaticFiles(site), path, method=method, headers=[("Accept", accept)])
    assert response.status == status
    assert response.header[b"content-type"] == content_type
    assert response.header[b"vary"] == b"Accept"
    assert response.header[b"content-length"] == str(len(response.body)).encode()
    if content_type == b"application/problem+json":
        problem = json.loads(response.body)
        assert (problem["status"], problem["type"]) == (status, "about:blank")


async def test_too_many_ranges_get_the_whole_file(site: Path) -> None:
    app = StaticFiles(site, max_ranges=3)
    response = await call(app, "/hello.txt", headers=[("Range", "bytes=0-0,2-2,4-4,6-6")])
    assert (response.status, response.body) == (200, b"hello world\n")


async def test_post_gets_405_with_allow(site: Path) -> None:
    response = await call(StaticFiles(site), "/hello.txt", method="POST")
    assert response.status == 405
    assert response.headers == [
        TEXT_PLAIN,
        (b"content-length", b"23"),
        (b"vary", b"Accept"),
        (b"allow", b"GET, HEAD"),
    ]
    assert response.body == b"405 Method Not Allowed\n"


@pytest.mark.parametrize(
    ("path", "root_path", "query_string", "location"),
    [
        ("/sub", "", b"", b"/sub/"),
        ("/sub", "/static", b"v=1", b"/static/sub/?v=1"),
        ("//evil.com", "", b"", b"/evil.com/"),
        ("//evil.com//", "", b"", None),
        ("/evil.com/..%2f..%2f", "", b"", None),
        ("//evil.com/..", "", b"", b"/"),  # dot segments removed: the root, without its slash
        ("/sub/../evil.com", "", b"", b"/evil.com/"),
    ],
)
async def test_directory_redirect_never_leaves_the_site(
    site: Path, path: str, root_path: str, query_string: bytes, location: bytes | None
) -> None:
    (site / "evil.com").mkdir()
    response = await call(StaticFiles(site), path, root_path=root_path, query_string=query_string)
    if location is None:
        assert response.status == 404
    else:
        assert response.status == 301
        assert response.headers == [(b"location", location), (b"content-length", b"0")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sub/../hello.txt", b"hello world\n"),
        ("/sub/./../sub/b.txt", b"bee"),
        ("/etc/../a.txt", b"hello"),
    ],
)
async def test_dot_segments_are_removed_before_mapping(site: Path, path: str, body: bytes) -> None:
    response = await call(StaticFiles(site), path)
    assert (response.status, response.body) == (200, body)


async def test_root_path_is_stripped_before_mapping(site: Path) -> None:
    response = await call(StaticFiles(site), "/hello.txt", root_path="/static")
    assert (response.status, response.body) == (200, b"hello world\n")


async def test_directory_serves_its_index(site: Path) -> None:
    write(site / "sub" / "index.html", b"<p>hi</p>")
    response = await call(StaticFiles(site), "/sub/")
    assert (response.status, response.body) == (200, b"<p>hi</p>")
    assert response.header[b"content-type"] == b"text/html; charset=utf-8"
    assert (await call(StaticFiles(site, index=None), "/sub/")).status == 404


async def test_directory_without_index_is_404_unless_autoindex(site: Path) -> None:
    assert (await call(StaticFiles(site), "/sub/")).status == 404
    response = await call(StaticFiles(site, autoindex=True), "/sub/")
    assert response.status == 200
    assert response.header[b"content-type"] == b"text/html; charset=utf-8"
    assert b'<a href="b.txt">b.txt</a>' in response.body


async def test_autoindex_escapes_file_names(site: Path) -> None:
    write(site / "sub" / "<script>.txt", b"x")
    response = await call(StaticFiles(site, autoindex=True), "/sub/")
    assert b'<a href="%3Cscript%3E.txt">&lt;script&gt;.txt</a>' in response.body
    assert b"<script>" not in response.body
    followed = await call(StaticFiles(site), "/sub/<script>.txt")
    assert (followed.status, followed.body) == (200, b"x")


async def test_autoindex_hides_dotfiles_unless_allowed(site: Path) -> None:
    hidden = await call(StaticFiles(site, autoindex=True), "/")
    assert b".env" not in hidden.body
    assert b"link-out.txt" not in hidden.body
    shown = await call(StaticFiles(site, autoindex=True, dotfiles="allow"), "/")
    assert b'<a href=".env">.env</a>' in shown.body


async def test_dotfiles_are_404_unless_allowed(site: Path) -> None:
    assert (await call(StaticFiles(site), "/.env")).status == 404
    assert (await call(StaticFiles(site), "/.git/config")).status == 404
    allowed = await call(StaticFiles(site, dotfiles="allow"), "/.env")
    assert (allowed.status, allowed.body) == (200, b"SECRET=1")


@pytest.mark.parametrize(
    "path",
    [
        "/../outside.txt",
        "/a/../../outside.txt",
        "/link-out.txt",
        "/dir-out/f.txt",
        "/sibling-prefix.txt",
        "/%2e%2e%2foutside.txt",
        "/..\\outside.txt",
        "/fifo",
        "/loop1",
        "/hello.txt/",
        "/" + "x" * 1000,
    ],
)
async def test_traversal_attempts_get_404(site: Path, path: str) -> None:
    response = await call(StaticFiles(site), path)
    assert (response.status, response.body) == (404, b"404 Not Found\n")


@pytest.mark.parametrize(
    ("accept_encoding", "encoding", "body"),
    [
        (None, None, b"console.log(1)\n"),
        ("gzip, deflate, br", b"br", b"BR"),
        ("gzip", b"gzip", b"GZ"),
        ("br;q=0.2, gzip;q=0.8", b"gzip", b"GZ"),
        ("gzip;q=0, br;q=0", None, b"console.log(1)\n"),
        ("*;q=0.5, identity", None, b"console.log(1)\n"),
    ],
)
async def test_precompressed_siblings_follow_accept_encoding(
    site: Path, accept_encoding: str | None, encoding: bytes | None, body: bytes
) -> None:
    write(site / "app.js", b"console.log(1)\n")
    write(site / "app.js.br", b"BR")
    write(site / "app.js.gz", b"GZ")
    headers = [] if accept_encoding is None else [("Accept-Encoding", accept_encoding)]
    response = await call(StaticFiles(site), "/app.js", headers=headers)
    assert (response.status, response.body) == (200, body)
    assert response.header.get(b"content-encoding") == encoding
    assert response.header[b"content-type"] == b"text/javascript; charset=utf-8"
    assert response.header[b"content-length"] == str(len(body)).encode()
    assert response.header[b"vary"] == b"Accept-Encoding"


async def test_zst_sibling_is_served_to_zstd_clients(site: Path) -> None:
    write(site / "app.js", b"console.log(1)\n")
    write(site / "app.js.zst", b"ZST")
    write(site / "app.js.br", b"BR")
    zstd = await call(StaticFiles(site), "/app.js", headers=[("Accept-Encoding", "br, zstd")])
    assert (zstd.body, zstd.header[b"content-encoding"]) == (b"ZST", b"zstd")
    br = await call(StaticFiles(site), "/app.js", headers=[("Accept-Encoding", "br")])
    assert (br.body, br.header[b"content-encoding"]) == (b"BR", b"br")


async def test_gz_sibling_symlinked_outside_is_not_served(site: Path) -> None:
    write(site / "app.js", b"plain")
    (site / "app.js.gz").symlink_to(site.parent / "outside.txt")
    response = await call(StaticFiles(site), "/app.js", headers=[("Accept-Encoding", "gzip")])
    assert (response.status, response.body) == (200, b"plain")
    assert b"content-encoding" not in response.header
    assert b"vary" not in response.header


async def test_cache_control_is_configurable(site: Path) -> None:
    app = StaticFiles(site, cache_control="public, max-age=60")
    assert (await call(app, "/hello.txt")).header[b"cache-control"] == b"public, max-age=60"
    assert b"cache-control" not in (await call(app, "/missing")).header


async def test_cache_control_rules_per_path(site: Path) -> None:
    write(site / "index.html", b"<p>home</p>")
    write(site / "assets" / "app.js", b"1")
    rules = ["*.html=no-cache", "/assets/*=public, max-age=31536000, immutable", "max-age=60"]
    app = StaticFiles(site, cache_control=rules)
    assert (await call(app, "/")).header[b"cache-control"] == b"no-cache"
    assert (await call(app, "/index.html")).header[b"cache-control"] == b"no-cache"
    immutable = b"public, max-age=31536000, immutable"
    assert (await call(app, "/assets/app.js")).header[b"cache-control"] == immutable
    assert (await call(app, "/hello.txt")).header[b"cache-control"] == b"max-age=60"
    etag = (await call(app, "/hello.txt")).header[b"etag"].decode()
    not_modified = await call(app, "/hello.txt", headers=[("If-None-Match", etag)])
    assert (not_modified.status, not_modified.header[b"cache-control"]) == (304, b"max-age=60")
    only_html = StaticFiles(site, cache_control=[("*.html", "no-cache")])
    assert b"cache-control" not in (await call(only_html, "/hello.txt")).header


async def test_unreadable_file_gets_404(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Faked: the tests may run as root, for whom chmod 000 changes nothing.
    real_open = os.open
    target = str(site / "hello.txt")

    def deny(path: str, flags: int, *args: Any) -> int:
        if path == target:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)
    for method in ("GET", "HEAD"):
        response = await call(StaticFiles(site), "/hello.txt", method=method, pathsend=True)
        assert response.status == 404


async def test_file_replaced_after_lookup_is_looked_up_again(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = _app.load_resource
    calls = 0

    def load_then_replace(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        resource = real_load(*args, **kwargs)
        if calls == 1:  # a deploy renames a new version over the file right after the stat
            write(site / "new.txt", b"new version\n", MTIME_NS + 5_000_000_000)
            os.replace(site / "new.txt", site / "hello.txt")
        return resource

    monkeypatch.setattr(_app, "load_resource", load_then_replace)
    response = await call(StaticFiles(site), "/hello.txt")
    assert (response.status, response.body, calls) == (200, b"new version\n", 2)
    assert response.header[b"content-length"] == b"12"


async def test_file_that_keeps_changing_gets_404(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_load = _app.load_resource

    def load_then_touch(*args: Any, **kwargs: Any) -> Any:
        resource = real_load(*args, **kwargs)
        os.utime(site / "hello.txt", ns=(0, os.stat(site / "hello.txt").st_mtime_ns + 1))
        return resource

    monkeypatch.setattr(_app, "load_resource", load_then_touch)
    assert (await call(StaticFiles(site), "/hello.txt")).status == 404


async def test_file_shrinking_mid_send_aborts_the_response(site: Path) -> None:
    class TruncatingSend(Recorder):
        async def __call__(self, message: MutableMapping[str, Any]) -> None:
            await super().__call__(message)
            if message["type"] == "http.response.body":
                os.truncate(site / "big.bin", 70000)

    with pytest.raises(RuntimeError, match="shrank"):
        await StaticFiles(site)(http_scope("/big.bin"), receive, TruncatingSend())


async def test_lifespan_is_completed() -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[MutableMapping[str, Any]] = []

    async def lifespan_receive() -> dict[str, Any]:
        return next(messages)

    async def record(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    app = StaticFiles(Path(__file__).parent)
    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_receive, record)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_websocket_scope_is_refused(site: Path) -> None:
    with pytest.raises(RuntimeError, match="only serves HTTP"):
        await StaticFiles(site)({"type": "websocket", "path": "/"}, receive, Recorder())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"directory": "missing"}, "does not exist or is not a directory"),
        ({"directory": "static/a.txt"}, "does not exist or is not a directory"),
        ({"dotfiles": "ignore"}, "dotfiles must be"),
        ({"index": "../index.html"}, "index must be a plain file name"),
        ({"index": "a/b.html"}, "index must be a plain file name"),
        ({"max_ranges": 0}, "max_ranges must be at least 1"),
        ({"cache_control": "max-age=1\r\nSet-Cookie: x"}, "cache_control"),
        ({"cache_control": ["*.js=max-age=1\nx"]}, "cache_control"),
        ({"cache_control": [("", "no-cache")]}, "empty pattern"),
        ({"cache_control": ["*.js="]}, "cache_control"),
        ({"compress_min_size": -1}, "compress_min_size"),
        ({"compress_cache_size": -1}, "compress_cache_size"),
    ],
)
def test_constructor_rejects_bad_arguments(
    tree: Path, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"directory": tree, **kwargs}
    if isinstance(arguments["directory"], str):
        arguments["directory"] = tree.parent / arguments["directory"]
    with pytest.raises(ValueError, match=message):
        StaticFiles(**arguments)


def test_constructor_stores_the_real_path(tree: Path) -> None:
    (tree.parent / "alias").symlink_to(tree)
    assert StaticFiles(tree.parent / "alias").directory == str(tree)


def test_runs_under_asyncio(site: Path) -> None:
    async def main() -> Response:
        return await call(StaticFiles(site), "/big.bin", headers=[("Range", "bytes=0-9,-10")])

    response = asyncio.run(main())
    assert response.status == 206
    assert DATA[:10] in response.body
    assert DATA[-10:] in response.body


def test_works_mounted_in_starlette_under_asyncio(site: Path) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/static", app=StaticFiles(site))])

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                await client.get("/static/hello.txt", headers={"Range": "bytes=0-4"}),
                await client.get("/static/sub"),
                await client.get("/static/%2e%2e/static1/secret.txt"),
            ]

    ranged, redirect, traversal = asyncio.run(main())
    assert (ranged.status_code, ranged.content) == (206, b"hello")
    assert (redirect.status_code, redirect.headers["location"]) == (301, "/static/sub/")
    assert traversal.status_code == 404


# The modules that make the decision; only _app (the ASGI app) may import more than these.
PURE_MODULES = ("_decide", "_encoding", "_fallback", "_headers", "_listing", "_paths", "_plan")


def test_pure_modules_import_only_the_standard_library_and_each_other() -> None:
    # trioserve/__init__.py (which imports the server, hence trio) must not run: bare package
    # objects stand in for trioserve and trioserve._static, so only the pure modules execute.
    package = Path(trioserve.__file__).parent
    code = (
        "import importlib, sys, types\n"
        "before = set(sys.modules)\n"
        f"for name, path in [('trioserve', {str(package)!r}),"
        f" ('trioserve._static', {str(package / '_static')!r})]:\n"
        "    module = types.ModuleType(name)\n"
        "    module.__path__ = [path]\n"
        "    sys.modules[name] = module\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module('trioserve._static.' + name)\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
        "ours = sorted(name for name in sys.modules if name.split('.')[0] == 'trioserve')\n"
        "print(' '.join(ours))\n"
        "others = {name.split('.')[0] for name in set(sys.modules) - before} - {'trioserve'}\n"
        "print(' '.join(sorted(others - sys.stdlib_module_names)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ours, third_party = result.stdout.splitlines()
    assert ours.split() == sorted(
        [
            "trioserve",
            "trioserve._http",
            "trioserve._http._problem",
            "trioserve._static",
            *(f"trioserve._static.{name}" for name in PURE_MODULES),
        ]
    )
    assert third_party == ""


# -- compression on the fly --------------------------------------------------------------------

CSS_TEXT = b"".join(b".c%d { margin: %dpx; }\n" % (i, i % 9) for i in range(12000))  # ~250 KiB


async def test_small_compressible_file_is_compressed_whole_and_cached(site: Path) -> None:
    write(site / "page.html", b"<p>hello</p>\n" * 200)
    app = StaticFiles(site)
    first = await call(app, "/page.html", headers=[("Accept-Encoding", "gzip")])
    assert first.status == 200
    assert first.header[b"content-encoding"] == b"gzip"
    assert gzip.decompress(first.body) == b"<p>hello</p>\n" * 200
    assert first.header[b"content-length"] == str(len(first.body)).encode()
    assert first.header[b"vary"] == b"Accept-Encoding"
    assert len(app.compression_cache) == 1
    second = await call(app, "/page.html", headers=[("Accept-Encoding", "gzip")])
    assert (second.headers, second.body) == (first.headers, first.body)


async def test_large_file_is_streamed_compressed_then_served_from_the_cache(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(site / "app.css", CSS_TEXT)
    app = StaticFiles(site)
    first = await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    assert first.status == 200
    assert b"content-length" not in first.header
    assert len(first.chunks) > 1
    assert gzip.decompress(first.body) == CSS_TEXT
    # The second request is not compressed again: it comes whole from the cache.
    monkeypatch.setattr(_send, "new_compressor", None)
    second = await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    assert second.chunks == [first.body]
    assert second.header[b"content-length"] == str(len(first.body)).encode()


async def test_head_of_a_compressed_file_has_the_cached_length(site: Path) -> None:
    write(site / "app.css", CSS_TEXT)
    app = StaticFiles(site)
    gz = [("Accept-Encoding", "gzip")]
    cold = await call(app, "/app.css", method="HEAD", headers=gz)
    assert (cold.status, cold.body, cold.header[b"content-encoding"]) == (200, b"", b"gzip")
    assert b"content-length" not in cold.header
    get = await call(app, "/app.css", headers=gz)
    warm = await call(app, "/app.css", method="HEAD", headers=gz)
    assert warm.body == b""
    assert warm.header[b"content-length"] == str(len(get.body)).encode()
    assert len(app.compression_cache) == 1  # HEAD compressed nothing


async def test_a_changed_file_is_compressed_anew(site: Path) -> None:
    write(site / "app.css", CSS_TEXT)
    app = StaticFiles(site)
    await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    write(site / "app.css", CSS_TEXT[::-1], mtime_ns=MTIME_NS + 10**9)
    again = await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    assert gzip.decompress(again.body) == CSS_TEXT[::-1]


async def test_compressed_body_over_the_entry_bound_is_not_cached(site: Path) -> None:
    write(site / "app.css", CSS_TEXT)
    app = StaticFiles(site, compress_cache_size=100)
    response = await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    assert gzip.decompress(response.body) == CSS_TEXT
    assert len(app.compression_cache) == 0


async def test_compressed_etag_gets_304(site: Path) -> None:
    write(site / "app.css", CSS_TEXT)
    app = StaticFiles(site)
    first = await call(app, "/app.css", headers=[("Accept-Encoding", "gzip")])
    etag = first.header[b"etag"].decode()
    assert etag.startswith('W/"')
    again = await call(
        app, "/app.css", headers=[("Accept-Encoding", "gzip"), ("If-None-Match", etag)]
    )
    assert (again.status, again.body) == (304, b"")


@pytest.mark.parametrize(
    ("kwargs", "accept_encoding", "encoding"),
    [
        ({"compress": False}, "gzip", None),
        ({"compress": ["gzip"]}, "zstd, br, gzip", b"gzip"),
        ({"compress_min_size": 10**6}, "gzip", None),
        ({}, "identity", None),
        ({}, "zstd, br, gzip", b"zstd"),
    ],
)
async def test_compression_settings(
    site: Path, kwargs: dict[str, Any], accept_encoding: str, encoding: bytes | None
) -> None:
    write(site / "app.css", CSS_TEXT)
    response = await call(
        StaticFiles(site, **kwargs), "/app.css", headers=[("Accept-Encoding", accept_encoding)]
    )
    assert response.header.get(b"content-encoding") == encoding
    if encoding is None:
        assert response.body == CSS_TEXT


def test_compress_with_an_unknown_coding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'deflate'"):
        StaticFiles(tmp_path, compress=["deflate"])
