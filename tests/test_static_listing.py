"""trioserve._static._listing: what a directory listing shows, and how."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from trioserve._static import DirEntry, list_directory, render_listing
from trioserve._static._listing import (
    human_size,
    parse_sort,
    render_listing_json,
    render_listing_text,
    sort_entries,
)

from .static_helpers import MTIME, make_tree, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


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
    assert '<a href="../">../</a>' in page
    assert '<a href="%FF.bin">' in page
    assert "<script>" not in page


def test_list_directory_sorts_and_hides_what_cannot_be_served(tree: Path) -> None:
    (tree / "sub" / "link-in").symlink_to(tree / "a.txt")
    (tree / "sub" / "link-out").symlink_to(tree.parent / "outside.txt")
    write(tree / "sub" / "z" / "x", b"")
    write(tree / "sub" / ".hidden", b"")
    write(tree / "sub" / "back\\slash", b"")
    os.mkfifo(tree / "sub" / "pipe")
    listed = list_directory(str(tree), str(tree / "sub"))
    assert [(entry.name, entry.is_dir, entry.size) for entry in listed] == [
        ("z", True, 0),
        ("b.txt", False, 3),
        ("link-in", False, 5),  # the size of the file it points to
    ]
    assert listed[1].mtime == MTIME
    with_dots = list_directory(str(tree), str(tree / "sub"), allow_dotfiles=True)
    assert ".hidden" in [entry.name for entry in with_dots]


def test_list_directory_omits_directory_symlinks_leaving_the_root(tree: Path) -> None:
    names = [entry.name for entry in list_directory(str(tree), str(tree))]
    assert "dir-out" not in names
    assert "link-out.txt" not in names
    assert "sibling-prefix.txt" not in names
    assert "%2e%2e" in names
    assert "loop1" not in names


def test_listing_is_a_table_for_phones_and_dark_mode() -> None:
    entries = [
        DirEntry("docs", is_dir=True, mtime=MTIME),
        DirEntry("a.txt", size=1536, mtime=MTIME),
    ]
    page = render_listing("/x/", entries, parent=False).decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "prefers-color-scheme:dark" in page
    assert "<script" not in page
    assert '<td class="size">1.5 KiB</td>' in page
    assert '<td class="size">-</td>' in page  # a directory has no size
    assert '<time datetime="2023-11-14T22:13:20Z">2023-11-14 22:13</time>' in page
    assert '<a href="../">' not in page


@pytest.mark.parametrize(
    ("sort", "descending", "links"),
    [
        (
            "name",
            False,
            ["sort=name&amp;order=desc", "sort=size&amp;order=asc", "sort=time&amp;order=asc"],
        ),
        (
            "name",
            True,
            ["sort=name&amp;order=asc", "sort=size&amp;order=asc", "sort=time&amp;order=asc"],
        ),
        (
            "size",
            False,
            ["sort=name&amp;order=asc", "sort=size&amp;order=desc", "sort=time&amp;order=asc"],
        ),
    ],
)
def test_column_links_sort_and_flip_the_order(
    sort: str, descending: bool, links: list[str]
) -> None:
    page = render_listing("/", [], parent=False, sort=sort, descending=descending).decode()
    assert [f'href="?{link}"' in page for link in links] == [True, True, True]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", ("name", False)),
        (b"sort=size&order=desc", ("size", True)),
        (b"sort=time", ("time", False)),
        (b"order=desc", ("name", True)),
        (b"sort=%3Cscript%3E", ("name", False)),
        (b"sort=size&sort=time", ("size", False)),
    ],
)
def test_parse_sort(query: bytes, expected: tuple[str, bool]) -> None:
    assert parse_sort(query) == expected


def test_sort_keeps_directories_first_and_breaks_ties_by_name() -> None:
    entries = [
        DirEntry("b", size=1),
        DirEntry("a", size=1),
        DirEntry("z", is_dir=True),
        DirEntry("c", size=0),
    ]
    assert [e.name for e in sort_entries(entries, "size", descending=True)] == ["z", "a", "b", "c"]
    assert [e.name for e in sort_entries(entries, "name", descending=True)] == ["z", "c", "b", "a"]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (10 * 1024, "10 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**4, "3.0 TiB"),
        (2000 * 1024**5, "2000 PiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_json_and_text_listings_keep_odd_names_safe() -> None:
    entries = [DirEntry("a\nb", size=1), DirEntry("\udcff.bin", size=2), DirEntry("d", is_dir=True)]
    assert render_listing_text(entries) == "a\\nb\n\ufffd\ufffd\ufffd.bin\nd/\n".encode()
    listing = json.loads(render_listing_json("/", entries))
    assert [entry["url"] for entry in listing["entries"]] == ["a%0Ab", "%FF.bin", "d/"]


def test_ten_thousand_entries_are_listed_and_rendered_well_under_a_second(tmp_path: Path) -> None:
    seed = write(tmp_path / "seed.txt", b"x" * 100)
    for n in range(10_000 - 1):  # hard links: creating 10,000 files is slow on some filesystems
        os.link(seed, tmp_path / f"file-{n:05d}.txt")
    started = time.perf_counter()
    entries = list_directory(str(tmp_path), str(tmp_path))
    page = render_listing("/", sort_entries(entries, "size", descending=True), parent=False)
    elapsed = time.perf_counter() - started
    assert len(entries) == 10_000
    assert page.count(b"<tr>") == 10_001  # the head row and one per entry
    # Typically ~0.1 s; the bound leaves room for a loaded CI machine, not for a quadratic step.
    assert elapsed < 1.0
