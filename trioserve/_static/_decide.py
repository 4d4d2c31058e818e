"""The static-file decision: a request and what lookup found, to a `ResponsePlan`."""

# Theory of operation
# ===================
#
# This is step 2 of a request (see the package comment), and it is pure: no I/O, no trioserve
# import at runtime (nor trio). Method, preconditions (RFC 9110 section 13.2.2 order),
# Accept-Encoding and Range are evaluated against the data lookup found, giving a frozen
# `ResponsePlan`: status, headers and a body plan. Every protocol rule lives here and is tested
# without I/O.

from __future__ import annotations

import secrets
import urllib.parse
from http import HTTPStatus

from .._http._problem import VARY, negotiate_error, preferred_media_type
from ._encoding import Compression, choose_coding, is_compressible
from ._headers import (
    DEFAULT_MAX_RANGES,
    ByteRange,
    CacheRules,
    cache_control_for,
    content_type_for,
    http_date,
    parse_accept_encoding,
    parse_http_date,
    parse_range,
    tag_matches,
)
from ._listing import (
    LISTING_TYPES,
    parse_sort,
    render_listing,
    render_listing_json,
    render_listing_text,
    sort_entries,
)
from ._paths import (
    Directory,
    DirEntry,
    Representation,
    Resource,
    StaticFile,
    quote_segment,
    split_path,
)
from ._plan import (
    Body,
    CompressedFile,
    EmptyBody,
    FileRange,
    Headers,
    InlineBody,
    MultipartPart,
    MultipartRanges,
    ResponsePlan,
    StaticRequest,
    WholeFile,
)

__all__ = [
    "ALLOWED_METHODS",
    "choose_representation",
    "compressed_etag",
    "decide",
    "spa_fallback_plan",
]

ALLOWED_METHODS = frozenset({"GET", "HEAD"})

# pchar without "/" (segments never contain it) and "%" (always escaped).
_SEGMENT_SAFE = "!$&'()*+,;=:@"
# What may stay unescaped in a query string copied into a Location header.
_QUERY_SAFE = "!$&'()*+,;=:@/?%"


def choose_representation(file: StaticFile, accept_encoding: str | None) -> Representation:
    """Pick the representation of `file` to serve for this Accept-Encoding.

    The encoded sibling with the highest q wins (ties go to the server's order: zstd, br, gzip),
    unless identity is explicitly preferred (`identity;q=` or `*;q=` higher). Without an
    Accept-Encoding header the file itself is served: clients that decode say so. When nothing is
    acceptable the file itself is served as well, rather than a 406.
    """
    if not file.encoded or accept_encoding is None:
        return file.identity
    prefs = parse_accept_encoding(accept_encoding)
    star = prefs.get("*")
    best: Representation | None = None
    best_q = 0.0
    for candidate in file.encoded:
        q = prefs.get(candidate.encoding or "identity", star if star is not None else 0.0)
        if q > best_q:
            best, best_q = candidate, q
    if best is None:
        return file.identity
    identity_q = prefs.get("identity", star)
    if identity_q is not None and identity_q > best_q:
        return file.identity
    return best


def _cache_rules(cache_control: str | CacheRules | None) -> CacheRules:
    return (("*", cache_control),) if isinstance(cache_control, str) else cache_control or ()


def compressed_etag(identity: Representation, coding: str) -> str:
    """The weak entity tag of `identity` compressed on the fly with `coding`.

    Weak: the bytes depend on the compression library's version, not only on the file. The "."
    keeps it apart from a precompressed sibling's tag (`"...-gzip"`).
    """
    return f'W/"{identity.info.mtime_ns:x}-{identity.info.size:x}.{coding}"'


