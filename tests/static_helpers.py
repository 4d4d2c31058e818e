"""What the tests of trioserve._static share: times, a file writer, a document root."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from trioserve._static import FileInfo

MTIME = 1_700_000_000
MTIME_NS = MTIME * 1_000_000_000 + 123_456_789
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"
EARLIER = "Tue, 14 Nov 2023 22:13:19 GMT"
LATER = "Tue, 14 Nov 2023 22:13:21 GMT"
TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")


def etag_of(info: FileInfo, suffix: str = "") -> str:
    return f'"{info.mtime_ns:x}-{info.size:x}{suffix}"'


def write(path: Path, data: bytes, mtime_ns: int = MTIME_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    result: dict[bytes, bytes] = {}
    for name, value in headers:
        assert name not in result, f"duplicate header {name!r}"
        result[name] = value
    return result


def make_tree(tmp_path: Path) -> Path:
    """A document root with every trap a lookup must avoid, and what lies around it."""
    base = Path(os.path.realpath(tmp_path))
    root = base / "static"
    write(base / "outside.txt", b"outside")
    write(base / "outside_dir" / "f.txt", b"outside dir")
    write(base / "static1" / "secret.txt", b"secret")
    write(root / "a.txt", b"hello")
    write(root / "sub" / "b.txt", b"bee")
    write(root / "%2e%2e" / "x.txt", b"literal dots")
    write(root / "a%2fb.txt", b"literal slash")
    write(root / "etc" / "passwd", b"not the real one")
    write(root / ".env", b"SECRET=1")
    write(root / ".git" / "config", b"[core]")
    (root / "link-out.txt").symlink_to(base / "outside.txt")
    (root / "link-in.txt").symlink_to("a.txt")
    (root / "dir-out").symlink_to(base / "outside_dir")
    (root / "sibling-prefix.txt").symlink_to(base / "static1" / "secret.txt")
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    os.mkfifo(root / "fifo")
    return root
