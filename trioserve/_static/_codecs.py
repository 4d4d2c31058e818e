"""The compressors StaticFiles uses on the fly, and the bounded cache of what they produced."""

# Theory of operation
# ===================
#
# gzip comes from the standard library's zlib and is always there. zstd comes from
# `compression.zstd` (Python 3.14) or the `backports.zstd` package, brotli from the `brotli`
# package; both are in the `trioserve[compression]` extra and are used when importable.
#
# Levels: responses are compressed once per file version and encoding and then come from the
# cache, but the first request waits for it, so the levels are the libraries' own "fast and
# good" defaults, not their maximum: gzip 6 (zlib's default; 9 gains ~1% for twice the CPU),
# zstd 3 (its default: faster than gzip 6 and smaller), brotli 5 (quality 11, brotli's default,
# is meant for offline use and is ~50x slower; 4 to 6 is the usual choice for dynamic content,
# smaller than gzip 9). Precompressed `.br`/`.zst` siblings are the way to ship the maximum.
#
# Memory: a streamed response holds one 64 KiB chunk of input, its output, and its compressor's
# state (zlib ~260 KiB; zstd 3 and brotli 5 a few MiB at most), however big the file.
#
# The cache holds whole compressed bodies keyed by (dev, inode, size, mtime_ns, coding): a file
# changed on disk gets a new key, and the old entry ages out. It is an LRU bounded twice: by
# total bytes (`DEFAULT_CACHE_BYTES`) and by entries (`DEFAULT_CACHE_ENTRIES`, which bounds the
# per-entry overhead of many tiny bodies); a body over `DEFAULT_CACHE_ENTRY_BYTES` is never
# kept, so one big file cannot flush the small ones that make up most requests. It is only used
# from the event loop thread (compression runs in worker threads, but the cache is read before
# and filled after), so it needs no lock. Each worker process has its own.

from __future__ import annotations

import importlib
import zlib
from collections import OrderedDict
from typing import Any, Protocol

from ._encoding import SERVER_CODINGS

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_CACHE_ENTRY_BYTES",
    "CacheKey",
    "CompressionCache",
    "Compressor",
    "available_codings",
    "compress",
    "new_compressor",
]

#: 16 MiB: the compressed CSS, JS, HTML and JSON of a typical site (a few MiB) fits many times
#: over, while staying small next to a server process's own memory.
DEFAULT_CACHE_BYTES = 16 * 1024 * 1024
#: 1024 entries: enough for a site's text assets in three codings; bounds the dict's overhead.
DEFAULT_CACHE_ENTRIES = 1024
#: 1 MiB: bigger compressed bodies are streamed every time (they are rare, and caching one would
#: evict dozens of small ones).
DEFAULT_CACHE_ENTRY_BYTES = 1024 * 1024

GZIP_LEVEL = 6
ZSTD_LEVEL = 3
BROTLI_QUALITY = 5

CacheKey = tuple[int, int, int, int, str]


class Compressor(Protocol):
    """A streaming compressor: `compress` each chunk, then `flush` once for the end."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def _optional(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


_zstd: Any = _optional("compression.zstd", "backports.zstd")
_brotli: Any = _optional("brotli")


class _Brotli:
    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor = _brotli.Compressor(quality=BROTLI_QUALITY)

    def compress(self, data: bytes, /) -> bytes:
        return bytes(self._compressor.process(data))

    def flush(self) -> bytes:
        return bytes(self._compressor.finish())


def available_codings() -> tuple[str, ...]:
    """The codings this installation can produce, in the server's order (gzip always)."""
    present = {"gzip": True, "zstd": _zstd is not None, "br": _brotli is not None}
    return tuple(coding for coding in SERVER_CODINGS if present[coding])


def new_compressor(coding: str) -> Compressor:
    """A fresh streaming compressor for `coding` ("gzip", "zstd" or "br").

    Raises:
        ValueError: If the coding is unknown or its library is not installed.
    """
    if coding == "gzip":
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if coding == "zstd" and _zstd is not None:
        compressor: Compressor = _zstd.ZstdCompressor(level=ZSTD_LEVEL)
        return compressor
    if coding == "br" and _brotli is not None:
        return _Brotli()
    raise ValueError(f"cannot compress with {coding!r}")


def compress(coding: str, data: bytes) -> bytes:
    """`data` compressed whole with `coding`."""
    compressor = new_compressor(coding)
    return compressor.compress(data) + compressor.flush()


class CompressionCache:
    """An LRU of compressed bodies, bounded in bytes, entries and entry size (see above)."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        *,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        max_entry_bytes: int = DEFAULT_CACHE_ENTRY_BYTES,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.size = 0
        self._entries: OrderedDict[CacheKey, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> bytes | None:
        """The body stored under `key` (now the most recently used), or None."""
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, key: CacheKey, body: bytes) -> None:
        """Store `body` unless it is over the entry bound, evicting the least recently used."""
        if len(body) > self.max_entry_bytes or self.max_entries < 1:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._entries[key] = body
        self.size += len(body)
        while self.size > self.max_bytes or len(self._entries) > self.max_entries:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted)
