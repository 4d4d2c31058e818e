"""trioserve._static._paths: URL paths mapped safely onto a real tree."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from trioserve._static import (
    Directory,
    FileInfo,
    StaticFile,
    get_route_path,
    is_inside,
    load_resource,
    resolve_path,
    split_path,
)

from .static_helpers import MTIME_NS, make_tree, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path)


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
        ("/docs/../index.html", ("index.html",)),
        ("/a/..", ()),
        ("/a/../", ()),
        ("/a/b/../../c", ("c",)),
        ("/a/./../b/./c/..", ("b",)),
        ("/a/b/../c/./d", ("a", "c", "d")),
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
        "/a/b/../../../x",
        "/./..",
        "/a/../..",
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
        "/.git/../a.txt",  # a refused segment refuses the path, even when ".." removes it
        "/a\\b/../c",
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
    ("route_path", "expected"),
    [
        ("/a.txt", "a.txt"),
        ("/sub/b.txt", "sub/b.txt"),
        ("/sub/./b.txt", "sub/b.txt"),
        ("/sub/../a.txt", "a.txt"),
        ("/etc/../sub/b.txt", "sub/b.txt"),
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