def _precondition_status(request: StaticRequest, etag: str, mtime: int) -> int | None:
    """RFC 9110 section 13.2.2 steps 1 to 4, for GET and HEAD: 412, 304 or None (go on)."""
    if_match = request.header(b"if-match")
    if if_match is not None:
        if not tag_matches(if_match, etag, weak=False):
            return 412
    else:
        value = request.header(b"if-unmodified-since")
        since = None if value is None else parse_http_date(value)
        if since is not None and mtime > since:
            return 412
    if_none_match = request.header(b"if-none-match")
    if if_none_match is not None:
        if tag_matches(if_none_match, etag, weak=True):
            return 304
    else:
        value = request.header(b"if-modified-since")
        since = None if value is None else parse_http_date(value)
        if since is not None and mtime <= since:
            return 304
    return None


def _if_range_holds(request: StaticRequest, etag: str, mtime: int) -> bool:
    value = request.header(b"if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag  # strong comparison: a weak tag never matches
    return parse_http_date(value) == mtime


def _url_segments(request: StaticRequest) -> list[str]:
    # The mount point as given, then the route path with its dot segments removed (when it has
    # a bad segment, as given: such a path never names a directory, but decide() may be handed
    # any resource).
    root = [segment for segment in request.root_path.split("/") if segment not in ("", ".")]
    route = split_path(request.route_path, allow_dotfiles=True)
    if route is None:
        route = tuple(s for s in request.route_path.split("/") if s not in ("", "."))
    return [*root, *route]


def _error_plan(
    request: StaticRequest,
    status: HTTPStatus,
    *,
    detail: str | None = None,
    extra: Headers = (),
    vary_encoding: bool = False,
) -> ResponsePlan:
    # The body follows the client's Accept (`negotiate_error`), hence Vary: Accept.
    content_type, body = negotiate_error(status.value, detail, request.header(b"accept"))
    vary = VARY + b", Accept-Encoding" if vary_encoding else VARY
    headers = (
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"vary", vary),
        *extra,
    )
    head = request.method == "HEAD"
    return ResponsePlan(status.value, headers, EmptyBody() if head else InlineBody(body))


def _redirect_plan(request: StaticRequest) -> ResponsePlan:
    # Built from cleaned, quoted segments: one leading "/", never "//host" (CVE-2021-28861).
    location = "/" + "".join(
        quote_segment(segment, _SEGMENT_SAFE) + "/" for segment in _url_segments(request)
    )
    if request.query_string:
        location += "?" + urllib.parse.quote(request.query_string, safe=_QUERY_SAFE)
    headers = ((b"location", location.encode("latin-1")), (b"content-length", b"0"))
    return ResponsePlan(HTTPStatus.MOVED_PERMANENTLY.value, headers, EmptyBody())


_LISTING_CONTENT_TYPES = {
    "text/html": b"text/html; charset=utf-8",
    "application/json": b"application/json",
    "text/plain": b"text/plain; charset=utf-8",
}


def _listing_plan(request: StaticRequest, entries: tuple[DirEntry, ...]) -> ResponsePlan:
    segments = _url_segments(request)
    url_path = "/" + "".join(segment + "/" for segment in segments)
    route_segments = split_path(request.route_path, allow_dotfiles=True)
    sort, descending = parse_sort(request.query_string)
    ordered = sort_entries(entries, sort, descending)
    kind = preferred_media_type(request.header(b"accept"), LISTING_TYPES)
    if kind == "application/json":
        body = render_listing_json(url_path, ordered)
    elif kind == "text/plain":
        body = render_listing_text(ordered)
    else:
        body = render_listing(
            url_path, ordered, parent=bool(route_segments), sort=sort, descending=descending
        )
    headers = (
        (b"content-type", _LISTING_CONTENT_TYPES[kind]),
        (b"content-length", str(len(body)).encode()),
        (b"vary", VARY),
    )
    head = request.method == "HEAD"
    return ResponsePlan(200, headers, EmptyBody() if head else InlineBody(body))


