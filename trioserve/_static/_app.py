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
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar

import sniffio

from .._lifespan import complete_lifespan
from ._decide import ALLOWED_METHODS, decide
from ._headers import DEFAULT_MAX_RANGES
from ._listing import list_directory
from ._paths import Directory, DirEntry, Representation, load_resource, split_path
from ._plan import EmptyBody, FileRange, InlineBody, ResponsePlan, StaticRequest, WholeFile

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


def _is_header_value(value: str) -> bool:
    return all(" " <= char <= "~" or char == "\t" for char in value)


class StaticFiles:
    """An ASGI 3 app serving the files under one directory.

    GET and HEAD with validators (ETag, Last-Modified), conditional requests, single and
    multipart ranges, precompressed `.zst`/`.br`/`.gz` siblings, index files, slash redirects and
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
