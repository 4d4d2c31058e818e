"""Which responses are compressed on the fly, and with which coding. Pure: no I/O, stdlib only.

The codecs themselves (zlib, zstd, brotli) and the cache of compressed bodies live in `_codecs`;
this module only decides, so every rule is tested without compressing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._headers import parse_accept_encoding

__all__ = [
    "DEFAULT_COMPRESS_MIN_SIZE",
    "SERVER_CODINGS",
    "Compression",
    "choose_coding",
    "is_compressible",
]

#: The codings StaticFiles can produce, in the server's order of preference: zstd compresses and
#: decodes fastest at a size close to brotli's, brotli's output is the smallest at a higher CPU
#: cost, gzip is what every client decodes.
SERVER_CODINGS = ("zstd", "br", "gzip")

#: Below 1 KiB the saving is a few hundred bytes at most, less than a TCP segment, while the
#: CPU cost and the loss of Content-Length/sendfile stay (nginx's gzip_min_length docs and
#: Cloudflare use the same order of magnitude).
DEFAULT_COMPRESS_MIN_SIZE = 1024

# Types that compress well: text, and the formats that are text in practice. Images, audio,
# video, fonts in woff/woff2 and archives are already compressed: compressing them again costs
# CPU for nothing.
_COMPRESSIBLE_TYPES = frozenset(
    {
        "application/atom+xml",
        "application/ecmascript",
        "application/geo+json",
        "application/javascript",
        "application/json",
        "application/ld+json",
        "application/manifest+json",
        "application/rss+xml",
        "application/vnd.ms-fontobject",
        "application/wasm",
        "application/x-javascript",
        "application/xhtml+xml",
        "application/xml",
        "font/otf",
        "font/ttf",
        "image/bmp",
        "image/svg+xml",
        "image/vnd.microsoft.icon",
        "image/x-icon",
    }
)


@dataclass(frozen=True, slots=True)
class Compression:
    """How StaticFiles compresses on the fly.

    Attributes:
        codings: The codings that can be produced, in the server's order of preference.
        min_size: Files smaller than this many bytes are sent as they are.
    """

    codings: tuple[str, ...] = ("gzip",)
    min_size: int = DEFAULT_COMPRESS_MIN_SIZE


def is_compressible(content_type: str) -> bool:
    """Whether a response of this Content-Type is worth compressing."""
    mime = content_type.partition(";")[0].strip().lower()
    return (
        mime.startswith("text/") or mime in _COMPRESSIBLE_TYPES or mime.endswith(("+json", "+xml"))
    ) and mime != "text/event-stream"


def choose_coding(accept_encoding: str | None, codings: tuple[str, ...]) -> str | None:
    """The coding to compress with for this Accept-Encoding, or None to send identity.

    The acceptable coding with the highest q wins; ties go to the order of `codings`. As for
    precompressed siblings, identity wins when the client prefers it explicitly
    (`identity;q=` or `*;q=` higher), and no Accept-Encoding header means identity.
    """
    if accept_encoding is None or not codings:
        return None
    prefs = parse_accept_encoding(accept_encoding)
    star = prefs.get("*")
    best: str | None = None
    best_q = 0.0
    for coding in codings:
        q = prefs.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity_q = prefs.get("identity", star)
    if identity_q is not None and identity_q > best_q:
        return None
    return best
