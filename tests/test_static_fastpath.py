"""StaticFiles' fast path for plain cached GETs and HEADs answers exactly as the general path does.

The same requests go, in the same order and with the same clock, to an app with the fast path
and to one that always takes the general path (`GeneralOnly`); every response must be the same
(status, headers in order, body, pathsend). A spy on the fast path checks that it did answer the
plain requests, so that the comparisons cannot pass with the fast path never taken.
"""

from __future__ import annotations

import http.client
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import serving
from trioserve._static import FileInfo, StaticFiles, _app, _decide
from trioserve._static._filecache import FileCache
from trioserve._static._paths import get_route_path

from .static_helpers import LATER, MTIME_NS, etag_of, write
from .test_static import Recorder, Response, http_scope, receive
from .test_static_filecache import FakeClock


class GeneralOnly(StaticFiles):
    """StaticFiles without the fast path: every request is decided by the general path."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await self._serve(scope, send)


class FastSpy:
    """Wraps `_app._ready`: the route paths it answered (a plan and bytes) and declined."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answered: list[str] = []
        self.declined: list[str] = []
        real = _app._ready

        def spy(scope: Any, cache: FileCache) -> Any:
            ready = real(scope, cache)
            (self.declined if ready is None else self.answered).append(get_route_path(scope))
            return ready

        monkeypatch.setattr(_app, "_ready", spy)


@pytest.fixture(autouse=True)
def fixed_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    # Multipart boundaries are random: the same one for both paths, so bodies compare.
    monkeypatch.setattr(_decide, "secrets", SimpleNamespace(token_hex=lambda n: "b" * 2 * n))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root / "small.txt", b"small file\n")
    write(root / "big.bin", bytes(range(256)) * 400)  # 100 KiB: over the size kept in memory
    write(root / "site.css", b"body { color: red }\n" * 100)  # 2 KiB: compressed on the fly
    write(root / "pre.js", b"let x = 1;\n" * 10)
    write(root / "pre.js.gz", b"gzipped bytes")
    write(root / "pre.js.br", b"brotli bytes")
    write(root / "index.html", b"<p>home</p>\n")
    write(root / "docs" / "index.html", b"<p>docs</p>\n")
    write(root / "docs" / "page.html", b"<p>page</p>\n")
    write(root / ".hidden", b"dotfile\n")
    write(root / "static" / "small.txt", b"another small file\n")
    write(root / "404.html", b"<p>custom not found</p>\n")
    write(tmp_path / "outside.txt", b"secret outside the root\n")
    (root / "link.txt").symlink_to("small.txt")
    (root / "out.txt").symlink_to(tmp_path / "outside.txt")
    return root


PATHS = [
    "/small.txt",
    "/big.bin",
    "/site.css",
    "/pre.js",
    "/",
    "/docs/",
    "/docs",
    "/docs/page.html",
    "/small.txt/",
    "/.hidden",
    "/link.txt",
    "/out.txt",
    "/missing.txt",
    "/missing",
    "/docs/../small.txt",
    "/./small.txt",
    "//small.txt",
    "/docs//page.html",
    "/SMALL.TXT",
    "",
]

ETAG = etag_of(FileInfo(len(b"small file\n"), MTIME_NS))

HEADER_SETS: list[list[tuple[str, str]]] = [
    [],
    [("Host", "example.com"), ("User-Agent", "test"), ("Accept", "*/*")],
    [("Accept", "application/json")],
    [("Accept", "text/plain")],
    [("Accept", "text/html")],
    [("Accept-Encoding", "gzip")],
    [("Accept-Encoding", "br, gzip")],
    [("Accept-Encoding", "gzip"), ("Accept-Encoding", "br")],
    [("Accept-Encoding", "gzip"), ("Accept-Encoding", "identity;q=0.5")],
    [("Accept-Encoding", "identity;q=0.5")],
    [("Accept-Encoding", "identity")],
    [("Accept-Encoding", "gzip;q=0, identity")],
    [("Accept-Encoding", "*")],
    [("Accept-Encoding", "")],
    [("Range", "bytes=0-4")],
    [("Range", "bytes=0-1,3-4")],
    [("Range", "bytes=9999-")],
    [("If-None-Match", ETAG)],
    [("If-None-Match", '"other"')],
    [("If-Modified-Since", LATER)],
    [("If-Match", '"other"')],
    [("If-Unmodified-Since", "Tue, 14 Nov 2000 22:13:20 GMT")],
    [("If-Range", '"other"')],
    [("If-Range", '"other"'), ("Range", "bytes=0-4")],
    [("Accept-Encoding", "gzip"), ("If-None-Match", ETAG)],
]

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "rules": {
        "cache_control": ["*.css=max-age=60", "/docs/*=no-cache", "public"],
        "error_pages": {404: "404.html"},
    },
    "no-compress-dotfiles-spa": {
        "compress": False,
        "dotfiles": "allow",
        "spa_fallback": "index.html",
    },
    "autoindex-no-index": {"autoindex": True, "index": None},
}


async def _call(app: StaticFiles, scope: dict[str, Any]) -> Response:
    send = Recorder()
    await app(scope, receive, send)
    return send.response()


