"""File bodies on HTTP/1.1: small files inline with the head, large ones by sendfile.

Opening, stat-ing, a 64 KiB read and sendfile run on the event loop, as in nginx without its
thread pool: from the page cache they take microseconds. A cold cache on a slow disk (or NFS)
stalls the loop for the read's duration; only non-socket streams (TLS) read large files in a
worker thread (see :meth:`Transport.send_file`).
"""

from __future__ import annotations

import os
import stat
from typing import Final

from .._transport import Transport
from ._protocol import ServerProtocol

__all__ = ["INLINE_FILE_SIZE", "open_file", "write_file"]

# The largest file sent inline: read in one go and written together with the response head (one
# write, no sendfile set-up for the small files that dominate static traffic).
INLINE_FILE_SIZE: Final = 64 * 1024


def open_file(path: str) -> tuple[int, int]:
    """Open a regular file for reading: its descriptor (the caller closes it) and size.

    Raises:
        OSError: it cannot be opened.
        RuntimeError: it is not a regular file (an app's mistake).
    """
    # O_NONBLOCK: a FIFO handed over by mistake must not block the event loop at open().
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RuntimeError(f"http.response.pathsend needs a regular file: {path!r}")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


async def write_file(
    proto: ServerProtocol, transport: Transport, fd: int, size: int, head: bytes
) -> int:
    """Write ``head`` and the file as the response body; returns the body bytes sent."""
    if proto.discards_body:
        await transport.send(head + proto.send_end())
        return 0
    if size <= INLINE_FILE_SIZE:
        data = os.pread(fd, size, 0)
        await transport.send(head + proto.send_data(data) + proto.send_end())
        return size
    await transport.send(head)
    for piece in proto.send_data_passthrough(_FileRange(fd, 0, size)):
        if isinstance(piece, _FileRange):
            await transport.send_file(piece.fd, piece.offset, piece.count)
        elif piece:
            await transport.send(piece)  # type: ignore[arg-type]
    end = proto.send_end()
    if end:
        await transport.send(end)
    return size


class _FileRange:
    """A byte range of an open file, standing in for body bytes so the framing can count it."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count
