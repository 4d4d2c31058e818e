"""HTTP header values for static files: dates, byte ranges, Accept-Encoding, entity tags and
Content-Type. Pure functions of strings: no I/O, no trioserve import."""

from __future__ import annotations

import calendar
import email.utils
import mimetypes
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import TypeAlias

__all__ = [
    "DEFAULT_MAX_RANGES",
    "ByteRange",
    "CacheRules",
    "cache_control_for",
    "content_type_for",
    "http_date",
    "parse_accept_encoding",
    "parse_cache_control_rule",
    "parse_http_date",
    "parse_range",
    "tag_matches",
]

#: Browsers and download managers ask for a handful of ranges; more than this is a bug or an
#: attack. Starlette settled on the same cap after CVE-2025-62727.
DEFAULT_MAX_RANGES = 100

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

_ENTITY_TAG = re.compile(r'(W/)?"([^"]*)"')
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")

# Positions beyond any real file; longer digit strings are clamped to this instead of being
# converted (int() refuses more than 4300 digits, and nobody has an exabyte file).
_HUGE = 1 << 62


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` (inclusive) to `stop` (exclusive) of a file."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        """Number of bytes."""
        return self.stop - self.start


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
def http_date(timestamp: int) -> str:
    """Format epoch seconds as an IMF-fixdate (Last-Modified); cached, as files share mtimes."""
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


def tag_matches(value: str, etag: str, *, weak: bool) -> bool:
    """Whether an If-Match or If-None-Match `value` names `etag`; `weak` allows W/ tags.

    `etag` may itself be weak (`W/"..."`, a body compressed on the fly): it then matches only
    under weak comparison.
    """
    if value.strip() == "*":
        return True
    if etag.startswith("W/"):
        if not weak:  # strong comparison: a weak tag never matches
            return False
        etag = etag[2:]
    opaque = etag[1:-1]
    return any(
        match.group(2) == opaque and (weak or match.group(1) is None)
        for match in _ENTITY_TAG.finditer(value)
    )


#: Cache-Control rules: (glob pattern, value) pairs, the first matching pattern wins.
CacheRules: TypeAlias = tuple[tuple[str, str], ...]

# Characters that make the text before "=" a pattern: a Cache-Control directive name is a token
# of letters, digits and "-", never one of these.
_PATTERN_CHARS = frozenset("/*?[.")


def parse_cache_control_rule(text: str) -> tuple[str, str]:
    """Split a `PATTERN=VALUE` rule; a bare value (`public, max-age=60`) gets the pattern "*".

    The text before the first "=" is a pattern when it holds "/", ".", or a glob character, as
    no Cache-Control directive name does (`max-age=60` is a bare value).
    """
    pattern, equals, value = text.partition("=")
    if equals and _PATTERN_CHARS.intersection(pattern):
        return pattern.strip(), value.strip()
    return "*", text.strip()


def cache_control_for(rules: CacheRules, url_path: str) -> str | None:
    """The value of the first rule whose glob matches `url_path` (case-sensitive), or None.

    A pattern with a "/" is matched against the whole path below the mount point ("/assets/*");
    one without against the last segment only ("*.html", "index.html"). "*" matches across "/".
    """
    name = url_path.rpartition("/")[2]
    for pattern, value in rules:
        if fnmatchcase(url_path if "/" in pattern else name, pattern):
            return value
    return None