class Pair:
    """One app with the fast path, one without, on one clock; each request goes to both."""

    def __init__(self, site: Path, clock: FakeClock, **options: Any) -> None:
        self.fast = StaticFiles(site, **options)
        self.general = GeneralOnly(site, **options)
        for app in (self.fast, self.general):
            app.file_cache = FileCache(1.0, clock=clock)
        self.compared = 0

    async def same(self, scope: dict[str, Any]) -> Response:
        fast = await _call(self.fast, scope)
        general = await _call(self.general, dict(scope, headers=list(scope["headers"])))
        what = (scope["method"], scope["path"], scope["headers"], scope["query_string"])
        assert fast == general, what
        self.compared += 1
        return fast

    async def request(
        self, path: str, method: str = "GET", headers: Sequence[tuple[str, str]] = (), **kw: Any
    ) -> Response:
        return await self.same(http_scope(path, method=method, headers=headers, **kw))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
async def test_every_request_answers_as_the_general_path_does(
    site: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]
) -> None:
    spy = FastSpy(monkeypatch)
    pair = Pair(site, FakeClock(), **config)
    combos = list(itertools.product(PATHS, HEADER_SETS, ["GET", "HEAD", "POST"]))
    for _ in range(2):  # the first pass fills the caches, the second mostly hits them
        for path, headers, method in combos:
            await pair.request(path, method, headers)
    assert pair.compared == 2 * len(combos)
    # The fast path answered plain GETs and HEADs of small files, and only those.
    assert {"/small.txt", "/pre.js", "/link.txt", "/docs/page.html"} <= set(spy.answered)
    assert not {"/big.bin", "/small.txt/", "/out.txt", "/missing", "/docs"} & set(spy.answered)
    if config.get("index", "index.html") is not None:
        assert {"/", "/docs/"} <= set(spy.answered)


async def test_query_strings_and_mount_points_answer_as_the_general_path_does(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    for _ in range(2):
        for path in ["/small.txt", "/docs", "/docs/", "/small.txt/", "/missing"]:
            await pair.request("/static" + path)
            await pair.request(path, query_string=b"a=1&b=%2F")
            await pair.request(path, root_path="/static")
            await pair.request(path, root_path="/static", query_string=b"x")
    assert "/small.txt" in spy.answered


def _scope(headers: Any) -> dict[str, Any]:
    return dict(http_scope("/pre.js"), headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Range", b"bytes=0-4")],
        [(b"If-None-Match", b"*")],
        [(b"Accept-Encoding", b"gzip")],
        [(b"accept-encoding", b"gzip"), (b"ACCEPT-ENCODING", b"br")],
        [(bytearray(b"range"), b"bytes=0-4")],
        [(b"accept-encoding", bytearray(b"gzip"))],
        [(b"x-1", b"y"), (b"accept-encoding", b"br")],
    ],
    ids=repr,
)
async def test_header_names_not_in_lower_case_bytes_answer_as_the_general_path_does(
    site: Path, monkeypatch: pytest.MonkeyPatch, headers: Any
) -> None:
    # Other ASGI servers may hand StaticFiles such names; the general path lower-cases them.
    FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    for _ in range(2):
        await pair.same(_scope([]))
        await pair.same(_scope([(b"accept-encoding", b"gzip")]))
        await pair.same(_scope([(b"accept-encoding", b"br")]))
        await pair.same(_scope(headers))


