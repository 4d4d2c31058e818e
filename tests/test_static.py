from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest

import trioserve
from trioserve._static import (
    CHUNK_SIZE,
    ByteRange,
    Directory,
    DirEntry,
    EmptyBody,
    FileInfo,
    FileRange,
    InlineBody,
    MultipartRanges,
    Representation,
    ResponsePlan,
    StaticFile,
    StaticFiles,
    StaticRequest,
    WholeFile,
    _app,
    choose_representation,
    content_type_for,
    decide,
    get_route_path,
    is_inside,
    list_directory,
    load_resource,
    parse_accept_encoding,
    parse_http_date,
    parse_range,
    render_listing,
    resolve_path,
    split_path,
)

MTIME = 1_700_000_000
MTIME_NS = MTIME * 1_000_000_000 + 123_456_789
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
EARLIER = "Tue, 14 Nov 2023 22:13:19 GMT"
LATER = "Tue, 14 Nov 2023 22:13:21 GMT"
TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")

T = TypeVar("T")


def etag_of(info: FileInfo, suffix: str = "") -> str:
    return f'"{info.mtime_ns:x}-{info.size:x}{suffix}"'


def write(path: Path, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    result: dict[bytes, bytes] = {}
    for name, value in headers:
        assert name not in result, f"duplicate header {name!r}"
        result[name] = value
    return result


# --------------------------------------------------------------------------------------------
# Pure decisions, no disk

INFO = FileInfo(size=1000, mtime_ns=MTIME_NS)
ETAG = etag_of(INFO)
TXT = StaticFile("a.txt", Representation("/srv/a.txt", INFO))
GZ_INFO = FileInfo(size=300, mtime_ns=MTIME_NS)
BR_INFO = FileInfo(size=200, mtime_ns=MTIME_NS)
BR = Representation("/srv/a.txt.br", BR_INFO, "br")
GZ = Representation("/srv/a.txt.gz", GZ_INFO, "gzip")
COMPRESSED = StaticFile("a.txt", TXT.identity, (BR, GZ))


def request(
    method: str = "GET",
    path: str = "/a.txt",
    headers: dict[str, str] | None = None,
    *,
    root_path: str = "",
    query_string: bytes = b"",
) -> StaticRequest:
    encoded = tuple(
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()
    )
    return StaticRequest(method, path, encoded, root_path, query_string)


def status_of(headers: dict[str, str], resource: StaticFile = TXT, method: str = "GET") -> int:
    return decide(request(method, headers=headers), resource).status


@pytest.mark.parametrize(
    ("route_path", "segments"),
    [
        ("/", ()),
        ("", ()),
        ("/a.txt", ("a.txt",)),
        ("//a//b/", ("a", "b")),
        ("/./a/./b", ("a", "b")),
        ("/%2e%2e/x", ("%2e%2e", "x")),
        ("/a%2fb", ("a%2fb",)),
        ("/a../b..", ("a..", "b..")),
        ("/ü/日本", ("ü", "日本")),
        ("/etc/passwd", ("etc", "passwd")),
        ("//etc/passwd", ("etc", "passwd")),
    ],
)
def test_split_path_keeps_ordinary_segments(route_path: str, segments: tuple[str, ...]) -> None:
    assert split_path(route_path) == segments


@pytest.mark.parametrize(
    "route_path",
    [
        "/..",
        "/../x",
        "../x",
        "/a/../../x",
        "/a/..",
        "/..\\x",
        "/a\\b",
        "\\\\server\\share",
        "/a.txt\x00",
        "/a\x00/b",
        "C:\\x",
        "/C:/x",
        "/c:",
        "/d:foo",
        "/.env",
        "/.git/config",
        "/a/.hidden/b",
        "/..%2f/../x",
    ],
)
def test_split_path_refuses_traversal_and_dotfiles(route_path: str) -> None:
    assert split_path(route_path) is None


def test_split_path_allows_dotfiles_but_never_dotdot_when_asked() -> None:
    assert split_path("/.well-known/x", allow_dotfiles=True) == (".well-known", "x")
    assert split_path("/../x", allow_dotfiles=True) is None


@pytest.mark.parametrize(
    ("scope", "route_path"),
    [
        ({"path": "/static/a.txt", "root_path": "/static"}, "/a.txt"),
        ({"path": "/static", "root_path": "/static"}, ""),
        ({"path": "/staticfoo/a", "root_path": "/static"}, "/staticfoo/a"),
        ({"path": "/other/a", "root_path": "/static"}, "/other/a"),
        ({"path": "/a.txt", "root_path": ""}, "/a.txt"),
        ({"path": "/a.txt"}, "/a.txt"),
    ],
)
def test_get_route_path_strips_root_path(scope: dict[str, Any], route_path: str) -> None:
    assert get_route_path(scope) == route_path


def test_is_inside_compares_components_not_string_prefixes() -> None:
    assert is_inside("/srv/static", "/srv/static")
    assert is_inside("/srv/static", "/srv/static/a/b")
    assert not is_inside("/srv/static", "/srv/static1/secret.txt")
    assert not is_inside("/srv/static", "/srv")
    assert not is_inside("/srv/static", "relative")


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        ("bytes=0-0", 1000, [(0, 1)]),
        ("bytes=0-499", 1000, [(0, 500)]),
        ("bytes=500-", 1000, [(500, 1000)]),
        ("bytes=-500", 1000, [(500, 1000)]),
        ("bytes=-5000", 1000, [(0, 1000)]),
        ("bytes=990-5000", 1000, [(990, 1000)]),
        ("bytes=0-999", 1000, [(0, 1000)]),
        ("BYTES=0-1", 1000, [(0, 2)]),
        ("bytes = 0-1", 1000, [(0, 2)]),
        ("bytes=0-1, ,5-6,", 1000, [(0, 2), (5, 7)]),
        ("bytes=0-1,\t5-6", 1000, [(0, 2), (5, 7)]),
        ("bytes=0-10,5-20", 1000, [(0, 21)]),
        ("bytes=0-9,10-19", 1000, [(0, 20)]),
        ("bytes=0-9,11-19", 1000, [(0, 10), (11, 20)]),
        ("bytes=500-599,0-99", 1000, [(500, 600), (0, 100)]),
        ("bytes=500-599,0-99,550-700", 1000, [(500, 701), (0, 100)]),
        ("bytes=0-0,-1", 1000, [(0, 1), (999, 1000)]),
        ("bytes=-100,900-", 1000, [(900, 1000)]),
        ("bytes=0-1,1000-", 1000, [(0, 2)]),
        ("bytes=0001-0002", 1000, [(1, 3)]),
        ("bytes=0-" + "9" * 5000, 1000, [(0, 1000)]),
        ("bytes=-" + "9" * 5000, 1000, [(0, 1000)]),
        ("bytes=" + "0" * 5000 + "1-1", 1000, [(1, 2)]),
    ],
)
def test_parse_range_satisfiable(value: str, size: int, expected: list[tuple[int, int]]) -> None:
    assert parse_range(value, size) == tuple(ByteRange(a, b) for a, b in expected)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("bytes=1000-", 1000),
        ("bytes=1000-2000,5000-", 1000),
        ("bytes=-0", 1000),
        ("bytes=" + "9" * 5000 + "-", 1000),
        ("bytes=0-", 0),
        ("bytes=-1", 0),
    ],
)
def test_parse_range_unsatisfiable_is_empty(value: str, size: int) -> None:
    assert parse_range(value, size) == ()


