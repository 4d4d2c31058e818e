"""The static-file flags of the trioserve command: --compress, --cache-control rules,
--error-page, --spa-fallback, and the first-run hint; main(argv) in-process for usage errors,
real runs of ``python -m trioserve`` for what a client sees."""

from __future__ import annotations

import gzip
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from trioserve._cli import main

from .test_cli import stop

CSS = "body { color: #333; margin: 0 auto; }\n" * 200  # ~7.6 KB, compressible


def start_collecting(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start ``python -m trioserve``; the process, its URL and its lines up to the banner."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trioserve", "--port", "0", *args],
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    before: list[str] = []
    for _ in range(50):  # bounded: a handful of startup lines at most
        line = process.stderr.readline()
        if not line:
            break
        match = re.search(r"serving .* on (http://\S+) \(Ctrl-C to stop\)", line)
        if match:
            return process, match.group(1), [*before, line]
        before.append(line)
    process.kill()
    process.wait(10)
    raise AssertionError(f"trioserve did not announce its URL: {before}")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!DOCTYPE html><title>app</title>\n")
    (root / "404.html").write_text("<!DOCTYPE html><title>lost</title>\n")
    (root / "style.css").write_text(CSS)
    (root / "assets" / "app.css").write_text(CSS)
    (root / "page.html").write_text("<p>hello</p>\n")
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--error-page", "404"], "expected STATUS=PATH"),
        (["--error-page", "200=ok.html"], "the status must be 400 to 599"),
        (["--compress-min-size", "lots"], "not a size in bytes"),
        (["--compress-cache-size", "-1"], "must not be negative"),
        (["--cache-control", "*.html=bad\nvalue"], "not a valid header value"),
    ],
)
def test_bad_file_flags_are_one_clear_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], site: Path, argv: list[str], message: str
) -> None:
    status = main(["--root", str(site), *argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1, err
    assert err.startswith("trioserve: error: ")
    assert message in err


def test_the_file_flags_shape_what_a_client_gets(site: Path) -> None:
    process, url, _ = start_collecting(
        [
            "--root",
            str(site),
            "--cache-control",
            "*.html=no-cache",
            "--cache-control",
            "/assets/*=public, max-age=31536000, immutable",
            "--cache-control",
            "max-age=60",
            "--error-page",
            "404=404.html",
            "--spa-fallback",
            "index.html",
            "--compress-min-size",
            "1K",
        ],
        cwd=site,
    )
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            css = client.get("/style.css", headers={"accept-encoding": "gzip"})
            assert css.headers["content-encoding"] == "gzip"
            assert "accept-encoding" in css.headers["vary"].lower()
            assert css.text == CSS  # httpx decoded the gzip body
            assert css.headers["cache-control"] == "max-age=60"  # the bare value: every file
            page = client.get("/page.html")
            assert page.headers["cache-control"] == "no-cache"
            asset = client.get("/assets/app.css", headers={"accept-encoding": "identity"})
            assert "content-encoding" not in asset.headers
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            html = {"accept": "text/html"}
            spa = client.get("/users/7", headers=html)
            assert spa.status_code == 200
            assert spa.text == "<!DOCTYPE html><title>app</title>\n"
            lost = client.get("/missing.js", headers=html)
            assert lost.status_code == 404
            assert lost.text == "<!DOCTYPE html><title>lost</title>\n"
            problem = client.get("/missing.js", headers={"accept": "application/json"})
            assert problem.status_code == 404
            assert problem.headers["content-type"] == "application/problem+json"
            assert problem.json()["status"] == 404
    finally:
        status, _ = stop(process, signal.SIGINT)
    assert status == 0


def test_no_compress_and_the_threshold(site: Path) -> None:
    (site / "small.css").write_text("a { b: c }\n" * 50)  # 550 bytes
    process, url, _ = start_collecting(
        ["--root", str(site), "--compress-min-size", "600"], cwd=site
    )
    try:
        gz = {"accept-encoding": "gzip"}
        assert "content-encoding" not in httpx.get(url + "/small.css", headers=gz).headers
        big = httpx.get(url + "/style.css", headers=gz)
        assert big.headers["content-encoding"] == "gzip"
    finally:
        stop(process, signal.SIGINT)
    process, url, _ = start_collecting(["--root", str(site), "--no-compress"], cwd=site)
    try:
        raw = httpx.get(url + "/style.css", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in raw.headers
        assert raw.content == CSS.encode()
        assert raw.content != gzip.compress(CSS.encode())
    finally:
        stop(process, signal.SIGINT)


def test_first_run_without_index_html_says_how_to_list_the_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x\n")
    process, url, lines = start_collecting(["--root", str(tmp_path)], cwd=tmp_path)
    try:
        assert httpx.get(url + "/", timeout=10).status_code == 404
    finally:
        stop(process, signal.SIGINT)
    # In the banner line, printed once listening works (never before a usage error).
    assert lines == [
        f"trioserve: serving the files in {tmp_path} (no index.html, so / answers 404: "
        f"add --autoindex to list the files) on {url} (Ctrl-C to stop)\n"
    ]


@pytest.mark.parametrize("present", ["--autoindex", "index.html"])
def test_no_first_run_hint_with_an_index_or_a_listing(tmp_path: Path, present: str) -> None:
    args = ["--root", str(tmp_path)]
    if present == "index.html":
        (tmp_path / "index.html").write_text("hi\n")
    else:
        args.append(present)
    process, url, lines = start_collecting(args, cwd=tmp_path)
    try:
        assert httpx.get(url + "/", timeout=10).status_code == 200
    finally:
        stop(process, signal.SIGINT)
    assert lines == [f"trioserve: serving the files in {tmp_path} on {url} (Ctrl-C to stop)\n"]


def test_the_hint_is_not_printed_before_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = main(["--root", str(tmp_path), "--workers", "0"])
    assert status == 2
    assert capsys.readouterr().err == "trioserve: error: --workers must be at least 1, not 0\n"
