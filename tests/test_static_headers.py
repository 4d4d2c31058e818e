"""trioserve._static._headers: dates, ranges, Accept-Encoding, Content-Type."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest

import trioserve
from trioserve._static import (
    ByteRange,
    content_type_for,
    parse_accept_encoding,
    parse_http_date,
    parse_range,
)
from trioserve._static._headers import cache_control_for, parse_cache_control_rule

from .static_helpers import LAST_MODIFIED, MTIME

T = TypeVar("T")


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


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("no-cache", ("*", "no-cache")),
        ("public, max-age=60", ("*", "public, max-age=60")),
        ("max-age=60", ("*", "max-age=60")),
        ("*.html=no-cache", ("*.html", "no-cache")),
        (
            "/assets/*=public, max-age=31536000, immutable",
            ("/assets/*", "public, max-age=31536000, immutable"),
        ),
        ("index.html=no-store", ("index.html", "no-store")),
        ("*=max-age=5", ("*", "max-age=5")),
    ],
)
def test_cache_control_rule_or_bare_value(text: str, rule: tuple[str, str]) -> None:
    assert parse_cache_control_rule(text) == rule


RULES = (
    ("*.html", "no-cache"),
    ("/assets/*", "public, max-age=31536000, immutable"),
    ("/docs/*.pdf", "max-age=60"),
    ("*", "max-age=300"),
)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/index.html", "no-cache"),
        ("/assets/deep/index.html", "no-cache"),  # first match wins
        ("/assets/app.js", "public, max-age=31536000, immutable"),
        ("/assets/deep/app.js", "public, max-age=31536000, immutable"),
        ("/docs/a.pdf", "max-age=60"),
        ("/docs/sub/a.pdf", "max-age=60"),  # "*" crosses "/"
        ("/a.pdf", "max-age=300"),
        ("/x.HTML", "max-age=300"),  # case-sensitive, like URL paths
    ],
)
def test_cache_control_first_matching_rule_wins(path: str, value: str) -> None:
    assert cache_control_for(RULES, path) == value


def test_cache_control_without_a_match_is_none() -> None:
    assert cache_control_for((("*.css", "x"),), "/a.js") is None
    assert cache_control_for((), "/a.js") is None