@pytest.mark.parametrize(
    "value",
    [
        "items=0-1",
        "bytes",
        "bytes=",
        "bytes=,",
        "bytes=abc",
        "bytes=5-1",
        "bytes=1-2-3",
        "bytes=--1",
        "bytes=-",
        "bytes=0x1-2",
        "bytes=1 -2",
        "bytes=+1-2",
        "bytes=\u0661-\u0662",
        "bytes=0-1;x",
        "bytes=0-1,5",
    ],
)
def test_parse_range_malformed_is_ignored(value: str) -> None:
    assert parse_range(value, 1000) is None


def test_parse_range_over_max_ranges_is_ignored() -> None:
    assert parse_range("bytes=0-0,2-2", 1000, max_ranges=2) is not None
    assert parse_range("bytes=0-0,2-2,4-4", 1000, max_ranges=2) is None
    hundred = "bytes=" + ",".join(f"{i * 2}-{i * 2}" for i in range(100))
    assert len(parse_range(hundred, 1000) or ()) == 100
    assert parse_range(hundred + ",999-999", 1000) is None


class LineBudgetExceeded(Exception):
    pass


def run_within_line_budget(function: Callable[[], T], budget: int) -> tuple[T, int]:
    """Call `function`, counting the lines it runs in trioserve._static; raise past `budget`.

    A count of executed lines, not a timer: deterministic on a loaded machine, and a quadratic
    loop fails as soon as it has run `budget` lines instead of running to the end.
    """
    package = str(Path(trioserve.__file__).parent / "_static")
    executed = 0

    def count_lines(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal executed
        if event == "line":
            executed += 1
            if executed > budget:
                raise LineBudgetExceeded(f"more than {budget} lines executed")
        return count_lines

    def in_package(frame: FrameType, event: str, arg: object) -> Any:
        return count_lines if frame.f_code.co_filename.startswith(package) else None

    previous = sys.gettrace()
    sys.settrace(in_package)
    try:
        result = function()
    finally:
        sys.settrace(previous)
    return result, executed


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("overlapping", [True, False])
def test_parse_range_coalesces_many_ranges_without_quadratic_work(
    overlapping: bool, reverse: bool
) -> None:
    # CVE-2025-62727: thousands of ranges, overlapping (all merge into one) or disjoint (none
    # merge). parse_range runs about 30 lines per range; a quadratic merge would need millions
    # for 5000 ranges and stops at the budget.
    count = 5000
    order = range(count - 1, -1, -1) if reverse else range(count)
    if overlapping:
        value = "bytes=" + ",".join(f"{i}-{i + 1}" for i in order)
        expected = (ByteRange(0, count + 1),)
    else:
        value = "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in order)
        expected = tuple(ByteRange(2 * i, 2 * i + 1) for i in order)
    merged, executed = run_within_line_budget(
        lambda: parse_range(value, 10**9, max_ranges=count), budget=100 * count
    )
    assert merged == expected
    assert executed > count  # the counter saw the parse (more than one line per range)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        ("gzip", {"gzip": 1.0}),
        ("gzip, deflate, br", {"gzip": 1.0, "deflate": 1.0, "br": 1.0}),
        ("gzip;q=0", {"gzip": 0.0}),
        ("gzip; q=0.5, br;Q=1.000", {"gzip": 0.5, "br": 1.0}),
        ("x-gzip", {"gzip": 1.0}),
        ("GZip;q=0.25", {"gzip": 0.25}),
        ("*;q=0.1, identity", {"*": 0.1, "identity": 1.0}),
        ("gzip;q=2, br;q=0.0001, deflate;q=abc, zstd", {"zstd": 1.0}),
        ("gzip;q=0.3, gzip;q=1", {"gzip": 0.3}),
        ("gzip;level=9", {"gzip": 1.0}),
    ],
)
def test_parse_accept_encoding(value: str, expected: dict[str, float]) -> None:
    assert parse_accept_encoding(value) == expected


