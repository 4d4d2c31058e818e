"""Sending a `ResponsePlan`: opening the planned file, then its bytes as ASGI messages."""

# Theory of operation
# ===================
#
# The planned file is opened and fstat'ed to check it is still the file the decision was made
# on (`open_verified`); the caller looks a replaced file up once more. A whole file of up to
# 64 KiB is read in one synchronous pread and sent as one message (cheaper than any hand-over);
# larger files go to the server with `http.response.pathsend` when it is offered, or are read in
# 64 KiB chunks in a worker thread. A body compressed on the fly comes whole from the cache
# (with Content-Length), is compressed whole in one thread hop when the file is small, or is
# compressed and sent chunk by chunk (bounded memory), then cached when small enough.

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import sniffio

from ._codecs import CacheKey, CompressionCache, Compressor, new_compressor
from ._paths import Representation
from ._plan import CompressedFile, EmptyBody, FileRange, InlineBody, ResponsePlan, WholeFile

if TYPE_CHECKING:
    from .._types import Send

__all__ = ["CHUNK_SIZE", "open_verified", "read_whole", "run_in_thread", "send_plan"]

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


async def run_in_thread(function: Callable[[], _T]) -> _T:
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


def read_whole(fd: int, size: int) -> bytes:
    """The `size` bytes of a small file, read at once from the file already open and verified."""
    data = _pread(fd, size, 0)
    if len(data) != size:
        raise RuntimeError("static file shrank while it was being sent")
    return data


def open_verified(representation: Representation) -> int | None:
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
        data = await run_in_thread(partial(_pread, fd, size, offset)) if size else b""
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
        data = await run_in_thread(partial(_compress_chunk, compressor, fd, body.size, 0, True))
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
        out = await run_in_thread(partial(_compress_chunk, compressor, fd, size, offset, last))
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


async def send_plan(
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
            data = read_whole(fd, body.size)
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
