"""Error bodies that honour the request's `Accept`: problem+json, a small HTML page, or text.

One pure function, `negotiate_error`, used for every response the server or `StaticFiles` writes
itself. Standard library only, no I/O: the HTTP/1.1 and HTTP/2 adapters and the static-file
decision call it alike, and its tests need no sockets.
"""

# Theory of operation
# ===================
#
# Three representations are offered, in the server's order of preference for a tie:
#
#   text/plain                 "404 Not Found\n" (plus the detail), what curl users read;
#   application/problem+json  RFC 9457 (`type`, `title`, `status`, `detail`), for API clients;
#   text/html                  a small escaped page, for browsers.
#
# Each offer gets the q-value of the most specific media range of `Accept` that matches it
# (RFC 9110 section 12.5.1: "text/html;q=0.5, text/*;q=0.9" gives text/html 0.5). A client asking
# for `application/json` accepts problem+json: RFC 9457 section 3 says such clients understand it.
# The highest q wins; on a tie the order above decides, so `*/*` (curl, an empty Accept) gets
# text and a browser's `text/html, ..., */*;q=0.8` gets HTML. When nothing is acceptable text is
# sent anyway: a 406 in place of an error would only hide the error.
#
# The body never holds request data: `status` picks the title, `detail` is the caller's own
# client-safe words, escaped for HTML and JSON. The caller adds `Vary: Accept` (the function
# returns the value to use as `VARY`).

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from http import HTTPStatus

__all__ = [
    "VARY",
    "accepts_media_type",
    "choose_error_type",
    "negotiate_error",
    "preferred_media_type",
]

#: The Vary header value every negotiated error response carries.
VARY = b"Accept"

_PLAIN = "text/plain"
_PROBLEM = "application/problem+json"
_HTML = "text/html"

# (offer, the media ranges that name it besides wildcards), in the server's order for ties.
_OFFERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (_PLAIN, ("text/plain",)),
    (_PROBLEM, ("application/problem+json", "application/json")),
    (_HTML, ("text/html", "application/xhtml+xml")),
)

_CONTENT_TYPES = {
    _PLAIN: b"text/plain; charset=utf-8",
    _PROBLEM: b"application/problem+json",
    _HTML: b"text/html; charset=utf-8",
}

# RFC 9110's names where Python before 3.13 still has RFC 7231's: titles do not change with the
# interpreter.
_TITLES = {
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}

# A client can send a long Accept; only this many media ranges are looked at (browsers send
# fewer than ten; the cap keeps the work per error bounded whatever a client sends).
_MAX_RANGES = 64


def _parse_q(params: list[str]) -> float | None:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def _accept_ranges(accept: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for item in accept.split(",")[:_MAX_RANGES]:
        media, *params = item.split(";")
        media = media.strip().lower()
        if "/" not in media:
            continue
        q = _parse_q(params)
        if q is not None:
            ranges.append((media, q))
    return ranges


def _q_for(names: tuple[str, ...], ranges: list[tuple[str, float]]) -> float:
    # Specificity: an exact type (2) beats "type/*" (1) beats "*/*" (0).
    best_rank, best_q = -1, 0.0
    main = names[0].split("/")[0]
    for media, q in ranges:
        if media in names:
            rank = 2
        elif media == f"{main}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        if rank > best_rank or (rank == best_rank and q > best_q):
            best_rank, best_q = rank, q
    return best_q


def preferred_media_type(
    accept: str | bytes | None, offers: Sequence[tuple[str, tuple[str, ...]]]
) -> str:
    """The offer the client prefers: the highest q, ties (and no Accept) to the first offer.

    Args:
        accept: The request's Accept header, or None.
        offers: (media type, the media ranges naming it besides wildcards) pairs, in the
            server's order of preference. The first type's main type is matched by "type/*".

    Returns:
        One of the offered media types; the first when none is acceptable.
    """
    if accept is None:
        return offers[0][0]
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    ranges = _accept_ranges(accept)
    best, best_q = offers[0][0], 0.0
    for offer, names in offers:
        q = _q_for(names, ranges)
        if q > best_q:
            best, best_q = offer, q
    return best


def accepts_media_type(accept: str | bytes | None, names: tuple[str, ...]) -> bool:
    """Whether `accept` gives the type `names[0]` (also named by `names[1:]`) a q above 0.

    No Accept header accepts everything (RFC 9110 section 12.5.1).
    """
    if accept is None:
        return True
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    return _q_for(names, _accept_ranges(accept)) > 0


def choose_error_type(accept: str | bytes | None) -> str:
    """The media type of the error body for this Accept header (see the module comment)."""
    return preferred_media_type(accept, _OFFERS)


def negotiate_error(
    status: int, detail: str | None = None, accept: str | bytes | None = None
) -> tuple[bytes, bytes]:
    """The Content-Type and body of an error response, in the form the client prefers.

    Args:
        status: The HTTP status code (its standard phrase is the title).
        detail: Client-safe words about this occurrence, or None. Never request data or a repr.
        accept: The request's Accept header (all values joined by ", "), or None.

    Returns:
        (Content-Type value, body), both bytes. The caller adds Content-Length and
        `Vary: Accept` (`VARY`).
    """
    title = _TITLES.get(status)
    if title is None:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
    if detail == title:
        detail = None
    kind = choose_error_type(accept)
    if kind == _PROBLEM:
        problem: dict[str, str | int] = {"type": "about:blank", "title": title, "status": status}
        if detail:
            problem["detail"] = detail
        body = json.dumps(problem, ensure_ascii=True).encode("ascii") + b"\n"
    elif kind == _HTML:
        heading = html.escape(f"{status} {title}")
        paragraph = f"<p>{html.escape(detail)}</p>\n" if detail else ""
        body = (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head><meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{heading}</title></head>\n"
            f"<body>\n<h1>{heading}</h1>\n{paragraph}</body>\n</html>\n"
        ).encode()
    else:
        text = f"{status} {title}\n" if not detail else f"{status} {title}: {detail}\n"
        body = text.encode("utf-8", "replace")
    return _CONTENT_TYPES[kind], body