@pytest.mark.parametrize(
    ("accept_encoding", "encoding"),
    [
        (None, None),
        ("", None),
        ("gzip, deflate, br", "br"),
        ("gzip", "gzip"),
        ("x-gzip", "gzip"),
        ("GZIP", "gzip"),
        ("br", "br"),
        ("br;q=0.5, gzip", "gzip"),
        ("br;q=0.5, gzip;q=0.5", "br"),
        ("gzip;q=0", None),
        ("br;q=0, gzip;q=0", None),
        ("*", "br"),
        ("*;q=0", None),
        ("br;q=0, *", "gzip"),
        ("identity", None),
        ("gzip;q=0.5, identity;q=0.8", None),
        ("gzip;q=0.5", "gzip"),
        ("gzip;q=0.5, *;q=0.9", "br"),
        ("gzip;q=2", None),
        ("deflate", None),
    ],
)
def test_choose_representation_follows_q_values(
    accept_encoding: str | None, encoding: str | None
) -> None:
    assert choose_representation(COMPRESSED, accept_encoding).encoding == encoding


def test_choose_representation_without_siblings_is_identity() -> None:
    assert choose_representation(TXT, "br, gzip") is TXT.identity
    only_gzip = StaticFile("a.txt", TXT.identity, (GZ,))
    assert choose_representation(only_gzip, "br, gzip") is GZ
    assert choose_representation(only_gzip, "br") is TXT.identity


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("a.txt", "text/plain; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("data.json", "application/json; charset=utf-8"),
        ("logo.svg", "image/svg+xml; charset=utf-8"),
        ("photo.png", "image/png"),
        ("archive.tar.gz", "application/gzip"),
        ("blob.gz", "application/gzip"),
        ("no-extension", "application/octet-stream"),
        ("weird.zzzunknown", "application/octet-stream"),
        ("data:text,html", "application/octet-stream"),
    ],
)
def test_content_type_for(name: str, content_type: str) -> None:
    assert content_type_for(name) == content_type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (LAST_MODIFIED, MTIME),
        ("Tuesday, 14-Nov-23 22:13:20 GMT", MTIME),
        ("Tue Nov 14 22:13:20 2023", MTIME),
        ("garbage", None),
        ("", None),
        ("Tue, 99 Foo 2023 99:99:99 GMT", None),
    ],
)
def test_parse_http_date(value: str, expected: int | None) -> None:
    assert parse_http_date(value) == expected


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    plan = decide(request(method), None)
    assert plan.status == 405
    assert plan.headers == (
        TEXT_PLAIN,
        (b"content-length", b"23"),
        (b"allow", b"GET, HEAD"),
    )
    assert plan.body == InlineBody(b"405 Method Not Allowed\n")