def _multipart(
    path: str, ranges: tuple[ByteRange, ...], size: int, content_type: str, boundary: str
) -> MultipartRanges:
    parts: list[MultipartPart] = []
    for byte_range in ranges:
        head = (
            f"--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: bytes {byte_range.start}-{byte_range.stop - 1}/{size}\r\n\r\n"
        ).encode("latin-1")
        # The CRLF before each later delimiter belongs to the delimiter (RFC 2046).
        parts.append(MultipartPart(b"\r\n" + head if parts else head, byte_range))
    return MultipartRanges(path, tuple(parts), f"\r\n--{boundary}--\r\n".encode("latin-1"))


def _file_url_path(request: StaticRequest, file: StaticFile) -> str:
    # The file's path below the mount point: a directory's index file is named, so that
    # "*.html" rules apply to "/docs/" too.
    segments = split_path(request.route_path, allow_dotfiles=True) or ()
    if request.route_path.endswith("/"):
        segments = (*segments, file.name)
    return "/" + "/".join(segments)


def _file_plan(
    request: StaticRequest,
    file: StaticFile,
    *,
    cache_rules: CacheRules,
    max_ranges: int,
    boundary: str | None,
    compression: Compression | None,
    vary_accept: bool = False,
) -> ResponsePlan:
    head = request.method == "HEAD"
    if not cache_rules or cache_rules[0][0] == "*":  # the common cases, without building a path
        cache_control = cache_rules[0][1] if cache_rules else None
    else:
        cache_control = cache_control_for(cache_rules, _file_url_path(request, file))
    content_type = content_type_for(file.name)
    identity = file.identity
    # On the fly: a compressible type, big enough; the coding is only chosen when no
    # precompressed sibling was, and never for a range.
    on_the_fly = (
        compression is not None
        and identity.info.size >= compression.min_size
        and is_compressible(content_type)
    )
    # A Range request is answered from the identity file (as nginx does): byte ranges of a
    # compressed sibling labelled with its Content-Encoding are what no client can decode.
    range_header = request.header(b"range") if request.method == "GET" else None
    ranges = None
    if range_header is not None and _if_range_holds(request, identity.etag, identity.info.mtime):
        ranges = parse_range(range_header, identity.info.size, max_ranges=max_ranges)
    chosen = identity
    coding = None
    if ranges is None:
        accept_encoding = request.header(b"accept-encoding")
        chosen = choose_representation(file, accept_encoding)
        if chosen is identity and compression is not None and on_the_fly:
            coding = choose_coding(accept_encoding, compression.codings)
    info = chosen.info
    etag = chosen.etag if coding is None else compressed_etag(identity, coding)
    encodings_vary = bool(file.encoded) or on_the_fly
    vary_names = (*(("Accept",) if vary_accept else ()), *(("Accept-Encoding",) * encodings_vary))
    vary: Headers = ((b"vary", ", ".join(vary_names).encode()),) if vary_names else ()
    validators: Headers = (
        (b"last-modified", http_date(info.mtime).encode("latin-1")),
        (b"etag", etag.encode("latin-1")),
        *(() if cache_control is None else ((b"cache-control", cache_control.encode("latin-1")),)),
        *vary,
    )

    precondition = _precondition_status(request, etag, info.mtime)
    if precondition == 412:
        return _error_plan(request, HTTPStatus.PRECONDITION_FAILED, vary_encoding=encodings_vary)
    if precondition == 304:
        return ResponsePlan(304, validators, EmptyBody())

    if coding is not None:
        # No Content-Length: the sender adds it when the compressed body is in its cache.
        # No Accept-Ranges on a coded representation: a Range request is answered from the
        # identity file (ranges of a compressed body are useless to clients), and advertising
        # ranges here would promise ranges of this coding (REDbot's RANGE_NEG_MISMATCH; nginx
        # does the same for its gzip filter).
        headers = (
            (b"content-type", content_type.encode("latin-1")),
            (b"content-encoding", coding.encode("latin-1")),
            *validators,
        )
        compressed = CompressedFile(identity.path, info.size, coding, head=head)
        return ResponsePlan(200, headers, compressed, identity)
    encoding: Headers = (
        () if chosen.encoding is None else ((b"content-encoding", chosen.encoding.encode()),)
    )
    # Ranges are advertised for the identity representation only (see above).
    ranges_header: Headers = () if chosen.encoding is not None else ((b"accept-ranges", b"bytes"),)
    trailer: Headers = (*ranges_header, *validators)
    if ranges is None:
        headers = (
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(info.size).encode()),
            *encoding,
            *trailer,
        )
        body: Body = EmptyBody() if head else WholeFile(chosen.path, info.size)
        return ResponsePlan(200, headers, body, chosen)
    if not ranges:
        return _error_plan(
            request,
            HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
            extra=((b"content-range", f"bytes */{info.size}".encode()),),
            vary_encoding=encodings_vary,
        )
    if len(ranges) == 1:
        (only,) = ranges
        headers = (
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(only.length).encode()),
            (b"content-range", f"bytes {only.start}-{only.stop - 1}/{info.size}".encode()),
            *trailer,
        )
        return ResponsePlan(206, headers, FileRange(chosen.path, only), chosen)
    boundary = secrets.token_hex(16) if boundary is None else boundary
    multipart = _multipart(chosen.path, ranges, info.size, content_type, boundary)
    headers = (
        (b"content-type", f"multipart/byteranges; boundary={boundary}".encode("latin-1")),
        (b"content-length", str(multipart.content_length).encode()),
        *trailer,
    )
    return ResponsePlan(206, headers, multipart, chosen)


