"""What REDbot (scripts/redbot.py) reports as BAD about trioserve's static files, one test each.

Each test states, over a real socket, the behaviour REDbot asks for (scripts/redbot.py runs
REDbot itself over a served site).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import HarnessServer, serving
from trioserve import StaticFiles

from .static_helpers import write

# Text that compresses well and is over the size compressed on the fly.
CSS_BYTES = "".join(f".rule-{i} {{ color: #{i:06x}; }}\n" for i in range(400)).encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HarnessServer]:
    write(tmp_path / "style.css", CSS_BYTES)  # compressed on the fly
    write(tmp_path / "app.js", CSS_BYTES)
    write(tmp_path / "app.js.gz", gzip.compress(CSS_BYTES, mtime=0))  # a precompressed sibling
    with serving(app=StaticFiles(tmp_path)) as srv:
        yield srv


def raw_get(url: str, headers: dict[str, str]) -> httpx.Response:
    # The bytes as sent: httpx would otherwise decode the body (and hide the coding).
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        response.read()
        return response


@pytest.mark.parametrize("path", ["/style.css", "/app.js"], ids=["on-the-fly", "precompressed"])
def test_ranges_advertised_on_a_compressed_response_are_of_that_coding(
    server: HarnessServer, path: str
) -> None:
    # REDbot's range check: the same request as the full one plus a Range. A 200 that advertises
    # byte ranges promises ranges of the representation it sent; either its 206 comes in the
    # same coding (a slice of the bytes sent), or the compressed 200 does not advertise ranges.
    url = server.url_for(path)
    full = raw_get(url, {"Accept-Encoding": "gzip"})
    assert full.status_code == 200
    assert full.headers["content-encoding"] == "gzip"
    partial = raw_get(url, {"Accept-Encoding": "gzip", "Range": "bytes=10-50"})
    assert partial.status_code == 206
    if full.headers.get("accept-ranges") == "bytes":
        assert partial.headers.get("content-encoding") == "gzip"
        assert partial.content == full.content[10:51]