def test_nothing_found_gets_404() -> None:
    plan = decide(request(), None)
    assert (plan.status, plan.body) == (404, InlineBody(b"404 Not Found\n"))
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"14"))


def test_head_404_has_headers_but_no_body() -> None:
    plan = decide(request("HEAD"), None)
    assert (plan.status, plan.body) == (404, EmptyBody())
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"14"))


def test_file_gets_200_with_validators() -> None:
    plan = decide(request(), TXT)
    assert plan.status == 200
    assert plan.headers == (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"1000"),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", ETAG.encode()),
    )
    assert plan.body == WholeFile("/srv/a.txt", 1000)
    assert plan.file == TXT.identity


def test_etag_is_strong_and_built_from_mtime_ns_and_size() -> None:
    assert TXT.identity.etag == f'"{MTIME_NS:x}-3e8"'
    assert GZ.etag == f'"{MTIME_NS:x}-12c-gzip"'
    assert BR.etag != GZ.etag != TXT.identity.etag


def test_head_gets_the_same_headers_as_get_and_no_body() -> None:
    get, head = decide(request("GET"), TXT), decide(request("HEAD"), TXT)
    assert head.headers == get.headers
    assert head.body == EmptyBody()
    assert head.file == TXT.identity


def test_file_with_trailing_slash_is_404() -> None:
    assert decide(request(path="/a.txt/"), TXT).status == 404


def test_cache_control_goes_on_file_responses() -> None:
    cache = "public, max-age=31536000, immutable"
    for headers, status in [
        ({}, 200),
        ({"range": "bytes=0-1"}, 206),
        ({"if-none-match": "*"}, 304),
    ]:
        plan = decide(request(headers=headers), TXT, cache_control=cache)
        assert plan.status == status
        assert header_map(plan.headers)[b"cache-control"] == cache.encode()
    assert b"cache-control" not in header_map(decide(request(), None, cache_control=cache).headers)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"if-none-match": ETAG}, 304),
        ({"if-none-match": "W/" + ETAG}, 304),
        ({"if-none-match": "*"}, 304),
        ({"if-none-match": f'"nope", {ETAG}'}, 304),
        ({"if-none-match": '"a,b", W/"x", ' + ETAG}, 304),
        ({"if-none-match": '"nope"'}, 200),
        ({"if-none-match": ETAG[1:-1]}, 200),
        ({"if-modified-since": LAST_MODIFIED}, 304),
        ({"if-modified-since": LATER}, 304),
        ({"if-modified-since": EARLIER}, 200),
        ({"if-modified-since": "not a date"}, 200),
        ({"if-none-match": '"nope"', "if-modified-since": LATER}, 200),
        ({"if-none-match": ETAG, "if-modified-since": EARLIER}, 304),
        ({"if-match": ETAG}, 200),
        ({"if-match": "*"}, 200),
        ({"if-match": f'"x", {ETAG}'}, 200),
        ({"if-match": '"nope"'}, 412),
        ({"if-match": "W/" + ETAG}, 412),
        ({"if-unmodified-since": EARLIER}, 412),
        ({"if-unmodified-since": LAST_MODIFIED}, 200),
        ({"if-unmodified-since": "garbage"}, 200),
        ({"if-match": ETAG, "if-unmodified-since": EARLIER}, 200),
        ({"if-match": '"nope"', "if-none-match": ETAG}, 412),
        ({"if-unmodified-since": EARLIER, "if-none-match": ETAG}, 412),
        ({"if-match": ETAG, "if-none-match": ETAG}, 304),
        ({"if-none-match": ETAG, "range": "bytes=0-1"}, 304),
    ],
)
def test_preconditions_in_rfc_9110_order(headers: dict[str, str], status: int) -> None:
    assert status_of(headers) == status
    assert status_of(headers, method="HEAD") == status


