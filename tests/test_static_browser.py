"""StaticFiles pages as a real browser renders them: headless Chromium's DOM (--dump-dom)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from harness import HarnessServer, serving
from trioserve import StaticFiles

from .static_helpers import write

# scripts/test-deps.sh installs it; a missing browser is a failure, not a skip.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _chromium_present() -> None:
    assert CHROMIUM is not None, (
        "needs Chromium: run scripts/test-deps.sh (Debian package chromium)"
    )


class _Rows(HTMLParser):
    """The text of each table row's cells, and the tags seen."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def render(url: str) -> str:
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return result.stdout.decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessServer]:
    root = tmp_path_factory.mktemp("site")
    write(root / "files" / "small.txt", b"s")
    write(root / "files" / "big.bin", bytes(3 * 1024 * 1024))
    write(root / "files" / "<b>bold.txt", b"x")
    write(root / "files" / "docs" / "a.txt", b"a")
    with serving(app=StaticFiles(root, autoindex=True)) as srv:
        yield srv


def test_listing_renders_as_a_table(server: HarnessServer) -> None:
    parser = _Rows()
    parser.feed(render(server.url_for("/files/")))
    names = [row[0] for row in parser.rows]
    assert names == ["Name ▲", "../", "docs/", "<b>bold.txt", "big.bin", "small.txt"]
    sizes = {row[0]: row[1] for row in parser.rows[2:]}
    assert sizes == {
        "docs/": "-",
        "<b>bold.txt": "1 B",
        "big.bin": "3.0 MiB",
        "small.txt": "1 B",
    }
    assert "b" not in parser.tags  # the name is text, not markup
    assert "script" not in parser.tags


def test_listing_sorted_by_size_descending(server: HarnessServer) -> None:
    parser = _Rows()
    parser.feed(render(server.url_for("/files/", sort="size", order="desc")))
    assert [row[0] for row in parser.rows[2:]] == [
        "docs/",
        "big.bin",
        "<b>bold.txt",
        "small.txt",
    ]
    assert parser.rows[0][1] == "Size ▼"


def test_error_page_renders_for_a_browser(server: HarnessServer) -> None:
    dom = render(server.url_for("/missing"))
    assert "<title>404 Not Found</title>" in dom
    assert "<h1>404 Not Found</h1>" in dom
