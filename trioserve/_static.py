"""Static files served the way nginx serves them, as an ASGI 3 app.

`StaticFiles` is the app; `load_resource` and `decide` are the two halves it is built from,
exposed so that every rule can be tested (and reused) on its own.
"""

# Theory of operation
# ===================
#
# A request goes through three steps; only the first and the last touch the disk.
#
# 1. Lookup (`resolve_path`, `load_resource`; synchronous). The ASGI path is already
#    percent-decoded by the server and is never unquoted again. It is split on "/" once; a
#    segment that is "..", holds a NUL or a backslash, looks like a drive ("C:"), or (by default)
#    starts with "." is refused before the filesystem sees it. The rest is joined onto the root,
#    resolved with `os.path.realpath`, and must still lie inside the root by `os.path.commonpath`,
#    so a symlink that leaves the root is "not found". Index files and precompressed `.br`/`.gz`
#    siblings pass the same check (CVE-2024-42367). The result is plain data: a `StaticFile`
#    (the stat of each representation) or a `Directory`.
# 2. Decision (`decide`; pure). Method, preconditions (RFC 9110 section 13.2.2 order),
#    Accept-Encoding and Range are evaluated against that data, giving a frozen `ResponsePlan`:
#    status, headers and a body plan. Every protocol rule lives here and is tested without I/O.
# 3. Sending (`StaticFiles.__call__`). The planned file is opened and fstat'ed to check it is still
#    the file the decision was made on (a file replaced in between is looked up once more), then
#    either handed to the server with `http.response.pathsend` or read in 64 KiB chunks in a
#    worker thread. Error bodies are small inline texts.
#
# stat, realpath and open run synchronously on the event loop, as in nginx: on a local filesystem
# they cost microseconds, and a thread hop per request would dominate the cost of a small file.
# For the same reason a whole file of up to 64 KiB is read in one synchronous pread and sent as
# one message. Larger files go to the server with pathsend (sendfile) when it is offered; other
# reads and directory listings go to a thread. trio is imported lazily, only when running under
# trio, so the app also works inside Starlette on uvicorn (asyncio).
#
# Unreadable files (EACCES) are answered 404, like every other lookup failure: a 403 would tell a
# client that a file it may not read exists.

from __future__ import annotations

import calendar
import email.utils
import html
import mimetypes
import os
import re
import secrets
import stat
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar

import sniffio

if TYPE_CHECKING:  # the pure decision code imports no trioserve module (nor trio)
    from ._types import Receive, Scope, Send

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_RANGES",
    "Body",
    "ByteRange",
    "DirEntry",
    "Directory",
    "EmptyBody",
    "FileInfo",
    "FileRange",
    "InlineBody",
    "MultipartPart",
    "MultipartRanges",
    "Representation",
    "ResolvedPath",
    "Resource",
    "ResponsePlan",
    "StaticFile",
    "StaticFiles",
    "StaticRequest",
    "WholeFile",
    "choose_representation",
    "content_type_for",
    "decide",
    "get_route_path",
    "is_inside",
    "list_directory",
    "load_resource",
    "parse_accept_encoding",
    "parse_http_date",
    "parse_range",
    "render_listing",
    "resolve_path",
    "split_path",
]

Headers: TypeAlias = tuple[tuple[bytes, bytes], ...]

_T = TypeVar("_T")

#: Browsers and download managers ask for a handful of ranges; more than this is a bug or an
#: attack. Starlette settled on the same cap after CVE-2025-62727.
DEFAULT_MAX_RANGES = 100

#: Big enough that the per-chunk cost (a thread hop and an ASGI message) is small next to the
#: copy, small enough to keep the memory held per connection bounded.
CHUNK_SIZE = 64 * 1024

_ALLOWED_METHODS = frozenset({"GET", "HEAD"})

# (content coding, file suffix) in the server's order of preference: brotli output is smaller.
_PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))

# Non-text types that are text in practice and get a charset like text/*.
_CHARSET_TYPES = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "application/xml",
        "image/svg+xml",
    }
)

# mimetypes reports "foo.tar.gz" as (application/x-tar, gzip); served as-is, such a file is an
# archive, not a tarball with a content coding.
_COMPRESSED_TYPES = {
    "br": "application/x-brotli",
    "bzip2": "application/x-bzip2",
    "compress": "application/x-compress",
    "gzip": "application/gzip",
    "xz": "application/x-xz",
}

_DRIVE = re.compile(r"[A-Za-z]:")
_ENTITY_TAG = re.compile(r'(W/)?"([^"]*)"')
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")

# Positions beyond any real file; longer digit strings are clamped to this instead of being
# converted (int() refuses more than 4300 digits, and nobody has an exabyte file).
_HUGE = 1 << 62