def test_304_carries_validators_and_no_body_headers() -> None:
    plan = decide(
        request(headers={"if-none-match": ETAG, "accept-encoding": "identity"}),
        COMPRESSED,
        cache_control="no-cache",
    )
    assert plan.status == 304
    assert plan.headers == (
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", ETAG.encode()),
        (b"cache-control", b"no-cache"),
        (b"vary", b"Accept-Encoding"),
    )
    assert plan.body == EmptyBody()
    assert plan.file is None


def test_304_compares_against_the_chosen_representation() -> None:
    gzip_tag = etag_of(GZ_INFO, "-gzip")
    assert status_of({"if-none-match": gzip_tag, "accept-encoding": "gzip"}, COMPRESSED) == 304
    assert status_of({"if-none-match": gzip_tag}, COMPRESSED) == 200


def test_412_is_a_small_text_response() -> None:
    plan = decide(request(headers={"if-match": '"nope"'}), TXT)
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"24"))
    assert plan.body == InlineBody(b"412 Precondition Failed\n")


def test_single_range_gets_206_with_content_range() -> None:
    plan = decide(request(headers={"range": "bytes=10-19"}), TXT)
    assert plan.status == 206
    assert plan.headers == (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"10"),
        (b"content-range", b"bytes 10-19/1000"),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", ETAG.encode()),
    )
    assert plan.body == FileRange("/srv/a.txt", ByteRange(10, 20))


def test_unsatisfiable_range_plans_416_with_the_size() -> None:
    plan = decide(request(headers={"range": "bytes=1000-"}), TXT)
    assert plan.status == 416
    assert plan.headers == (
        TEXT_PLAIN,
        (b"content-length", b"36"),
        (b"content-range", b"bytes */1000"),
    )
    assert plan.body == InlineBody(b"416 Requested Range Not Satisfiable\n")


@pytest.mark.parametrize(
    "value", ["bytes=5-1", "bytes=abc", "lines=1-2", "bytes=" + ",".join(["0-0"] * 101)]
)
def test_malformed_or_excessive_range_is_ignored(value: str) -> None:
    plan = decide(request(headers={"range": value}), TXT)
    assert (plan.status, plan.body) == (200, WholeFile("/srv/a.txt", 1000))


def test_max_ranges_is_configurable() -> None:
    headers = {"range": "bytes=0-0,5-5,9-9"}
    assert decide(request(headers=headers), TXT, max_ranges=3).status == 206
    assert decide(request(headers=headers), TXT, max_ranges=2).status == 200


def test_range_is_only_for_get() -> None:
    plan = decide(request("HEAD", headers={"range": "bytes=0-1"}), TXT)
    assert (plan.status, plan.body) == (200, EmptyBody())
    assert header_map(plan.headers)[b"content-length"] == b"1000"


@pytest.mark.parametrize(
    ("if_range", "status"),
    [
        (ETAG, 206),
        ("W/" + ETAG, 200),
        ('"other"', 200),
        (LAST_MODIFIED, 206),
        (LATER, 200),
        (EARLIER, 200),
        ("garbage", 200),
    ],
)
def test_if_range_mismatch_serves_the_full_file(if_range: str, status: int) -> None:
    assert status_of({"range": "bytes=0-1", "if-range": if_range}) == status


def test_several_ranges_get_multipart_with_exact_length() -> None:
    plan = decide(request(headers={"range": "bytes=0-9,-10"}), TXT, boundary="BOUNDARY")
    assert plan.status == 206
    body = plan.body
    assert isinstance(body, MultipartRanges)
    part_type = b"Content-Type: text/plain; charset=utf-8\r\n"
    assert [part.head for part in body.parts] == [
        b"--BOUNDARY\r\n" + part_type + b"Content-Range: bytes 0-9/1000\r\n\r\n",
        b"\r\n--BOUNDARY\r\n" + part_type + b"Content-Range: bytes 990-999/1000\r\n\r\n",
    ]
    assert [part.range for part in body.parts] == [ByteRange(0, 10), ByteRange(990, 1000)]
    assert body.closing == b"\r\n--BOUNDARY--\r\n"
    length = sum(len(part.head) + 10 for part in body.parts) + len(body.closing)
    assert plan.headers == (
        (b"content-type", b"multipart/byteranges; boundary=BOUNDARY"),
        (b"content-length", str(length).encode()),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", ETAG.encode()),
    )


