"""`StaticFiles`, the ASGI app: lookup, decision, then sending what was decided."""

# Theory of operation
# ===================
#
# This is step 3 of a request (see the package comment), the only async one. The planned file is
# opened and fstat'ed to check it is still the file the decision was made on (a file replaced in
# between is looked up once more), then either handed to the server with
# `http.response.pathsend` or read in 64 KiB chunks in a worker thread. Error bodies are small
# inline bodies in the form the client's Accept prefers (`trioserve._http._problem`).
#
# stat, realpath and open run synchronously on the event loop, as in nginx: on a local filesystem
# they cost microseconds, and a thread hop per request would dominate the cost of a small file.
# For the same reason a whole file of up to 64 KiB is read in one synchronous pread and sent as
# one message. Larger files go to the server with pathsend (sendfile) when it is offered; other
# reads and directory listings go to a thread. trio's thread pool is used only when running under
# trio, so the app also works inside Starlette on uvicorn (asyncio).

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

import sniffio

from .._lifespan import complete_lifespan
from ._codecs import (
    DEFAULT_CACHE_BYTES,
    CacheKey,
    CompressionCache,
    Compressor,
    available_codings,
    new_compressor,
)
from ._decide import ALLOWED_METHODS, decide, spa_fallback_plan
from ._encoding import DEFAULT_COMPRESS_MIN_SIZE, Compression
from ._fallback import error_page_plan, wants_error_page, wants_spa_fallback
from ._headers import DEFAULT_MAX_RANGES, CacheRules, parse_cache_control_rule
from ._listing import list_directory
from ._paths import (
    Directory,
    DirEntry,
    Representation,
    StaticFile,
    is_inside,
    load_resource,
    split_path,
)
from ._plan import (
    CompressedFile,
    EmptyBody,
    FileRange,
    InlineBody,
    ResponsePlan,
    StaticRequest,
    WholeFile,
)

if TYPE_CHECKING:
    from .._types import Receive, Scope, Send

__all__ = ["CHUNK_SIZE", "StaticFiles"]

_T = TypeVar("_T")

#: Big enough that the per-chunk cost (a thread hop and an ASGI message) is small next to the
#: copy, small enough to keep the memory held per connection bounded.
CHUNK_SIZE = 64 * 1024

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


def _compress_chunk(compressor: Compressor, fd: int, size: int, offset: int, last: bool) -> bytes:
    data = _pread(fd, size, offset)
    if len(data) != size:
        raise RuntimeError("static file shrank while it was being sent")
    out = compressor.compress(data)
    return out + compressor.flush() if last else out


