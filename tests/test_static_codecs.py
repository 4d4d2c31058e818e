"""trioserve._static._codecs: the compressors and the bounded cache of compressed bodies."""

from __future__ import annotations

import gzip
import importlib

import brotli
import pytest

from trioserve._static._codecs import (
    CompressionCache,
    available_codings,
    compress,
    new_compressor,
)

# compression.zstd on Python 3.14, the backports.zstd package before (trioserve[compression]).
try:
    zstd = importlib.import_module("compression.zstd")
except ImportError:
    zstd = importlib.import_module("backports.zstd")

DATA = b"".join(b"line %d of some text that repeats a lot\n" % i for i in range(20000))

DECODERS = {"gzip": gzip.decompress, "br": brotli.decompress, "zstd": zstd.decompress}


def test_every_coding_is_available_with_the_compression_extra() -> None:
    assert available_codings() == ("zstd", "br", "gzip")


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_streamed_output_decodes_to_the_input(coding: str) -> None:
    compressor = new_compressor(coding)
    out = b"".join(compressor.compress(DATA[i : i + 65536]) for i in range(0, len(DATA), 65536))
    out += compressor.flush()
    assert DECODERS[coding](out) == DATA
    assert len(out) < len(DATA) // 4
    assert DECODERS[coding](compress(coding, DATA)) == DATA


def test_unknown_coding_is_refused() -> None:
    with pytest.raises(ValueError, match="deflate"):
        new_compressor("deflate")


def key(n: int, coding: str = "gzip") -> tuple[int, int, int, int, str]:
    return (1, n, 100, 5, coding)


def test_cache_keys_include_the_file_version_and_coding() -> None:
    cache = CompressionCache(1000)
    cache.put(key(1), b"g")
    assert cache.get(key(1)) == b"g"
    assert cache.get(key(1, "br")) is None
    assert cache.get((1, 1, 101, 5, "gzip")) is None  # size changed
    assert cache.get((1, 1, 100, 6, "gzip")) is None  # mtime changed


def test_cache_evicts_the_least_recently_used_past_its_byte_bound() -> None:
    cache = CompressionCache(30, max_entry_bytes=30)
    for n in range(3):
        cache.put(key(n), bytes(10))
    assert cache.get(key(0)) is not None  # now the most recent
    cache.put(key(3), bytes(10))
    assert cache.get(key(1)) is None
    assert [cache.get(key(n)) is not None for n in (0, 2, 3)] == [True, True, True]
    assert cache.size == 30


def test_cache_bounds_entries_and_entry_size() -> None:
    cache = CompressionCache(1000, max_entries=2, max_entry_bytes=50)
    cache.put(key(0), bytes(51))
    assert len(cache) == 0
    for n in range(5):
        cache.put(key(n), bytes(1))
    assert len(cache) == 2
    assert cache.size == 2


def test_replacing_an_entry_keeps_the_size_right() -> None:
    cache = CompressionCache(100)
    cache.put(key(0), bytes(40))
    cache.put(key(0), bytes(10))
    assert (len(cache), cache.size) == (1, 10)


def test_a_zero_byte_cache_keeps_nothing() -> None:
    cache = CompressionCache(0)
    cache.put(key(0), b"x")
    assert cache.get(key(0)) is None
