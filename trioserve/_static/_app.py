"""`StaticFiles`, the ASGI app: lookup, decision, then sending what was decided."""

# Theory of operation
# ===================
#
# This is step 3 of a request (see the package comment), the only async one: lookup and
# decision, then `_send` opens the planned file, checks it is still the file decided on (a file
# replaced in between is looked up once more here), and sends it. Error bodies are small inline
# bodies in the form the client's Accept prefers (`trioserve._http._problem`), or a configured
# error page.
#
# A plain GET or HEAD (no precondition, no Range, a path in the form of its cache key) whose
# answer the open-file cache holds whole (a fresh entry, the plan kept for its method and
# Accept-Encoding, a small file's bytes) takes a fast path (`_ready`): the same head and bytes
# (none for HEAD) `_serve` would send, without building a `StaticRequest` or deciding. Anything
# else, or any doubt (header names not in lower-case bytes), goes the general way; the fast path
# changes no cache state but the LRU order the general way would change, so revalidation and
# safety are the general way's.
#
# stat, realpath and open run synchronously on the event loop, as in nginx: on a local filesystem
# they cost microseconds, and a thread hop per request would dominate the cost of a small file.
# Larger reads, compression and directory listings go to a thread. trio's thread pool is used
# only when running under trio, so the app also works inside Starlette on uvicorn (asyncio).

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Literal

from .._lifespan import complete_lifespan
from ._codecs import DEFAULT_CACHE_BYTES, CompressionCache, available_codings
from ._decide import ALLOWED_METHODS, decide, spa_fallback_plan
from ._encoding import DEFAULT_COMPRESS_MIN_SIZE, Compression
from ._fallback import error_page_plan, wants_error_page, wants_spa_fallback
from ._filecache import DEFAULT_VALID, MAX_BODY_SIZE, MAX_PLANS, FileCache
from ._headers import DEFAULT_MAX_RANGES, CacheRules, parse_cache_control_rule
from ._listing import list_directory
from ._paths import (
    Directory,
    DirEntry,
    Resource,
    StaticFile,
    get_route_path,
    is_inside,
    load_resource,
    split_path,
)
from ._plan import CONDITIONAL_FIELDS, EmptyBody, ResponsePlan, StaticRequest, WholeFile
from ._send import CHUNK_SIZE, open_verified, read_whole, run_in_thread, send_plan

if TYPE_CHECKING:
    from .._types import Receive, Scope, Send

__all__ = ["CHUNK_SIZE", "StaticFiles"]