async def _send_compressed(
    plan: ResponsePlan, body: CompressedFile, fd: int, send: Send, cache: CompressionCache
) -> None:
    info = plan.file.info if plan.file is not None else None
    if info is None:
        raise RuntimeError("a compressed body needs the file it was decided on")
    key: CacheKey = (info.dev, info.ino, info.size, info.mtime_ns, body.coding)
    data = cache.get(key)
    if body.head:
        length = () if data is None else ((b"content-length", str(len(data)).encode()),)
        headers = [*plan.headers, *length]
        await send({"type": "http.response.start", "status": plan.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if data is None and body.size <= CHUNK_SIZE:
        # A small file: compressed whole in one thread hop, so it gets a Content-Length.
        compressor = new_compressor(body.coding)
        data = await _run_in_thread(partial(_compress_chunk, compressor, fd, body.size, 0, True))
        cache.put(key, data)
    if data is not None:
        headers = [*plan.headers, (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": plan.status, "headers": headers})
        await send({"type": "http.response.body", "body": data, "more_body": False})
        return
    # A big file: streamed chunk by chunk (no Content-Length), kept for the cache only while
    # the output stays under the cache's entry bound.
    await send(
        {"type": "http.response.start", "status": plan.status, "headers": list(plan.headers)}
    )
    compressor = new_compressor(body.coding)
    kept: list[bytes] | None = []
    kept_size = 0
    offset = 0
    while offset < body.size:
        size = min(CHUNK_SIZE, body.size - offset)
        last = offset + size >= body.size
        out = await _run_in_thread(partial(_compress_chunk, compressor, fd, size, offset, last))
        offset += size
        if kept is not None:
            kept_size += len(out)
            if kept_size > cache.max_entry_bytes:
                kept = None
            else:
                kept.append(out)
        if out or last:
            await send({"type": "http.response.body", "body": out, "more_body": not last})
    if kept is not None:
        cache.put(key, b"".join(kept))


async def _send_plan(
    plan: ResponsePlan, fd: int | None, send: Send, *, pathsend: bool, cache: CompressionCache
) -> None:
    body = plan.body
    if isinstance(body, CompressedFile):
        if fd is None:
            raise RuntimeError("a file body needs an open file")
        await _send_compressed(plan, body, fd, send, cache)
        return
    await send(
        {"type": "http.response.start", "status": plan.status, "headers": list(plan.headers)}
    )
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


def _is_header_value(value: str) -> bool:
    return all(" " <= char <= "~" or char == "\t" for char in value)


class StaticFiles:
    """An ASGI 3 app serving the files under one directory.

    GET and HEAD with validators (ETag, Last-Modified), conditional requests, single and
    multipart ranges, precompressed `.zst`/`.br`/`.gz` siblings, compression on the fly, index
    files, slash redirects, an optional directory listing, custom error pages and a single-page
    app fallback. Every lookup failure is a 404; see the module comment.

    Args:
        directory: The document root. Its real path is taken once, here.
        autoindex: List directories that have no index file.
        dotfiles: "deny" (404 for any path segment starting with ".") or "allow".
        cache_control: Cache-Control for file responses (200, 206, 304): None, one value for
            every file, or rules: (glob pattern, value) pairs or "PATTERN=VALUE" strings, the
            first match wins, a bare value matches every file. A pattern with a "/" matches the
            path below the mount point ("/assets/*"), one without the file name ("*.html").
        index: Name of the index file served for directory URLs, or None.
        max_ranges: Range headers asking for more ranges than this are ignored (200).
        compress: Compress compressible files (text, JSON, JavaScript, SVG, XML, WASM, ...) on the
            fly for clients that accept it: True for every coding installed (zstd, br, gzip; see
            `trioserve[compression]`), a list of codings to limit them, or False.
        compress_min_size: Files smaller than this many bytes are never compressed on the fly.
        compress_cache_size: Bytes of compressed bodies kept in memory, so that repeated
            requests are not compressed again (0: no cache).
        error_pages: {status: path of a file under the root}: served with that status, in place
            of the built-in error body, to clients that do not prefer JSON or plain text.
        spa_fallback: Path of a file under the root (a single-page app's "index.html") served
            with 200 to a GET or HEAD that matches nothing, whose last path segment has no
            extension, from a client that accepts HTML. Never for paths safety refuses.

    Raises:
        ValueError: If `directory` is not an existing directory, or another argument is invalid.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        autoindex: bool = False,
        dotfiles: Literal["deny", "allow"] = "deny",
        cache_control: str | Iterable[str | tuple[str, str]] | None = None,
        index: str | None = "index.html",
        max_ranges: int = DEFAULT_MAX_RANGES,
        compress: bool | Iterable[str] = True,
        compress_min_size: int = DEFAULT_COMPRESS_MIN_SIZE,
        compress_cache_size: int = DEFAULT_CACHE_BYTES,
        error_pages: Mapping[int, str] | None = None,
        spa_fallback: str | None = None,
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
        rules: list[tuple[str, str]] = []
        if isinstance(cache_control, str):
            rules.append(("*", cache_control.strip()))
        elif cache_control is not None:
            rules.extend(
                parse_cache_control_rule(rule) if isinstance(rule, str) else rule
                for rule in cache_control
            )
        for pattern, value in rules:
            if not _is_header_value(value) or not value:
                raise ValueError(f"cache_control is not a valid header value: {value!r}")
            if not pattern:
                raise ValueError(f"cache_control has an empty pattern for {value!r}")
        installed = available_codings()
        if compress is True:
            codings = installed
        elif compress is False:
            codings = ()
        else:
            codings = tuple(compress)
            unknown = [coding for coding in codings if coding not in installed]
            if unknown:
                raise ValueError(
                    f"cannot compress with {', '.join(map(repr, unknown))}: "
                    f"available are {', '.join(installed)}"
                )
        if compress_min_size < 0:
            raise ValueError(f"compress_min_size must be >= 0, not {compress_min_size!r}")
        if compress_cache_size < 0:
            raise ValueError(f"compress_cache_size must be >= 0, not {compress_cache_size!r}")
        pages = dict(error_pages or {})
        for status, page in pages.items():
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"error_pages keys must be statuses 400 to 599, not {status!r}")
            if not split_path(page, allow_dotfiles=True):
                raise ValueError(f"error page must be a path under the root, not {page!r}")
        if spa_fallback is not None and not split_path(spa_fallback, allow_dotfiles=True):
            raise ValueError(f"spa_fallback must be a path under the root, not {spa_fallback!r}")
        self.error_pages = pages
        self.spa_fallback = spa_fallback
        self.compression = Compression(codings, compress_min_size) if codings else None
        self.compression_cache = CompressionCache(compress_cache_size)
        self.directory = root
        self.autoindex = autoindex
        self.allow_dotfiles = dotfiles == "allow"
        self.cache_control: CacheRules = tuple(rules)
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
        plan = await self._decide(request)
        if plan.status >= 400 and plan.status in self.error_pages and wants_error_page(request):
            page = load_resource(
                self.directory, self.error_pages[plan.status], allow_dotfiles=True, index=None
            )
            if isinstance(page, StaticFile):
                plan = error_page_plan(request, plan, page)
        return plan

    async def _decide(self, request: StaticRequest) -> ResponsePlan:
        resource = None
        if request.method in ALLOWED_METHODS:
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
            if (
                resource is None
                and self.spa_fallback is not None
                and wants_spa_fallback(request)
                and self._is_missing(request.route_path)
            ):
                fallback = load_resource(
                    self.directory, self.spa_fallback, allow_dotfiles=True, index=None
                )
                if isinstance(fallback, StaticFile):
                    return spa_fallback_plan(
                        request,
                        fallback,
                        cache_control=self.cache_control,
                        max_ranges=self.max_ranges,
                        compression=self.compression,
                    )
        return decide(
            request,
            resource,
            cache_control=self.cache_control,
            max_ranges=self.max_ranges,
            compression=self.compression,
        )

    def _is_missing(self, route_path: str) -> bool:
        """Whether nothing at all is at `route_path`, below directories inside the root.

        What safety refused (a refused segment, a symlink leaving the root, a FIFO, a file
        with a path below it) is not missing: it never gets the SPA fallback, so the fallback
        cannot tell whether something exists outside the root.
        """
        segments = split_path(route_path, allow_dotfiles=self.allow_dotfiles)
        if segments is None:
            return False
        path = self.directory
        for segment in segments:
            following = os.path.join(path, segment)
            if not os.path.lexists(following):
                return True
            real = os.path.realpath(following)
            if not is_inside(self.directory, real) or not os.path.isdir(real):
                return False
            path = real
        return False

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
            await _send_plan(
                plan,
                fd,
                send,
                pathsend="http.response.pathsend" in extensions,
                cache=self.compression_cache,
            )
        finally:
            if fd is not None:
                os.close(fd)
