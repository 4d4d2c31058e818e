"""trioserve._static._encoding and the decision's on-the-fly compression, with no disk."""

from __future__ import annotations

import pytest

from trioserve._static import (
    ByteRange,
    CompressedFile,
    FileInfo,
    FileRange,
    Representation,
    StaticFile,
    StaticRequest,
    WholeFile,
    decide,
)
from trioserve._static._encoding import Compression, choose_coding, is_compressible

from .static_helpers import MTIME_NS, etag_of, header_map

ALL = ("zstd", "br", "gzip")
CSS_INFO = FileInfo(size=5000, mtime_ns=MTIME_NS)
CSS = StaticFile("app.css", Representation("/srv/app.css", CSS_INFO))
WEAK = {coding: f'W/"{MTIME_NS:x}-{5000:x}.{coding}"' for coding in ALL}
ON = Compression(ALL, 1024)


def request(method: str = "GET", **headers: str) -> StaticRequest:
    encoded = tuple(
        (name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()
    )
    return StaticRequest(method, "/app.css", encoded)


@pytest.mark.parametrize(
    ("accept_encoding", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, br", "br"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("deflate, gzip, br, zstd", "zstd"),  # curl --compressed
        ("*", "zstd"),
        ("br;q=0.9, gzip", "gzip"),
        ("zstd;q=0, br;q=0, *", "gzip"),
        ("gzip;q=0.5, identity", None),
        ("*;q=0.5, identity", None),
        ("deflate, compress", None),
        ("gzip;q=0", None),
    ],
)
def test_coding_follows_q_values_then_server_order(
    accept_encoding: str | None, coding: str | None
) -> None:
    assert choose_coding(accept_encoding, ALL) == coding


def test_only_installed_codings_are_chosen() -> None:
    assert choose_coding("zstd, br, gzip", ("gzip",)) == "gzip"
    assert choose_coding("zstd, br", ("gzip",)) is None
    assert choose_coding("gzip", ()) is None


@pytest.mark.parametrize(
    ("content_type", "compressible"),
    [
        ("text/html; charset=utf-8", True),
        ("text/css; charset=utf-8", True),
        ("text/javascript; charset=utf-8", True),
        ("application/json", True),
        ("application/javascript; charset=utf-8", True),
        ("image/svg+xml; charset=utf-8", True),
        ("application/wasm", True),
        ("application/vnd.api+json", True),
        ("application/xml", True),
        ("text/event-stream", False),
        ("image/png", False),
        ("image/jpeg", False),
        ("font/woff2", False),
        ("application/gzip", False),
        ("application/octet-stream", False),
        ("video/mp4", False),
    ],
)
def test_compressible_types(content_type: str, compressible: bool) -> None:
    assert is_compressible(content_type) is compressible


def test_compressible_file_gets_a_compressed_plan() -> None:
    plan = decide(request(accept_encoding="gzip, br"), CSS, compression=ON)
    assert plan.status == 200
    # No Accept-Ranges on a coded representation (ranges come from the identity file).
    assert plan.headers == (
        (b"content-type", b"text/css; charset=utf-8"),
        (b"content-encoding", b"br"),
        (b"last-modified", b"Tue, 14 Nov 2023 22:13:20 GMT"),
        (b"etag", WEAK["br"].encode()),
        (b"vary", b"Accept-Encoding"),
    )
    assert plan.body == CompressedFile("/srv/app.css", 5000, "br")
    assert plan.file == CSS.identity


def test_head_gets_the_same_head_and_no_body() -> None:
    get = decide(request(accept_encoding="gzip"), CSS, compression=ON)
    head = decide(request("HEAD", accept_encoding="gzip"), CSS, compression=ON)
    assert (head.status, head.headers) == (200, get.headers)
    assert head.body == CompressedFile("/srv/app.css", 5000, "gzip", head=True)


def test_identity_keeps_its_strong_tag_and_gets_vary() -> None:
    plan = decide(request(), CSS, compression=ON)
    headers = header_map(plan.headers)
    assert headers[b"etag"] == etag_of(CSS_INFO).encode()
    assert headers[b"vary"] == b"Accept-Encoding"
    assert b"content-encoding" not in headers
    assert plan.body == WholeFile("/srv/app.css", 5000)


@pytest.mark.parametrize("coding", ALL)
def test_each_coding_has_its_own_tag_and_304(coding: str) -> None:
    tag = WEAK[coding]
    assert (
        decide(request(accept_encoding=coding, if_none_match=tag), CSS, compression=ON).status
        == 304
    )
    # The tag of another coding, or of identity, is a different representation: 200.
    for other in set(ALL) - {coding}:
        stale = decide(
            request(accept_encoding=coding, if_none_match=WEAK[other]), CSS, compression=ON
        )
        assert stale.status == 200
    plain = decide(
        request(accept_encoding=coding, if_none_match=etag_of(CSS_INFO)), CSS, compression=ON
    )
    assert plain.status == 200
    not_modified = decide(request(accept_encoding=coding, if_none_match=tag), CSS, compression=ON)
    assert header_map(not_modified.headers)[b"etag"] == tag.encode()
    assert header_map(not_modified.headers)[b"vary"] == b"Accept-Encoding"


def test_if_match_never_matches_a_weak_tag() -> None:
    plan = decide(request(accept_encoding="gzip", if_match=WEAK["gzip"]), CSS, compression=ON)
    assert plan.status == 412


def test_range_gets_the_identity_representation() -> None:
    plan = decide(
        request(accept_encoding="gzip, br, zstd", range="bytes=10-19"), CSS, compression=ON
    )
    assert plan.status == 206
    assert plan.body == FileRange("/srv/app.css", ByteRange(10, 20))
    assert b"content-encoding" not in header_map(plan.headers)


@pytest.mark.parametrize(
    ("name", "size", "compression"),
    [
        ("app.css", 1023, ON),  # under the threshold
        ("photo.png", 5000, ON),  # not compressible
        ("app.css", 5000, None),  # compression off
    ],
)
def test_no_compression_and_no_vary_when_it_does_not_apply(
    name: str, size: int, compression: Compression | None
) -> None:
    file = StaticFile(name, Representation(f"/srv/{name}", FileInfo(size, MTIME_NS)))
    plan = decide(request(accept_encoding="gzip"), file, compression=compression)
    assert isinstance(plan.body, WholeFile)
    headers = header_map(plan.headers)
    assert b"content-encoding" not in headers
    assert b"vary" not in headers


def test_threshold_is_inclusive() -> None:
    file = StaticFile("app.css", Representation("/srv/app.css", FileInfo(1024, MTIME_NS)))
    plan = decide(request(accept_encoding="gzip"), file, compression=ON)
    assert plan.body == CompressedFile("/srv/app.css", 1024, "gzip")


def test_a_precompressed_sibling_wins_over_compressing() -> None:
    gz = Representation("/srv/app.css.gz", FileInfo(900, MTIME_NS), "gzip")
    file = StaticFile("app.css", CSS.identity, (gz,))
    assert decide(request(accept_encoding="gzip, zstd"), file, compression=ON).body == WholeFile(
        "/srv/app.css.gz", 900
    )
    # A client that does not take the sibling's coding gets one produced on the fly.
    assert decide(request(accept_encoding="zstd"), file, compression=ON).body == CompressedFile(
        "/srv/app.css", 5000, "zstd"
    )