async def test_header_fields_given_as_an_iterator_are_all_seen(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ASGI allows any iterable: the fast path reads only lists and tuples, leaving an iterator
    # whole for the general path.
    FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    for _ in range(2):
        await pair.same(_scope([]))
    fields = [(b"host", b"a"), (b"range", b"bytes=0-3"), (b"accept", b"*/*")]
    fast = await _call(pair.fast, _scope(iter(fields)))
    general = await _call(pair.general, _scope(iter(fields)))
    assert fast == general
    assert (fast.status, fast.body) == (206, b"let ")


async def test_accept_encoding_fields_are_joined_as_the_general_path_joins_them(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    second = [("Accept-Encoding", "identity;q=0.5")]
    both = [("Accept-Encoding", "gzip"), *second]
    for headers in [[], second, second, both, both]:
        await pair.request("/pre.js", headers=headers)
    assert (await pair.request("/pre.js", headers=both)).body == b"gzipped bytes"
    assert spy.answered == ["/pre.js"] * 3


async def test_changes_are_seen_at_the_same_moment_on_both_paths(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FastSpy(monkeypatch)
    clock = FakeClock()
    pair = Pair(site, clock)
    assert (await pair.request("/small.txt")).body == b"small file\n"
    assert (await pair.request("/small.txt")).body == b"small file\n"
    assert spy.answered == ["/small.txt"]
    write(site / "small.txt", b"changed, and longer\n", mtime_ns=MTIME_NS + 1)
    clock.now += 0.5
    assert (await pair.request("/small.txt")).body == b"small file\n"  # within the interval
    clock.now += 0.5
    assert (await pair.request("/small.txt")).body == b"changed, and longer\n"
    assert spy.declined[-1] == "/small.txt"  # stale: revalidated by the general path
    assert (await pair.request("/small.txt")).body == b"changed, and longer\n"
    assert spy.answered[-1] == "/small.txt"
    # Removed: 404 once the interval is over, on both.
    (site / "small.txt").unlink()
    clock.now += 1
    assert (await pair.request("/small.txt")).status == 404
    assert (await pair.request("/small.txt")).status == 404


async def test_a_symlink_swapped_in_to_leave_the_root_is_refused_by_both_paths(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FastSpy(monkeypatch)
    clock = FakeClock()
    pair = Pair(site, clock)
    for _ in range(2):
        assert (await pair.request("/small.txt")).status == 200
    (site / "small.txt").unlink()
    (site / "small.txt").symlink_to(site.parent / "outside.txt")
    clock.now += 1
    for _ in range(2):
        response = await pair.request("/small.txt")
        assert response.status == 404
        assert b"secret" not in response.body


async def test_a_file_changed_under_a_second_name_is_served_as_the_general_path_serves_it(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "/link.txt" (a symlink) and "/small.txt" share one real path, so one body in memory,
    # but their entries are checked at different times: once "/small.txt" has seen the change,
    # "/link.txt"'s fresh entry still names the old file, whose bytes are no longer held.
    spy = FastSpy(monkeypatch)
    clock = FakeClock()
    pair = Pair(site, clock)
    await pair.request("/small.txt")
    clock.now += 0.5
    await pair.request("/link.txt")
    write(site / "small.txt", b"changed, and longer\n", mtime_ns=MTIME_NS + 1)
    clock.now += 0.5
    assert (await pair.request("/small.txt")).body == b"changed, and longer\n"
    assert (await pair.request("/link.txt")).body == b"changed, and longer\n"
    assert spy.declined[-2:] == ["/small.txt", "/link.txt"]
    assert (await pair.request("/link.txt")).body == b"changed, and longer\n"
    assert spy.answered[-1] == "/link.txt"


async def test_a_head_of_a_file_held_in_memory_opens_nothing(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bytes held were read from an open file checked against the identity the head
    # describes: a HEAD (fast or general way) needs no open of its own. A file too big to be
    # held is still opened for its HEAD, on both paths.
    spy = FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    got = await pair.request("/small.txt")
    await pair.request("/big.bin", "HEAD")
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: str, *args: Any, **kwargs: Any) -> int:
        opened.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    for _ in range(2):  # the general way decides the HEAD's plan first, then it is kept
        head = await pair.request("/small.txt", "HEAD")
        assert (head.status, head.headers, head.body) == (200, got.headers, b"")
    assert spy.answered[-1] == "/small.txt"
    big = await pair.request("/big.bin", "HEAD")
    assert big.status == 200
    assert big.header[b"content-length"] == b"102400"
    assert opened == ["big.bin", "big.bin"]


async def test_a_body_dropped_from_memory_is_read_again_on_both_paths(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FastSpy(monkeypatch)
    pair = Pair(site, FakeClock())
    for app in (pair.fast, pair.general):
        assert app.file_cache is not None
        app.file_cache.max_body_bytes = 20  # room for one of the two small files
    for path in ["/small.txt", "/docs/page.html", "/small.txt", "/small.txt", "/docs/page.html"]:
        await pair.request(path)
    assert spy.answered == ["/small.txt"]


# -- over a real socket --------------------------------------------------------------------------


def _exchange(port: int, requests: list[tuple[str, str, list[tuple[str, str]]]]) -> list[Any]:
    """Each request on one keep-alive connection; (status, headers but Date, body) each."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answers = []
    try:
        for method, target, headers in requests:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
            fields = [(k, v) for k, v in response.getheaders() if k.lower() != "date"]
            answers.append((response.status, fields, response.read()))
    finally:
        connection.close()
    return answers


def test_responses_on_the_wire_are_the_same_but_for_the_date(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = FastSpy(monkeypatch)
    targets = ["/small.txt", "/pre.js", "/docs/", "/docs", "/small.txt/", "/big.bin", "/x"]
    targets += ["/small.txt?q=1", "/.hidden", "/link.txt", "/out.txt", "/a/../small.txt"]
    header_sets = [
        [],
        [("Accept-Encoding", "gzip")],
        [("Accept", "application/json")],
        [("Range", "bytes=1-3")],
        [("If-None-Match", ETAG)],
        [("If-Modified-Since", LATER)],
    ]
    requests = [
        (method, target, headers)
        for method in ("GET", "HEAD")
        for target in targets
        for headers in header_sets
    ] * 2
    with (
        serving(app=StaticFiles(site)) as fast_server,
        serving(app=GeneralOnly(site)) as general_server,
    ):
        fast = _exchange(fast_server.port, requests)
        general = _exchange(general_server.port, requests)
    for request, a, b in zip(requests, fast, general, strict=True):
        assert a == b, request
    assert {"/small.txt", "/pre.js", "/docs/", "/link.txt"} <= set(spy.answered)
    plain = requests.index(("GET", "/small.txt", []), len(requests) // 2)
    assert fast[plain][2] == (site / "small.txt").read_bytes()