# pchar without "/" (segments never contain it) and "%" (always escaped).
_SEGMENT_SAFE = "!$&'()*+,;=:@"
# What may stay unescaped in a query string copied into a Location header.
_QUERY_SAFE = "!$&'()*+,;=:@/?%"

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    # A FIFO swapped in after the stat must not block the event loop in open().
    | getattr(os, "O_NONBLOCK", 0)
    # realpath's result has no symlink as its last component; refuse one that appeared since.
    | getattr(os, "O_NOFOLLOW", 0)
)


# --------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class FileInfo:
    """The part of a stat result that a response depends on.

    Attributes:
        size: Length in bytes.
        mtime_ns: Modification time in nanoseconds since the epoch.
        is_dir: Whether this is a directory (otherwise a regular file).
        dev: Device number, to recognise the same file after opening it.
        ino: Inode number, likewise.
    """

    size: int
    mtime_ns: int
    is_dir: bool = False
    dev: int = 0
    ino: int = 0

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileInfo:
        """Reduce a stat result to a `FileInfo`."""
        return cls(
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            is_dir=stat.S_ISDIR(st.st_mode),
            dev=st.st_dev,
            ino=st.st_ino,
        )

    @property
    def mtime(self) -> int:
        """Modification time in whole seconds, the resolution of HTTP dates."""
        return self.mtime_ns // 1_000_000_000


@dataclass(frozen=True, slots=True)
class Representation:
    """One servable form of a file: the file itself or a precompressed sibling.

    Attributes:
        path: Real path of the file to send.
        info: Its stat data.
        encoding: Content coding (`"br"`, `"gzip"`) or None for the file itself.
    """

    path: str
    info: FileInfo
    encoding: str | None = None

    @property
    def etag(self) -> str:
        """Strong entity tag from mtime and size; encoded forms get a suffix to differ."""
        tag = f"{self.info.mtime_ns:x}-{self.info.size:x}"
        if self.encoding is not None:
            tag = f"{tag}-{self.encoding}"
        return f'"{tag}"'


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A regular file that was found, with the precompressed siblings that exist.

    Attributes:
        name: File name as requested (its extension gives the Content-Type).
        identity: The file itself.
        encoded: Existing precompressed siblings, in the server's order of preference.
    """

    name: str
    identity: Representation
    encoded: tuple[Representation, ...] = ()


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One line of a directory listing."""

    name: str
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class Directory:
    """A directory that was found.

    Attributes:
        path: Its real path.
        index: The index file inside it, if there is one (only looked up for a URL ending in /).
        entries: Its listing, when autoindex is on and there is no index file.
    """

    path: str
    index: StaticFile | None = None
    entries: tuple[DirEntry, ...] | None = None


Resource: TypeAlias = StaticFile | Directory


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    """A URL path mapped safely onto the filesystem.

    Attributes:
        candidate: The root joined with the cleaned segments, before symlinks are resolved.
        real: Its real path, inside the root.
        segments: The cleaned URL path segments.
        info: Stat data of `real` (a directory or a regular file).
    """

    candidate: str
    real: str
    segments: tuple[str, ...]
    info: FileInfo