def test_multipart_boundary_is_random_by_default() -> None:
    first = decide(request(headers={"range": "bytes=0-0,5-5"}), TXT)
    second = decide(request(headers={"range": "bytes=0-0,5-5"}), TXT)
    assert header_map(first.headers)[b"content-type"] != header_map(second.headers)[b"content-type"]


def test_precompressed_sibling_is_served_with_its_own_validators() -> None:
    plan = decide(request(headers={"accept-encoding": "gzip"}), COMPRESSED)
    assert plan.status == 200
    assert plan.headers == (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"300"),
        (b"content-encoding", b"gzip"),
        (b"accept-ranges", b"bytes"),
        (b"last-modified", LAST_MODIFIED.encode()),
        (b"etag", etag_of(GZ_INFO, "-gzip").encode()),
        (b"vary", b"Accept-Encoding"),
    )
    assert plan.body == WholeFile("/srv/a.txt.gz", 300)


def test_vary_is_sent_whenever_a_sibling_exists() -> None:
    plan = decide(request(headers={"accept-encoding": "identity"}), COMPRESSED)
    assert header_map(plan.headers)[b"vary"] == b"Accept-Encoding"
    assert b"content-encoding" not in header_map(plan.headers)
    assert b"vary" not in header_map(decide(request(), TXT).headers)


def test_ranges_apply_to_the_chosen_representation() -> None:
    plan = decide(request(headers={"accept-encoding": "br", "range": "bytes=100-"}), COMPRESSED)
    assert plan.status == 206
    assert header_map(plan.headers)[b"content-range"] == b"bytes 100-199/200"
    assert plan.body == FileRange("/srv/a.txt.br", ByteRange(100, 200))
    too_far = decide(request(headers={"accept-encoding": "br", "range": "bytes=500-"}), COMPRESSED)
    assert header_map(too_far.headers)[b"content-range"] == b"bytes */200"


@pytest.mark.parametrize(
    ("root_path", "route_path", "query_string", "location"),
    [
        ("", "/sub", b"", "/sub/"),
        ("", "/a/b", b"", "/a/b/"),
        ("/static", "/sub", b"", "/static/sub/"),
        ("/static", "", b"", "/static/"),
        ("", "", b"", "/"),
        ("", "//evil.com", b"", "/evil.com/"),
        ("", "///evil.com", b"", "/evil.com/"),
        ("//", "//evil.com/./x", b"", "/evil.com/x/"),
        ("", "/sub", b"a=1&b=%20", "/sub/?a=1&b=%20"),
        ("", "/sub", b"x=\r\n y#z", "/sub/?x=%0D%0A%20y%23z"),
        ("", "/a b/\u00fc", b"", "/a%20b/%C3%BC/"),
        ("", "/\\evil.com", b"", "/%5Cevil.com/"),
        ("", "/a?b#c", b"", "/a%3Fb%23c/"),
    ],
)
def test_directory_without_slash_redirects_to_one_leading_slash(
    root_path: str, route_path: str, query_string: bytes, location: str
) -> None:
    plan = decide(
        request(path=route_path, root_path=root_path, query_string=query_string),
        Directory("/srv/sub"),
    )
    assert plan.status == 301
    assert plan.headers == ((b"location", location.encode()), (b"content-length", b"0"))
    assert plan.body == EmptyBody()
    assert not location.startswith("//")


def test_directory_with_slash_serves_its_index_file() -> None:
    index = StaticFile("index.html", Representation("/srv/sub/index.html", INFO))
    plan = decide(request(path="/sub/"), Directory("/srv/sub", index=index))
    assert plan.status == 200
    assert header_map(plan.headers)[b"content-type"] == b"text/html; charset=utf-8"
    assert plan.body == WholeFile("/srv/sub/index.html", 1000)


def test_directory_with_slash_and_no_index_or_listing_is_404() -> None:
    assert decide(request(path="/sub/"), Directory("/srv/sub")).status == 404


def test_directory_listing_is_html() -> None:
    entries = (DirEntry("d", is_dir=True), DirEntry("f.txt"))
    plan = decide(request(path="/sub/"), Directory("/srv/sub", entries=entries))
    assert plan.status == 200
    assert isinstance(plan.body, InlineBody)
    assert plan.headers == (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(plan.body.data)).encode()),
    )
    assert b'<a href="d/">d/</a>' in plan.body.data
    assert b'<a href="../">../</a>' in plan.body.data
    root = decide(request(path="/"), Directory("/srv", entries=entries))
    assert isinstance(root.body, InlineBody)
    assert b"../" not in root.body.data
    head = decide(request("HEAD", path="/sub/"), Directory("/srv/sub", entries=entries))
    assert (head.headers, head.body) == (plan.headers, EmptyBody())


