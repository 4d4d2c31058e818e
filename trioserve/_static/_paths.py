"""Mapping a URL path safely onto the document root, and looking up what is there."""

# Theory of operation
# ===================
#
# This is step 1 of a request (see the package comment), and the only part of the decision's
# input that comes from the disk. The ASGI path is already percent-decoded by the server and is
# never unquoted again. It is split on "/" once and its dot segments removed (RFC 3986 section
# 5.2.4: "/docs/../a" is "/a"); a ".." that would climb above the root, or a segment that holds
# a NUL or a backslash, looks like a drive ("C:"), or (by default) starts with "." is refused
# before the filesystem sees it. The rest is joined onto the root, resolved with
# `os.path.realpath`, and must still lie inside the root by `os.path.commonpath`, so a symlink
# that leaves the root is "not found". Index files and precompressed `.zst`/`.br`/`.gz` siblings
# pass the same check (CVE-2024-42367). The result is plain data: a `StaticFile` (the stat of
# each representation) or a `Directory`.
#
# Everything here is synchronous and imports no trioserve module at runtime (nor trio).

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .._types import Scope

__all__ = [
    "DirEntry",
    "Directory",
    "FileInfo",
    "Representation",
    "ResolvedPath",
    "Resource",
    "StaticFile",
    "get_route_path",
    "is_inside",
    "load_resource",
    "quote_segment",
    "resolve_path",
    "split_path",
]

# (content coding, file suffix) in the server's order of preference: zstd decodes fastest at a
# size close to brotli's, brotli output is the smallest, gzip is what every client decodes.
_PRECOMPRESSED = (("zstd", ".zst"), ("br", ".br"), ("gzip", ".gz"))

_DRIVE = re.compile(r"[A-Za-z]:")


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
        encoding: Content coding (`"zstd"`, `"br"`, `"gzip"`) or None for the file itself.
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
    """One line of a directory listing.

    Attributes:
        name: The entry's name in its directory.
        is_dir: Whether it is a directory (otherwise a regular file).
        size: Its length in bytes (0 for a directory).
        mtime: Its modification time in whole seconds since the epoch.
    """

    name: str
    is_dir: bool = False
    size: int = 0
    mtime: int = 0


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

    Dot segments are removed as RFC 3986 section 5.2.4 says: empty and "." segments are dropped,
    ".." drops the segment before it (so "/docs/../index.html" is "index.html"). The path is
    not unquoted: "%2e%2e" is a file name.

    Returns:
        The segments, or None if a ".." would climb above the root, or any other segment
        (even one a later ".." removes) contains NUL or a backslash, looks like a drive ("C:"),
        or starts with "." while dotfiles are not allowed.
    """
    segments: list[str] = []
    for segment in route_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None  # above the root
            segments.pop()
            continue
        if (
            "\x00" in segment
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


def quote_segment(segment: str, safe: str) -> str:
    """Percent-encode one path segment for a URL, keeping `safe` and the raw bytes of odd names."""
    try:  # names the filesystem handed us as surrogate escapes go back out as their raw bytes
        return urllib.parse.quote(segment, safe=safe, errors="surrogateescape")
    except UnicodeEncodeError:
        return urllib.parse.quote(segment, safe=safe, errors="surrogatepass")


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