# The request fields a plain GET's plan kept in the cache depends on (Accept-Encoding) or that
# make it decided afresh (`StaticRequest.plan_key`).
PLAN_FIELDS = frozenset({b"accept-encoding", *CONDITIONAL_FIELDS})


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
        cache_valid: Seconds a lookup is trusted per path (an open-file cache, as nginx's
            `open_file_cache`; see `_filecache`): a change to a file is seen at most this long
            after it happens. Files up to 64 KiB are then served from memory. 0: no cache.

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
        cache_valid: float = DEFAULT_VALID,
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
        if not cache_valid >= 0:
            raise ValueError(f"cache_valid must be >= 0 seconds, not {cache_valid!r}")
        self.file_cache = FileCache(cache_valid) if cache_valid > 0 else None
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
            cache = self.file_cache
            if cache is not None and (scope["method"] == "GET" or scope["method"] == "HEAD"):
                ready = _ready(scope, cache)
                if ready is not None:
                    await _send_whole(send, *ready)
                    return
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

    def _cache_key(self, request: StaticRequest) -> str | None:
        # The path without dot segments: "/a/b" for a file, "/", "/a/" for a directory's index
        # file (the trailing "/" is part of the key: "/a" is a redirect, "/a/" the index). A
        # path already in that form is its own key (the common case, without splitting it).
        # Only what a lookup of the path itself found is cached, so a path that safety refuses
        # has no entry under any key.
        path = request.route_path
        if self.file_cache is None:
            return None
        if path.startswith("/") and "/." not in path and "//" not in path:
            return path
        segments = split_path(path, allow_dotfiles=self.allow_dotfiles)
        if segments is None:
            return None
        if path.endswith("/"):
            return "/" + "".join(segment + "/" for segment in segments)
        return "/" + "/".join(segments) if segments else None

    def _load(self, route_path: str) -> Resource | None:
        return load_resource(
            self.directory, route_path, allow_dotfiles=self.allow_dotfiles, index=self.index
        )

    async def _decide(self, request: StaticRequest) -> ResponsePlan:
        resource = None
        if request.method in ALLOWED_METHODS:
            key = self._cache_key(request)
            if key is None or self.file_cache is None:
                resource = self._load(request.route_path)
            else:
                resource, plans = self.file_cache.lookup(
                    key, partial(self._load, request.route_path)
                )
                plan_key = request.plan_key()
                if plans is not None and plan_key:
                    plan = plans.get(plan_key)
                    if plan is None:
                        plan = self._decide_file(request, resource)
                        # Only a file's plan is kept: it depends on method and Accept-Encoding
                        # alone. An error's body follows Accept ("/file.txt/" is a 404 for a
                        # file that is cached), so it is decided afresh for every client.
                        if plan.file is not None and len(plans) < MAX_PLANS:
                            plans[plan_key] = plan
                    return plan
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
                    entries: tuple[DirEntry, ...] | None = await run_in_thread(listing)
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
        return self._decide_file(request, resource)

    def _decide_file(self, request: StaticRequest, resource: Resource | None) -> ResponsePlan:
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
        cache = self.file_cache
        fd = None
        # A file replaced between its stat and its open (a deploy renaming over it) is looked
        # up once more; if it keeps changing, or cannot be opened, the answer is 404.
        for _attempt in range(2):
            plan = await self._plan(request)
            file = plan.file
            if file is None:
                break
            body = plan.body
            small = type(body) is WholeFile and body.size <= MAX_BODY_SIZE
            # A HEAD's 200 (no body, the file's head): no open needed when the file's bytes are
            # held, as they were read from an open file checked against this very identity.
            if cache is not None and (small or type(body) is EmptyBody):
                data = cache.body(file)
                if data is not None:  # a fresh entry named this very file: no system call
                    await _send_whole(send, plan, data if small else b"")
                    return
            fd = open_verified(file)
            if fd is not None:
                if small and cache is not None:
                    try:
                        data = read_whole(fd, file.info.size)
                    finally:
                        os.close(fd)
                    cache.keep_body(file, data)
                    await _send_whole(send, plan, data)
                    return
                break
            if cache is not None and (key := self._cache_key(request)) is not None:
                cache.forget(key)
        else:
            plan = decide(request, None)
        extensions = scope.get("extensions") or {}
        try:
            await send_plan(
                plan,
                fd,
                send,
                pathsend="http.response.pathsend" in extensions,
                cache=self.compression_cache,
            )
        finally:
            if fd is not None:
                os.close(fd)


def _ready(scope: Scope, cache: FileCache) -> tuple[ResponsePlan, bytes] | None:
    """The plan and body the general path would send for a plain GET or HEAD, when the cache
    holds both; None sends the request the general way (`_serve`).

    Plain: a path that is its own cache key (`_cache_key`), no precondition or Range (the
    fields `plan_key` looks for), and header names in the form `StaticRequest` would make them
    (lower-case bytes; anything else is left to it). Accept-Encoding is joined as
    `StaticRequest` joins it, since the plan kept depends on it.
    """
    path: str = scope["path"]
    if scope.get("root_path"):
        path = get_route_path(scope)
    if path[:1] != "/" or "/." in path or "//" in path:
        return None
    headers = scope["headers"]
    if type(headers) is not list and type(headers) is not tuple:
        return None  # an iterator read here would be empty for the general path
    accept_encoding = None
    for name, value in headers:
        if type(name) is not bytes:
            return None
        if name in PLAN_FIELDS:
            if name != b"accept-encoding" or type(value) is not bytes:
                return None
            accept_encoding = value if accept_encoding is None else accept_encoding + b", " + value
        elif not name.islower():
            return None
    return cache.ready(path, (scope["method"], accept_encoding))


async def _send_whole(send: Send, plan: ResponsePlan, data: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": plan.status, "headers": list(plan.headers)}
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})
