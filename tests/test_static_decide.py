"""trioserve._static._decide: the pure decision, with no disk."""

from __future__ import annotations

import json

import pytest

from trioserve._static import (
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
    StaticRequest,
    WholeFile,
    choose_representation,
    decide,
)

from .static_helpers import EARLIER, LAST_MODIFIED, LATER, MTIME_NS, TEXT_PLAIN, etag_of, header_map

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


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    plan = decide(request(method), None)
    assert plan.status == 405
    assert plan.headers == (
        TEXT_PLAIN,
        (b"content-length", b"23"),
        (b"vary", b"Accept"),
        (b"allow", b"GET, HEAD"),
    )
    assert plan.body == InlineBody(b"405 Method Not Allowed\n")


def test_nothing_found_gets_404() -> None:
    plan = decide(request(), None)
    assert (plan.status, plan.body) == (404, InlineBody(b"404 Not Found\n"))
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"14"), (b"vary", b"Accept"))


def test_head_404_has_headers_but_no_body() -> None:
    plan = decide(request("HEAD"), None)
    assert (plan.status, plan.body) == (404, EmptyBody())
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"14"), (b"vary", b"Accept"))


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
    assert plan.headers == (TEXT_PLAIN, (b"content-length", b"24"), (b"vary", b"Accept"))
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
        (b"content-length", b"26"),
        (b"vary", b"Accept"),
        (b"content-range", b"bytes */1000"),
    )
    assert plan.body == InlineBody(b"416 Range Not Satisfiable\n")


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
    # No Accept-Ranges on a coded representation (ranges come from the identity file).
    assert plan.headers == (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"300"),
        (b"content-encoding", b"gzip"),
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


@pytest.mark.parametrize("accept_encoding", ["br", "gzip", "zstd, br, gzip", "*"])
def test_range_request_is_answered_from_the_identity_file(accept_encoding: str) -> None:
    plan = decide(
        request(headers={"accept-encoding": accept_encoding, "range": "bytes=100-"}), COMPRESSED
    )
    headers = header_map(plan.headers)
    assert plan.status == 206
    assert headers[b"content-range"] == b"bytes 100-999/1000"
    assert b"content-encoding" not in headers
    assert headers[b"etag"] == ETAG.encode()
    assert headers[b"vary"] == b"Accept-Encoding"
    assert plan.body == FileRange("/srv/a.txt", ByteRange(100, 1000))
    too_far = decide(
        request(headers={"accept-encoding": accept_encoding, "range": "bytes=5000-"}), COMPRESSED
    )
    assert header_map(too_far.headers)[b"content-range"] == b"bytes */1000"


def test_multipart_ranges_never_carry_a_content_encoding() -> None:
    plan = decide(
        request(headers={"accept-encoding": "gzip", "range": "bytes=0-0,5-5"}),
        COMPRESSED,
        boundary="B",
    )
    assert plan.status == 206
    assert isinstance(plan.body, MultipartRanges)
    assert plan.body.path == "/srv/a.txt"
    assert b"content-encoding" not in header_map(plan.headers)


def test_if_range_with_the_encoded_tag_gets_the_whole_encoded_file() -> None:
    # The client's cached copy was the gzip one: its range cannot be resumed from identity bytes.
    headers = {
        "accept-encoding": "gzip",
        "range": "bytes=100-",
        "if-range": etag_of(GZ_INFO, "-gzip"),
    }
    plan = decide(request(headers=headers), COMPRESSED)
    assert plan.status == 200
    assert header_map(plan.headers)[b"content-encoding"] == b"gzip"
    assert plan.body == WholeFile("/srv/a.txt.gz", 300)


def test_invalid_range_header_keeps_the_negotiated_encoding() -> None:
    plan = decide(request(headers={"accept-encoding": "gzip", "range": "lines=1-2"}), COMPRESSED)
    assert (plan.status, plan.body) == (200, WholeFile("/srv/a.txt.gz", 300))


def test_zst_sibling_is_preferred_on_a_tie() -> None:
    zst = Representation("/srv/a.txt.zst", FileInfo(size=250, mtime_ns=MTIME_NS), "zstd")
    file = StaticFile("a.txt", TXT.identity, (zst, BR, GZ))
    assert choose_representation(file, "gzip, br, zstd") is zst
    assert choose_representation(file, "gzip, br") is BR
    assert choose_representation(file, "zstd;q=0.5, gzip") is GZ


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


LISTED = (
    DirEntry("d", is_dir=True, mtime=MTIME_NS // 10**9),
    DirEntry("big.txt", size=5 * 1024 * 1024, mtime=MTIME_NS // 10**9 - 60),
    DirEntry("a.txt", size=10, mtime=MTIME_NS // 10**9 + 60),
)


def test_directory_listing_is_html() -> None:
    plan = decide(request(path="/sub/"), Directory("/srv/sub", entries=LISTED))
    assert plan.status == 200
    assert isinstance(plan.body, InlineBody)
    assert plan.headers == (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(plan.body.data)).encode()),
        (b"vary", b"Accept"),
    )
    assert b'<a href="d/">d/</a>' in plan.body.data
    assert b'<a href="../">../</a>' in plan.body.data
    root = decide(request(path="/"), Directory("/srv", entries=LISTED))
    assert isinstance(root.body, InlineBody)
    assert b"../" not in root.body.data
    head = decide(request("HEAD", path="/sub/"), Directory("/srv/sub", entries=LISTED))
    assert (head.headers, head.body) == (plan.headers, EmptyBody())


@pytest.mark.parametrize(
    ("query", "names"),
    [
        (b"", ["d", "a.txt", "big.txt"]),
        (b"sort=name&order=desc", ["d", "big.txt", "a.txt"]),
        (b"sort=size&order=desc", ["d", "big.txt", "a.txt"]),
        (b"sort=size", ["d", "a.txt", "big.txt"]),
        (b"sort=time", ["d", "big.txt", "a.txt"]),
        (b"sort=time&order=desc", ["d", "a.txt", "big.txt"]),
        (b"sort=bogus&order=sideways", ["d", "a.txt", "big.txt"]),
    ],
)
def test_directory_listing_sorts_by_the_query_directories_first(
    query: bytes, names: list[str]
) -> None:
    plan = decide(
        request(path="/sub/", query_string=query, headers={"accept": "text/plain"}),
        Directory("/srv/sub", entries=LISTED),
    )
    assert isinstance(plan.body, InlineBody)
    assert plan.body.data.decode().splitlines() == [
        name + "/" if name == "d" else name for name in names
    ]


def test_directory_listing_as_json() -> None:
    plan = decide(
        request(path="/sub/", headers={"accept": "application/json"}),
        Directory("/srv/sub", entries=LISTED),
    )
    assert header_map(plan.headers)[b"content-type"] == b"application/json"
    assert isinstance(plan.body, InlineBody)
    listing = json.loads(plan.body.data)
    assert listing["path"] == "/sub/"
    assert listing["entries"][0] == {
        "name": "d",
        "type": "directory",
        "size": None,
        "mtime": "2023-11-14T22:13:20Z",
        "url": "d/",
    }
    assert listing["entries"][2] == {
        "name": "big.txt",
        "type": "file",
        "size": 5 * 1024 * 1024,
        "mtime": "2023-11-14T22:12:20Z",
        "url": "big.txt",
    }


def test_response_plan_is_frozen() -> None:
    plan = decide(request(), TXT)
    assert isinstance(plan, ResponsePlan)
    with pytest.raises(AttributeError):
        plan.status = 500  # type: ignore[misc]
