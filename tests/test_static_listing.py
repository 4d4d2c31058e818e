"""trioserve._static._listing: what a directory listing shows, and how."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trioserve._static import DirEntry, list_directory, render_listing

from .static_helpers import make_tree, write


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
    assert '<a href="%FF.bin">' in page
    assert "<script>" not in page


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
