#!/usr/bin/env python3
"""Lint trioserve's static file responses with REDbot (PyPI ``redbot``, "lint for HTTP").

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python scripts/redbot.py                 # the default site and URLs
    .venv/bin/python scripts/redbot.py --json out.json # every note, as JSON, as well

REDbot's dependencies (thor, ...) are kept out of the project's environment: the script makes
a venv of its own (``--venv``, default ``/tmp/redbot-venv``) and installs ``redbot`` into it
unless it is there already. It writes a small site to a temporary directory (an index.html, a
stylesheet, a script with a precompressed ``.gz`` sibling, a PNG, a subdirectory with a text and
a JSON file), serves it with ``python -m trioserve --root SITE --autoindex --port 0``, and checks
each URL twice with REDbot: as REDbot sends it by default (no Accept-Encoding; its content
negotiation check then asks for gzip itself) and with ``Accept-Encoding: gzip`` (its range and
validation checks are then made on the compressed response).

It prints every note whose level is BAD (with the URL, the request's Accept-Encoding and the
note's id), then a count per level. The exit status is 1 when any note is BAD.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

REDBOT_REQUIREMENT = "redbot==2.7.1"  # the version this script was last run with
# What one REDbot run (a request and its follow-up checks) may take; they take seconds.
CHECK_TIMEOUT = 120.0
PATHS = (
    "/",
    "/index.html",
    "/style.css",
    "/app.js",
    "/logo.png",
    "/sub/",
    "/sub/notes.txt",
    "/sub/data.json",
    "/sub",  # a redirect to /sub/
    "/missing.html",  # a 404
)

# Run inside REDbot's venv: check one URL (argv[1]) with extra request headers (argv[2], JSON)
# and print REDbot's HAR (its notes are under each entry's "_red_messages").
DRIVER = """
import json, sys
from configparser import ConfigParser
import thor
from redbot.formatter import find_formatter
from redbot.resource import HttpResource

parser = ConfigParser()
parser.read_dict({"redbot": {"enable_local_access": "True"}})
config = parser["redbot"]
resource = HttpResource(config)
resource.set_request(sys.argv[1], headers=[tuple(h) for h in json.loads(sys.argv[2])])
formatter = find_formatter("har")(config, resource, sys.stdout.write, {})
formatter.bind_resource(resource)

@thor.events.on(formatter)
def formatter_done():
    thor.stop()

resource.check()
thor.run()
"""


def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        # Over REDbot's range sample (up to 96 bytes from the start): its range check on a smaller
        # file asks for all of it, and warns that the 206 is as long as the whole.
        + chunk(b"tEXt", b"Comment\x00" + b"a one-pixel image for scripts/redbot.py " * 8)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def write_site(root: Path) -> None:
    text = "Some text, so that the page is worth compressing. " * 40
    (root / "index.html").write_text(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>site</title>\n'
        '<link rel="stylesheet" href="/style.css"><script src="/app.js"></script></head>\n'
        f'<body><h1>Hello</h1><img src="/logo.png" alt="logo"><p>{text}</p>\n'
        '<p><a href="/sub/">sub</a></p></body></html>\n'
    )
    (root / "style.css").write_text("body { font-family: sans-serif; color: #222; }\n" * 40)
    script = 'console.log("hello from trioserve");\n' * 40
    (root / "app.js").write_text(script)
    # gzip format: compressobj with wbits 31.
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    (root / "app.js.gz").write_bytes(gz.compress(script.encode()) + gz.flush())
    (root / "logo.png").write_bytes(png_1x1())
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("plain text notes\n" * 40)
    (root / "sub" / "data.json").write_text(json.dumps({"items": list(range(200))}))


def ensure_redbot(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if subprocess.run([str(python), "-c", "import redbot"], capture_output=True).returncode == 0:
        return python
    print(f"redbot.py: creating {venv}, installing {REDBOT_REQUIREMENT}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", REDBOT_REQUIREMENT], check=True)
    return python


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "trioserve", "--root", str(root), "--autoindex"]
    server = subprocess.Popen(
        [*command, "--port", "0", "--no-access-log"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    for line in server.stdout:  # "trioserve: serving the files in DIR on http://HOST:PORT (...)"
        if " on http://" in line:
            return server, line.split(" on ", 1)[1].split()[0]
    server.wait()
    sys.exit(f"redbot.py: trioserve exited ({server.returncode}) before it listened")


def check(python: Path, url: str, headers: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """REDbot's notes on one URL, flattened (subnotes follow their note)."""
    result = subprocess.run(
        [str(python), "-c", DRIVER, url, json.dumps(headers)],
        capture_output=True,
        text=True,
        timeout=CHECK_TIMEOUT,
        check=True,
    )
    har = json.loads(result.stdout)
    if "_red_error" in har["log"]:
        return [{"level": "BAD", "note_id": "FETCH_ERROR", "summary": har["log"]["_red_error"]}]
    notes: list[dict[str, Any]] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for note in items:
            notes.append(note)
            walk(note.get("subnotes", []))

    for entry in har["log"]["entries"]:
        walk(entry["_red_messages"])
    return notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/redbot-venv"))
    parser.add_argument("--json", type=Path, help="write every note here too")
    args = parser.parse_args()
    python = ensure_redbot(args.venv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trioserve-redbot-") as tmp:
        root = Path(tmp)
        write_site(root)
        server, base = start_server(root)
        try:
            for path in PATHS:
                for headers in ([], [("Accept-Encoding", "gzip")]):
                    url = base + path
                    results.extend(
                        {"url": url, "request_headers": headers, **note}
                        for note in check(python, url, headers)
                    )
        finally:
            server.terminate()
            server.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = [note for note in results if note["level"] == "BAD"]
    for note in bad:
        encoding = "gzip" if note["request_headers"] else "-"
        print(
            f"BAD {note['url']} (Accept-Encoding: {encoding}) {note['note_id']}: {note['summary']}"
        )
    levels = Counter(note["level"] for note in results)
    print(", ".join(f"{count} {level}" for level, count in sorted(levels.items())))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