@dataclass(frozen=True, slots=True)
class StaticRequest:
    """The parts of an HTTP request that a static response depends on.

    Attributes:
        method: Request method, upper case.
        route_path: Decoded path below the mount point (`get_route_path`).
        headers: Request headers, lower-case names.
        root_path: Decoded mount point, used to build redirects and listing titles.
        query_string: Raw query string, carried over in redirects.
    """

    method: str
    route_path: str
    headers: Headers = ()
    root_path: str = ""
    query_string: bytes = b""

    @classmethod
    def from_scope(cls, scope: Scope) -> StaticRequest:
        """Build a request from an ASGI HTTP scope."""
        return cls(
            method=scope["method"],
            route_path=get_route_path(scope),
            headers=tuple((bytes(name).lower(), bytes(value)) for name, value in scope["headers"]),
            root_path=scope.get("root_path", ""),
            query_string=bytes(scope.get("query_string", b"")),
        )

    def header(self, name: bytes) -> str | None:
        """All values of header `name` joined with ", " (latin-1), or None if absent."""
        values = [value.decode("latin-1") for key, value in self.headers if key == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` (inclusive) to `stop` (exclusive) of a file."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        """Number of bytes."""
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """No body: HEAD, 304, redirects."""


@dataclass(frozen=True, slots=True)
class InlineBody:
    """A small body held in memory: error texts and directory listings."""

    data: bytes


@dataclass(frozen=True, slots=True)
class WholeFile:
    """The whole file, `size` bytes; the one body that may go out with pathsend."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class FileRange:
    """One byte range of a file (206 with Content-Range)."""

    path: str
    range: ByteRange


@dataclass(frozen=True, slots=True)
class MultipartPart:
    """One part of a multipart/byteranges body: its delimiter and headers, then its bytes."""

    head: bytes
    range: ByteRange


@dataclass(frozen=True, slots=True)
class MultipartRanges:
    """A multipart/byteranges body: each part's head and bytes, then the closing delimiter."""

    path: str
    parts: tuple[MultipartPart, ...]
    closing: bytes

    @property
    def content_length(self) -> int:
        """Exact length of the whole body."""
        return sum(len(part.head) + part.range.length for part in self.parts) + len(self.closing)


Body: TypeAlias = EmptyBody | InlineBody | WholeFile | FileRange | MultipartRanges


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What to answer: the outcome of `decide`.

    Attributes:
        status: HTTP status code.
        headers: Response headers, lower-case names, latin-1 values.
        body: What to send as the body.
        file: The representation a 200/206 describes (also for HEAD). The sender opens it to check
            that it is still the file that was decided on before sending anything.
    """

    status: int
    headers: Headers
    body: Body
    file: Representation | None = None


# --------------------------------------------------------------------------------------------
# Path mapping


def get_route_path(scope: Scope) -> str:
    """The ASGI path below `root_path`, like Starlette's function of the same name.

    ASGI servers include `root_path` in `path`; a mounted app maps only what follows it.
    """
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


def split_path(route_path: str, *, allow_dotfiles: bool = False) -> tuple[str, ...] | None:
    """Split a decoded URL path into segments that are safe to join onto a directory.

    Empty and "." segments are dropped. The path is not unquoted: "%2e%2e" is a file name.

    Returns:
        The segments, or None if any segment is "..", contains NUL or a backslash, looks like a
        drive ("C:"), or starts with "." while dotfiles are not allowed.
    """
    segments: list[str] = []
    for segment in route_path.split("/"):
        if segment in ("", "."):
            continue
        if (
            segment == ".."
            or "\x00" in segment
            or "\\" in segment
            or _DRIVE.match(segment)
            or (segment[0] == "." and not allow_dotfiles)
            or (os.name == "nt" and ":" in segment)
        ):
            return None
        segments.append(segment)
    return tuple(segments)


def is_inside(root: str, path: str) -> bool:
    """Whether `path` is `root` or below it, comparing whole components.

    Both must be absolute real paths. The prefix compared ends with a separator, so
    "/srv/static1" is not inside "/srv/static" (the CVE-2023-29159 mistake).
    """
    if path == root:
        return True
    prefix = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(prefix)


def _resolve_with_proc(candidate: str) -> tuple[str, os.stat_result]:
    # Linux: open the path itself (O_PATH: no read access, no side effects, even for devices and
    # FIFOs), following every symlink as realpath would, then ask the kernel what it opened. Three
    # system calls instead of realpath's lstat per component, and the stat is of that very file.
    fd = os.open(candidate, _O_PATH | os.O_CLOEXEC)
    try:
        return os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd)
    finally:
        os.close(fd)


def _resolve_portably(candidate: str) -> tuple[str, os.stat_result]:
    real = os.path.realpath(candidate, strict=True)
    return real, os.stat(real)


def _pick_resolver() -> Callable[[str], tuple[str, os.stat_result]]:
    if _O_PATH and os.path.isdir("/proc/self/fd"):
        try:
            here = os.path.realpath(__file__)
            if _resolve_with_proc(here)[0] == here:
                return _resolve_with_proc
        except OSError:
            pass
    return _resolve_portably


_O_PATH: int = getattr(os, "O_PATH", 0)
_resolve = _pick_resolver()


def _stat_inside(root: str, candidate: str) -> tuple[str, os.stat_result] | None:
    try:
        real, st = _resolve(candidate)
    except (OSError, ValueError):  # ENOENT, EACCES, ENOTDIR, ELOOP...; unencodable names
        return None
    if not is_inside(root, real):
        return None
    return real, st


def resolve_path(
    root: str, route_path: str, *, allow_dotfiles: bool = False
) -> ResolvedPath | None:
    """Map a decoded URL path onto a directory or regular file inside `root`.

    Args:
        root: Real path of the document root.
        route_path: Decoded URL path below the mount point.
        allow_dotfiles: Whether segments starting with "." may be served.

    Returns:
        The resolved path, or None when it is refused by `split_path`, does not exist, cannot be
        stat'ed, resolves outside `root`, or is neither a directory nor a regular file.
    """
    segments = split_path(route_path, allow_dotfiles=allow_dotfiles)
    if segments is None:
        return None
    candidate = os.path.join(root, *segments)
    found = _stat_inside(root, candidate)
    if found is None:
        return None
    real, st = found
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return None
    return ResolvedPath(candidate, real, segments, FileInfo.from_stat(st))


def _sibling(root: str, candidate: str, encoding: str, suffix: str) -> Representation | None:
    sibling = candidate + suffix
    try:
        os.lstat(sibling)  # the common case, no sibling, without realpath's per-component lstat
    except (OSError, ValueError):
        return None
    found = _stat_inside(root, sibling)
    if found is None or not stat.S_ISREG(found[1].st_mode):
        return None
    return Representation(found[0], FileInfo.from_stat(found[1]), encoding)


def _load_file(root: str, candidate: str, real: str, info: FileInfo, name: str) -> StaticFile:
    encoded = tuple(
        sibling
        for encoding, suffix in _PRECOMPRESSED
        if (sibling := _sibling(root, candidate, encoding, suffix)) is not None
    )
    return StaticFile(name, Representation(real, info), encoded)


def load_resource(
    root: str,
    route_path: str,
    *,
    allow_dotfiles: bool = False,
    index: str | None = "index.html",
) -> Resource | None:
    """Look up what a URL path names (the only filesystem access `decide` depends on).

    Args:
        root: Real path of the document root.
        route_path: Decoded URL path below the mount point.
        allow_dotfiles: Whether segments starting with "." may be served.
        index: Index file name looked up in directories, or None.

    Returns:
        A `StaticFile` with its precompressed siblings, a `Directory` (with its index file when the
        path ends in "/"; `entries` is left to `list_directory`), or None if nothing servable
        is there.
    """
    resolved = resolve_path(root, route_path, allow_dotfiles=allow_dotfiles)
    if resolved is None:
        return None
    if not resolved.info.is_dir:
        return _load_file(
            root, resolved.candidate, resolved.real, resolved.info, resolved.segments[-1]
        )
    index_file = None
    if index is not None and route_path.endswith("/"):
        candidate = os.path.join(resolved.real, index)
        found = _stat_inside(root, candidate)
        if found is not None and stat.S_ISREG(found[1].st_mode):
            index_file = _load_file(root, candidate, found[0], FileInfo.from_stat(found[1]), index)
    return Directory(resolved.real, index_file)


def list_directory(root: str, path: str, *, allow_dotfiles: bool = False) -> tuple[DirEntry, ...]:
    """List the servable entries of directory `path`: directories first, then by name.

    Entries that could not be served are left out: dotfiles (unless allowed), names
    `split_path` refuses, anything but directories and regular files, and symlinks that
    resolve outside `root`. Blocking; run it in a thread.

    Raises:
        OSError: If the directory cannot be read.
    """
    entries: list[DirEntry] = []
    with os.scandir(path) as scan:
        for entry in scan:
            if split_path(entry.name, allow_dotfiles=allow_dotfiles) != (entry.name,):
                continue
            try:
                if entry.is_symlink() and not is_inside(root, os.path.realpath(entry.path)):
                    continue
                if entry.is_dir():
                    entries.append(DirEntry(entry.name, is_dir=True))
                elif entry.is_file():
                    entries.append(DirEntry(entry.name))
            except (OSError, ValueError):  # vanished or unreadable entry: just not listed
                continue
    entries.sort(key=lambda entry: (not entry.is_dir, entry.name))
    return tuple(entries)


# --------------------------------------------------------------------------------------------
# Header parsing


def parse_http_date(value: str) -> int | None:
    """Parse an HTTP-date (any of the three RFC 9110 formats) to epoch seconds, or None."""
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return calendar.timegm(parsed[:6]) - (parsed[9] or 0)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


@lru_cache(maxsize=4096)
def _http_date(timestamp: int) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def _digits(text: str) -> int | None:
    if not text or not text.isascii() or not text.isdigit():
        return None
    text = text.lstrip("0") or "0"
    return _HUGE if len(text) > 18 else int(text)


def parse_range(
    value: str, size: int, *, max_ranges: int = DEFAULT_MAX_RANGES
) -> tuple[ByteRange, ...] | None:
    """Parse a Range header against a representation of `size` bytes.

    Overlapping and adjacent ranges are merged in O(n log n); the result keeps the order in which
    the ranges were asked for (a merged range takes the place of its first member).

    Returns:
        None when the header must be ignored (not `bytes=`, malformed, or more than `max_ranges`
        ranges); an empty tuple when no range is satisfiable (416); else the ranges to send.
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    parsed: list[tuple[int | None, int | None]] = []
    for item in specs.split(","):
        spec = item.strip(" \t")
        if not spec:
            continue
        if len(parsed) == max_ranges:
            return None
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        last = _digits(last_text) if last_text else None
        if last_text and last is None:
            return None
        if not first_text:
            if last is None:
                return None
            parsed.append((None, last))
            continue
        first = _digits(first_text)
        if first is None or (last is not None and last < first):
            return None
        parsed.append((first, last))
    if not parsed:
        return None

    ranges: list[ByteRange] = []
    for first, last in parsed:
        if first is None:  # suffix range: the last `last` bytes
            if last and size:
                ranges.append(ByteRange(max(size - last, 0), size))
        elif first < size:
            ranges.append(ByteRange(first, size if last is None else min(last + 1, size)))
    return _coalesce(ranges)


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    # Sort once, sweep once; then put each merged group where its earliest member was asked for.
    groups: list[tuple[int, int, int]] = []  # (first index, start, stop)
    for index in sorted(range(len(ranges)), key=lambda i: ranges[i].start):
        current = ranges[index]
        if groups and current.start <= groups[-1][2]:
            first, start, stop = groups[-1]
            groups[-1] = (min(first, index), start, max(stop, current.stop))
        else:
            groups.append((index, current.start, current.stop))
    groups.sort()
    return tuple(ByteRange(start, stop) for _, start, stop in groups)


def _qvalue(params: list[str]) -> float | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QVALUE.fullmatch(value) else None
    return 1.0


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Parse Accept-Encoding into {coding: q}; codings lower-cased, x-gzip read as gzip.

    Elements with an invalid q-value are skipped; the first occurrence of a coding wins.
    """
    result: dict[str, float] = {}
    for item in value.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = _qvalue(params)
        if q is None:
            continue
        result.setdefault("gzip" if coding == "x-gzip" else coding, q)
    return result


def choose_representation(file: StaticFile, accept_encoding: str | None) -> Representation:
    """Pick the representation of `file` to serve for this Accept-Encoding.

    The encoded sibling with the highest q wins (ties go to the server's order, br first), unless
    identity is explicitly preferred (`identity;q=` or `*;q=` higher). Without an Accept-Encoding
    header the file itself is served: clients that decode say so. When nothing is acceptable the
    file itself is served as well, rather than a 406.
    """
    if not file.encoded or accept_encoding is None:
        return file.identity
    prefs = parse_accept_encoding(accept_encoding)
    star = prefs.get("*")
    best: Representation | None = None
    best_q = 0.0
    for candidate in file.encoded:
        q = prefs.get(candidate.encoding or "identity", star if star is not None else 0.0)
        if q > best_q:
            best, best_q = candidate, q
    if best is None:
        return file.identity
    identity_q = prefs.get("identity", star)
    if identity_q is not None and identity_q > best_q:
        return file.identity
    return best


@lru_cache(maxsize=4096)
def content_type_for(name: str) -> str:
    """Content-Type for a file name: `mimetypes`, a utf-8 charset for text, octet-stream else."""
    # The leading "/" keeps mimetypes from reading a name like "data:x" as a URL scheme.
    mime, encoding = mimetypes.guess_type("/" + name)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    if mime is None:
        return "application/octet-stream"
    if mime.startswith("text/") or mime in _CHARSET_TYPES:
        return f"{mime}; charset=utf-8"
    return mime


def _tag_matches(value: str, etag: str, *, weak: bool) -> bool:
    if value.strip() == "*":
        return True
    opaque = etag[1:-1]
    return any(
        match.group(2) == opaque and (weak or match.group(1) is None)
        for match in _ENTITY_TAG.finditer(value)
    )


def _precondition_status(request: StaticRequest, etag: str, mtime: int) -> int | None:
    """RFC 9110 section 13.2.2 steps 1 to 4, for GET and HEAD: 412, 304 or None (go on)."""
    if_match = request.header(b"if-match")
    if if_match is not None:
        if not _tag_matches(if_match, etag, weak=False):
            return 412
    else:
        value = request.header(b"if-unmodified-since")
        since = None if value is None else parse_http_date(value)
        if since is not None and mtime > since:
            return 412
    if_none_match = request.header(b"if-none-match")
    if if_none_match is not None:
        if _tag_matches(if_none_match, etag, weak=True):
            return 304
    else:
        value = request.header(b"if-modified-since")
        since = None if value is None else parse_http_date(value)
        if since is not None and mtime <= since:
            return 304
    return None


def _if_range_holds(request: StaticRequest, etag: str, mtime: int) -> bool:
    value = request.header(b"if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison: a weak tag never matches
    return parse_http_date(value) == mtime


# --------------------------------------------------------------------------------------------
# Decision


def _quote_segment(segment: str, safe: str) -> str:
    try:  # names the filesystem handed us as surrogate escapes go back out as their raw bytes
        return urllib.parse.quote(segment, safe=safe, errors="surrogateescape")
    except UnicodeEncodeError:
        return urllib.parse.quote(segment, safe=safe, errors="surrogatepass")


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _url_segments(request: StaticRequest) -> list[str]:
    path = f"{request.root_path}/{request.route_path}"
    return [segment for segment in path.split("/") if segment not in ("", ".")]


def _text_plan(status: HTTPStatus, *, head: bool, extra: Headers = ()) -> ResponsePlan:
    body = f"{status.value} {status.phrase}\n".encode()
    headers = (
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    )
    return ResponsePlan(status.value, headers, EmptyBody() if head else InlineBody(body))


def _redirect_plan(request: StaticRequest) -> ResponsePlan:
    # Built from cleaned, quoted segments: one leading "/", never "//host" (CVE-2021-28861).
    location = "/" + "".join(
        _quote_segment(segment, _SEGMENT_SAFE) + "/" for segment in _url_segments(request)
    )
    if request.query_string:
        location += "?" + urllib.parse.quote(request.query_string, safe=_QUERY_SAFE)
    headers = ((b"location", location.encode("latin-1")), (b"content-length", b"0"))
    return ResponsePlan(HTTPStatus.MOVED_PERMANENTLY.value, headers, EmptyBody())


def render_listing(url_path: str, entries: Iterable[DirEntry], *, parent: bool) -> bytes:
    """Render an HTML directory listing; every name is escaped, every href quoted.

    Args:
        url_path: The directory's URL path, for the title.
        entries: What to list, in order.
        parent: Whether to link to "../".
    """
    title = html.escape(f"Index of {_printable(url_path)}")
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        f'<head><meta charset="utf-8"><title>{title}</title></head>',
        "<body>",
        f"<h1>{title}</h1>",
        "<ul>",
    ]
    if parent:
        lines.append('<li><a href="../">../</a></li>')
    for entry in entries:
        slash = "/" if entry.is_dir else ""
        # safe="" quotes ":" too, so a name like "javascript:x" cannot become a scheme.
        href = html.escape(_quote_segment(entry.name, "") + slash)
        text = html.escape(_printable(entry.name) + slash)
        lines.append(f'<li><a href="{href}">{text}</a></li>')
    lines += ["</ul>", "</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def _listing_plan(request: StaticRequest, entries: tuple[DirEntry, ...]) -> ResponsePlan:
    segments = _url_segments(request)
    url_path = "/" + "".join(segment + "/" for segment in segments)
    route_segments = split_path(request.route_path, allow_dotfiles=True)
    body = render_listing(url_path, entries, parent=bool(route_segments))
    headers = (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    )
    head = request.method == "HEAD"
    return ResponsePlan(200, headers, EmptyBody() if head else InlineBody(body))


def _multipart(
    path: str, ranges: tuple[ByteRange, ...], size: int, content_type: str, boundary: str
) -> MultipartRanges:
    parts: list[MultipartPart] = []
    for byte_range in ranges:
        head = (
            f"--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: bytes {byte_range.start}-{byte_range.stop - 1}/{size}\r\n\r\n"
        ).encode("latin-1")
        # The CRLF before each later delimiter belongs to the delimiter (RFC 2046).
        parts.append(MultipartPart(b"\r\n" + head if parts else head, byte_range))
    return MultipartRanges(path, tuple(parts), f"\r\n--{boundary}--\r\n".encode("latin-1"))


def _file_plan(
    request: StaticRequest,
    file: StaticFile,
    *,
    cache_control: str | None,
    max_ranges: int,
    boundary: str | None,
) -> ResponsePlan:
    head = request.method == "HEAD"
    chosen = choose_representation(file, request.header(b"accept-encoding"))
    info = chosen.info
    etag = chosen.etag
    vary: Headers = ((b"vary", b"Accept-Encoding"),) if file.encoded else ()
    validators: Headers = (
        (b"last-modified", _http_date(info.mtime).encode("latin-1")),
        (b"etag", etag.encode("latin-1")),
        *(() if cache_control is None else ((b"cache-control", cache_control.encode("latin-1")),)),
        *vary,
    )

    precondition = _precondition_status(request, etag, info.mtime)
    if precondition == 412:
        return _text_plan(HTTPStatus.PRECONDITION_FAILED, head=head, extra=vary)
    if precondition == 304:
        return ResponsePlan(304, validators, EmptyBody())

    content_type = content_type_for(file.name)
    trailer: Headers = (
        *(() if chosen.encoding is None else ((b"content-encoding", chosen.encoding.encode()),)),
        (b"accept-ranges", b"bytes"),
        *validators,
    )
    range_header = request.header(b"range")
    ranges = None
    if (
        request.method == "GET"
        and range_header is not None
        and _if_range_holds(request, etag, info.mtime)
    ):
        ranges = parse_range(range_header, info.size, max_ranges=max_ranges)

    if ranges is None:
        headers = (
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(info.size).encode()),
            *trailer,
        )
        body: Body = EmptyBody() if head else WholeFile(chosen.path, info.size)
        return ResponsePlan(200, headers, body, chosen)
    if not ranges:
        unsatisfied = ((b"content-range", f"bytes */{info.size}".encode()), *vary)
        return _text_plan(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, head=head, extra=unsatisfied)
    if len(ranges) == 1:
        (only,) = ranges
        headers = (
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(only.length).encode()),
            (b"content-range", f"bytes {only.start}-{only.stop - 1}/{info.size}".encode()),
            *trailer,
        )
        return ResponsePlan(206, headers, FileRange(chosen.path, only), chosen)
    boundary = secrets.token_hex(16) if boundary is None else boundary
    multipart = _multipart(chosen.path, ranges, info.size, content_type, boundary)
    headers = (
        (b"content-type", f"multipart/byteranges; boundary={boundary}".encode("latin-1")),
        (b"content-length", str(multipart.content_length).encode()),
        *trailer,
    )
    return ResponsePlan(206, headers, multipart, chosen)


def decide(
    request: StaticRequest,
    resource: Resource | None,
    *,
    cache_control: str | None = None,
    max_ranges: int = DEFAULT_MAX_RANGES,
    boundary: str | None = None,
) -> ResponsePlan:
    """Decide the whole response to a static-file request. Pure: no I/O.

    The method is checked first, so `resource` may be None for methods other than GET and HEAD.

    Args:
        request: The request.
        resource: What `load_resource` found (None: nothing).
        cache_control: Cache-Control value for file responses (200, 206, 304).
        max_ranges: Range headers with more ranges than this are ignored.
        boundary: Multipart boundary; random when None (tests pass a fixed one).

    Returns:
        405 for other methods; 404 when nothing is there (or a file is asked for with a trailing
        "/"); 301 to the slash form of a directory URL; the index file, the listing or 404 for a
        directory; else the file's 200, 206, 304, 412 or 416.
    """
    if request.method not in _ALLOWED_METHODS:
        return _text_plan(
            HTTPStatus.METHOD_NOT_ALLOWED, head=False, extra=((b"allow", b"GET, HEAD"),)
        )
    head = request.method == "HEAD"
    slash = request.route_path.endswith("/")
    if isinstance(resource, Directory):
        if not slash:
            return _redirect_plan(request)
        if resource.index is not None:
            resource = resource.index
        elif resource.entries is not None:
            return _listing_plan(request, resource.entries)
        else:
            return _text_plan(HTTPStatus.NOT_FOUND, head=head)
    elif resource is None or slash:
        return _text_plan(HTTPStatus.NOT_FOUND, head=head)
    return _file_plan(
        request, resource, cache_control=cache_control, max_ranges=max_ranges, boundary=boundary
    )


# --------------------------------------------------------------------------------------------
# I/O


async def _run_in_thread(function: Callable[[], _T]) -> _T:
    if sniffio.current_async_library() == "trio":
        import trio  # lazily: under asyncio, trio need not even be installed

        return await trio.to_thread.run_sync(function)
    import asyncio

    return await asyncio.to_thread(function)


def _pread(fd: int, size: int, offset: int) -> bytes:
    if sys.platform == "win32":
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)
    return os.pread(fd, size, offset)


def _open_verified(representation: Representation) -> int | None:
    """Open the file a plan was made for; None if it is gone, unreadable, or not that file now."""
    info = representation.info
    try:
        fd = os.open(representation.path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return None
    if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
        info.dev,
        info.ino,
        info.size,
        info.mtime_ns,
    ):
        return fd
    os.close(fd)
    return None


async def _send_file_range(send: Send, fd: int, start: int, stop: int, *, last: bool) -> None:
    offset = start
    while True:
        size = min(CHUNK_SIZE, stop - offset)
        data = await _run_in_thread(partial(_pread, fd, size, offset)) if size else b""
        if size and not data:
            # The headers promised more bytes; only closing the connection can tell the client.
            raise RuntimeError("static file shrank while it was being sent")
        offset += len(data)
        await send(
            {"type": "http.response.body", "body": data, "more_body": offset < stop or not last}
        )
        if offset >= stop:
            return


async def _send_plan(plan: ResponsePlan, fd: int | None, send: Send, *, pathsend: bool) -> None:
    await send(
        {"type": "http.response.start", "status": plan.status, "headers": list(plan.headers)}
    )
    body = plan.body
    if isinstance(body, InlineBody):
        await send({"type": "http.response.body", "body": body.data, "more_body": False})
        return
    if isinstance(body, EmptyBody):
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if fd is None:
        raise RuntimeError("a file body needs an open file")
    if isinstance(body, WholeFile):
        if body.size <= CHUNK_SIZE:
            # A small file is read here, at once, from the file already open and verified:
            # cheaper than any hand-over, and one message lets the server send it with the head.
            data = _pread(fd, body.size, 0)
            if len(data) != body.size:
                raise RuntimeError("static file shrank while it was being sent")
            await send({"type": "http.response.body", "body": data, "more_body": False})
        elif pathsend:
            await send({"type": "http.response.pathsend", "path": body.path})
        else:
            await _send_file_range(send, fd, 0, body.size, last=True)
    elif isinstance(body, FileRange):
        await _send_file_range(send, fd, body.range.start, body.range.stop, last=True)
    else:
        for part in body.parts:
            await send({"type": "http.response.body", "body": part.head, "more_body": True})
            await _send_file_range(send, fd, part.range.start, part.range.stop, last=False)
        await send({"type": "http.response.body", "body": body.closing, "more_body": False})


async def complete_lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan scope for an app that needs no startup or shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _is_header_value(value: str) -> bool:
    return all(" " <= char <= "~" or char == "\t" for char in value)


class StaticFiles:
    """An ASGI 3 app serving the files under one directory.

    GET and HEAD with validators (ETag, Last-Modified), conditional requests, single and
    multipart ranges, precompressed `.br`/`.gz` siblings, index files, slash redirects and
    an optional directory listing. Every lookup failure is a 404; see the module comment.

    Args:
        directory: The document root. Its real path is taken once, here.
        autoindex: List directories that have no index file.
        dotfiles: "deny" (404 for any path segment starting with ".") or "allow".
        cache_control: Cache-Control value for file responses (200, 206, 304), or None.
        index: Name of the index file served for directory URLs, or None.
        max_ranges: Range headers asking for more ranges than this are ignored (200).

    Raises:
        ValueError: If `directory` is not an existing directory, or another argument is invalid.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        autoindex: bool = False,
        dotfiles: Literal["deny", "allow"] = "deny",
        cache_control: str | None = None,
        index: str | None = "index.html",
        max_ranges: int = DEFAULT_MAX_RANGES,
    ) -> None:
        root = os.path.realpath(directory)
        if not os.path.isdir(root):
            raise ValueError(
                f"StaticFiles directory {os.fspath(directory)!r} does not exist "
                "or is not a directory"
            )
        if dotfiles not in ("deny", "allow"):
            raise ValueError(f"dotfiles must be 'deny' or 'allow', not {dotfiles!r}")
        if index is not None and split_path(index, allow_dotfiles=True) != (index,):
            raise ValueError(f"index must be a plain file name, not {index!r}")
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be at least 1, not {max_ranges!r}")
        if cache_control is not None and not _is_header_value(cache_control):
            raise ValueError(f"cache_control is not a valid header value: {cache_control!r}")
        self.directory = root
        self.autoindex = autoindex
        self.allow_dotfiles = dotfiles == "allow"
        self.cache_control = cache_control
        self.index = index
        self.max_ranges = max_ranges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._serve(scope, send)
        elif kind == "lifespan":
            await complete_lifespan(receive, send)
        else:
            raise RuntimeError(f"StaticFiles only serves HTTP; it cannot handle a {kind!r} scope")

    async def _plan(self, request: StaticRequest) -> ResponsePlan:
        resource = None
        if request.method in _ALLOWED_METHODS:
            resource = load_resource(
                self.directory,
                request.route_path,
                allow_dotfiles=self.allow_dotfiles,
                index=self.index,
            )
            if (
                self.autoindex
                and isinstance(resource, Directory)
                and resource.index is None
                and request.route_path.endswith("/")
            ):
                listing = partial(
                    list_directory,
                    self.directory,
                    resource.path,
                    allow_dotfiles=self.allow_dotfiles,
                )
                try:
                    entries: tuple[DirEntry, ...] | None = await _run_in_thread(listing)
                except OSError:  # an unreadable directory has no listing: 404
                    entries = None
                resource = replace(resource, entries=entries)
        return decide(
            request, resource, cache_control=self.cache_control, max_ranges=self.max_ranges
        )

    async def _serve(self, scope: Scope, send: Send) -> None:
        request = StaticRequest.from_scope(scope)
        fd = None
        # A file replaced between its stat and its open (a deploy renaming over it) is looked
        # up once more; if it keeps changing, or cannot be opened, the answer is 404.
        for _attempt in range(2):
            plan = await self._plan(request)
            if plan.file is None:
                break
            fd = _open_verified(plan.file)
            if fd is not None:
                break
        else:
            plan = decide(request, None)
        extensions = scope.get("extensions") or {}
        try:
            await _send_plan(plan, fd, send, pathsend="http.response.pathsend" in extensions)
        finally:
            if fd is not None:
                os.close(fd)