def test_listing_escapes_names_and_quotes_hrefs() -> None:
    page = render_listing(
        "/<b>/",
        [
            DirEntry("<script>.txt"),
            DirEntry('a"b&c.txt'),
            DirEntry("javascript:alert(1)"),
            DirEntry("sp ace", is_dir=True),
            DirEntry("\udcff.bin"),
        ],
        parent=True,
    ).decode()
    assert "<title>Index of /&lt;b&gt;/</title>" in page
    assert '<a href="%3Cscript%3E.txt">&lt;script&gt;.txt</a>' in page
    assert '<a href="a%22b%26c.txt">a&quot;b&amp;c.txt</a>' in page
    assert '<a href="javascript%3Aalert%281%29">javascript:alert(1)</a>' in page
    assert '<a href="sp%20ace/">sp ace/</a>' in page
    assert '<a href="%FF.bin">' in page
    assert "<script>" not in page


# --------------------------------------------------------------------------------------------
# Path resolution on a real tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = Path(os.path.realpath(tmp_path))
    root = base / "static"
    write(base / "outside.txt", b"outside")
    write(base / "outside_dir" / "f.txt", b"outside dir")
    write(base / "static1" / "secret.txt", b"secret")
    write(root / "a.txt", b"hello")
    write(root / "sub" / "b.txt", b"bee")
    write(root / "%2e%2e" / "x.txt", b"literal dots")
    write(root / "a%2fb.txt", b"literal slash")
    write(root / "etc" / "passwd", b"not the real one")
    write(root / ".env", b"SECRET=1")
    write(root / ".git" / "config", b"[core]")
    (root / "link-out.txt").symlink_to(base / "outside.txt")
    (root / "link-in.txt").symlink_to("a.txt")
    (root / "dir-out").symlink_to(base / "outside_dir")
    (root / "sibling-prefix.txt").symlink_to(base / "static1" / "secret.txt")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    os.mkfifo(root / "fifo")
    return root