def decide(
    request: StaticRequest,
    resource: Resource | None,
    *,
    cache_control: str | CacheRules | None = None,
    max_ranges: int = DEFAULT_MAX_RANGES,
    boundary: str | None = None,
    compression: Compression | None = None,
) -> ResponsePlan:
    """Decide the whole response to a static-file request. Pure: no I/O.

    The method is checked first, so `resource` may be None for methods other than GET and HEAD.

    Args:
        request: The request.
        resource: What `load_resource` found (None: nothing).
        cache_control: Cache-Control for file responses (200, 206, 304): one value for every
            file, or (glob pattern, value) rules where the first match wins
            (`cache_control_for`).
        max_ranges: Range headers with more ranges than this are ignored.
        boundary: Multipart boundary; random when None (tests pass a fixed one).
        compression: Compress compressible files on the fly, or None not to.

    Returns:
        405 for other methods; 404 when nothing is there (or a file is asked for with a trailing
        "/"); 301 to the slash form of a directory URL; the index file, the listing or 404 for a
        directory; else the file's 200, 206, 304, 412 or 416.
    """
    if request.method not in ALLOWED_METHODS:
        return _error_plan(
            request,
            HTTPStatus.METHOD_NOT_ALLOWED,
            extra=((b"allow", b"GET, HEAD"),),
        )
    slash = request.route_path.endswith("/")
    if isinstance(resource, Directory):
        if not slash:
            return _redirect_plan(request)
        if resource.index is not None:
            resource = resource.index
        elif resource.entries is not None:
            return _listing_plan(request, resource.entries)
        else:
            return _error_plan(request, HTTPStatus.NOT_FOUND)
    elif resource is None or slash:
        return _error_plan(request, HTTPStatus.NOT_FOUND)
    return _file_plan(
        request,
        resource,
        cache_rules=(("*", cache_control),)
        if isinstance(cache_control, str)
        else cache_control or (),
        max_ranges=max_ranges,
        boundary=boundary,
        compression=compression,
    )


def spa_fallback_plan(
    request: StaticRequest,
    file: StaticFile,
    *,
    cache_control: str | CacheRules | None = None,
    max_ranges: int = DEFAULT_MAX_RANGES,
    compression: Compression | None = None,
) -> ResponsePlan:
    """The fallback `file` served as the answer to `request` (200, or 304, ...; `Vary: Accept`).

    The caller checks `_fallback.wants_spa_fallback` first; `decide`'s other arguments apply
    as there.
    """
    return _file_plan(
        request,
        file,
        cache_rules=_cache_rules(cache_control),
        max_ranges=max_ranges,
        boundary=None,
        compression=compression,
        vary_accept=True,
    )