@pytest.mark.parametrize(
    ("route_path", "expected"),
    [
        ("/a.txt", "a.txt"),
        ("/sub/b.txt", "sub/b.txt"),
        ("/sub/./b.txt", "sub/b.txt"),
        ("/", "."),
        ("/sub", "sub"),
        ("/link-in.txt", "a.txt"),
        ("/%2e%2e/x.txt", "%2e%2e/x.txt"),
        ("/a%2fb.txt", "a%2fb.txt"),
        ("//etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("/../outside.txt", None),
        ("/..", None),
        ("../static1/secret.txt", None),
        ("/a/../../outside.txt", None),
        ("/sub/../../outside.txt", None),
        ("/%2e%2e/outside.txt", None),
        ("/%2e%2e%2foutside.txt", None),
        ("/..%2foutside.txt", None),
        ("/..\\outside.txt", None),
        ("/sub\\..\\..\\outside.txt", None),
        ("/a.txt\x00", None),
        ("C:\\outside.txt", None),
        ("/C:/outside.txt", None),
        ("/link-out.txt", None),
        ("/dir-out", None),
        ("/dir-out/f.txt", None),
        ("/sibling-prefix.txt", None),
        ("/loop1", None),
        ("/fifo", None),
        ("/a.txt/x", None),
        ("/missing.txt", None),
        ("/" + "a" * 300, None),
        ("/" + "a/" * 3000, None),
        ("/.env", None),
        ("/.git/config", None),
        ("/\udcff", None),
        ("/" + chr(0xD800), None),
    ],
)
def test_resolve_path_stays_inside_the_root(
    tree: Path, route_path: str, expected: str | None
) -> None:
    resolved = resolve_path(str(tree), route_path)
    if expected is None:
        assert resolved is None
    else:
        assert resolved is not None
        assert os.path.relpath(resolved.real, tree) == expected


def test_resolve_path_allows_dotfiles_when_asked(tree: Path) -> None:
    resolved = resolve_path(str(tree), "/.git/config", allow_dotfiles=True)
    assert resolved is not None
    assert resolved.info == FileInfo.from_stat(os.stat(tree / ".git" / "config"))
    assert resolve_path(str(tree), "/../outside.txt", allow_dotfiles=True) is None


def test_resolve_path_reports_stat_data(tree: Path) -> None:
    resolved = resolve_path(str(tree), "/a.txt")
    assert resolved is not None
    assert (resolved.info.size, resolved.info.mtime_ns, resolved.info.is_dir) == (
        5,
        MTIME_NS,
        False,
    )
    assert resolved.segments == ("a.txt",)
    assert resolved.candidate == str(tree / "a.txt")
    directory = resolve_path(str(tree), "/sub/")
    assert directory is not None
    assert directory.info.is_dir


def test_load_resource_finds_regular_siblings_only(tree: Path) -> None:
    write(tree / "app.js", b"identity")
    write(tree / "app.js.gz", b"gzipped")
    (tree / "app.js.br").mkdir()
    resource = load_resource(str(tree), "/app.js")
    assert isinstance(resource, StaticFile)
    assert resource.name == "app.js"
    assert [(rep.path, rep.encoding) for rep in resource.encoded] == [
        (str(tree / "app.js.gz"), "gzip")
    ]


def test_load_resource_ignores_a_sibling_symlinked_outside_the_root(tree: Path) -> None:
    # CVE-2024-42367: aiohttp followed a .gz symlink out of the root.
    write(tree / "app.js", b"identity")
    (tree / "app.js.gz").symlink_to(tree.parent / "outside.txt")
    (tree / "app.js.br").symlink_to(tree / "a.txt")
    resource = load_resource(str(tree), "/app.js")
    assert isinstance(resource, StaticFile)
    assert [(rep.path, rep.encoding) for rep in resource.encoded] == [(str(tree / "a.txt"), "br")]


def test_load_resource_looks_up_the_index_only_for_a_slash_url(tree: Path) -> None:
    write(tree / "sub" / "index.html", b"<p>index</p>")
    with_slash = load_resource(str(tree), "/sub/")
    assert isinstance(with_slash, Directory)
    assert with_slash.index is not None
    assert with_slash.index.name == "index.html"
    assert load_resource(str(tree), "/sub") == Directory(str(tree / "sub"))
    assert load_resource(str(tree), "/sub/", index=None) == Directory(str(tree / "sub"))


def test_load_resource_ignores_an_index_symlinked_outside_the_root(tree: Path) -> None:
    (tree / "sub" / "index.html").symlink_to(tree.parent / "outside.txt")
    assert load_resource(str(tree), "/sub/") == Directory(str(tree / "sub"))


def test_list_directory_sorts_and_hides_what_cannot_be_served(tree: Path) -> None:
    (tree / "sub" / "link-in").symlink_to(tree / "a.txt")
    (tree / "sub" / "link-out").symlink_to(tree.parent / "outside.txt")
    write(tree / "sub" / "z" / "x", b"")
    write(tree / "sub" / ".hidden", b"")
    write(tree / "sub" / "back\\slash", b"")
    os.mkfifo(tree / "sub" / "pipe")
    assert list_directory(str(tree), str(tree / "sub")) == (
        DirEntry("z", is_dir=True),
        DirEntry("b.txt"),
        DirEntry("link-in"),
    )
    with_dots = list_directory(str(tree), str(tree / "sub"), allow_dotfiles=True)
    assert DirEntry(".hidden") in with_dots


def test_list_directory_omits_directory_symlinks_leaving_the_root(tree: Path) -> None:
    names = [entry.name for entry in list_directory(str(tree), str(tree))]
    assert "dir-out" not in names
    assert "link-out.txt" not in names
    assert "sibling-prefix.txt" not in names
    assert "%2e%2e" in names
    assert "loop1" not in names


# --------------------------------------------------------------------------------------------
# The ASGI app


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
        (b"content-length", b"36"),
        (b"content-range", b"bytes */12"),
    ]
    assert response.body == b"416 Requested Range Not Satisfiable\n"


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
        ("//evil.com/..", "", b"", None),
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
PURE_MODULES = ("_decide", "_headers", "_listing", "_paths", "_plan")


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
        ["trioserve", "trioserve._static", *(f"trioserve._static.{name}" for name in PURE_MODULES)]
    )
    assert third_party == ""


def test_response_plan_is_frozen() -> None:
    plan = decide(request(), TXT)
    assert isinstance(plan, ResponsePlan)
    with pytest.raises(AttributeError):
        plan.status = 500  # type: ignore[misc]
