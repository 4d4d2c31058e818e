"""Static files served the way nginx serves them, as an ASGI 3 app.

`StaticFiles` is the app; `load_resource` and `decide` are the two halves it is built from,
exposed so that every rule can be tested (and reused) on its own.
"""

# Theory of operation
# ===================
#
# A request goes through three steps; only the first and the last touch the disk.
#
# 1. Lookup (`_paths`: `resolve_path`, `load_resource`; synchronous). The decoded URL path is
#    mapped safely onto the document root, giving plain data: a `StaticFile` (the stat of each
#    representation) or a `Directory` (whose entries `_listing` lists).
# 2. Decision (`_decide`: `decide`; pure). Method, preconditions, Accept-Encoding and Range
#    (parsed in `_headers`) are evaluated against that data, giving a frozen `ResponsePlan`
#    (`_plan`): status, headers and a body plan. `_encoding` decides what is compressed on the
#    fly and with which coding.
# 3. Sending (`_app`: `StaticFiles.__call__`, with `_send`). The planned file is opened, checked
#    to be the one decided on, and sent; a body compressed on the fly comes from `_codecs` (the
#    compressors and a bounded cache of their output). `_fallback` says when a custom error page
#    or the single-page app fallback replaces a 404.
#
# Each module's own comment tells the details of its step. Only `_app` and `_send` are async or
# import trio-side trioserve modules at runtime, and only `_codecs` the optional compression
# libraries; the others import the standard library, each other and the pure
# `trioserve._http._problem` only (a test holds them to it), so every rule is tested without
# sockets, event loop or trio.
#
# Unreadable files (EACCES) are answered 404, like every other lookup failure: a 403 would tell a
# client that a file it may not read exists.

from ._app import StaticFiles as StaticFiles
from ._decide import choose_representation as choose_representation
from ._decide import compressed_etag as compressed_etag
from ._decide import decide as decide
from ._encoding import Compression as Compression
from ._encoding import choose_coding as choose_coding
from ._encoding import is_compressible as is_compressible
from ._headers import DEFAULT_MAX_RANGES as DEFAULT_MAX_RANGES
from ._headers import ByteRange as ByteRange
from ._headers import content_type_for as content_type_for
from ._headers import parse_accept_encoding as parse_accept_encoding
from ._headers import parse_http_date as parse_http_date
from ._headers import parse_range as parse_range
from ._listing import list_directory as list_directory
from ._listing import render_listing as render_listing
from ._paths import Directory as Directory
from ._paths import DirEntry as DirEntry
from ._paths import FileInfo as FileInfo
from ._paths import Representation as Representation
from ._paths import ResolvedPath as ResolvedPath
from ._paths import Resource as Resource
from ._paths import StaticFile as StaticFile
from ._paths import get_route_path as get_route_path
from ._paths import is_inside as is_inside
from ._paths import load_resource as load_resource
from ._paths import resolve_path as resolve_path
from ._paths import split_path as split_path
from ._plan import Body as Body
from ._plan import CompressedFile as CompressedFile
from ._plan import EmptyBody as EmptyBody
from ._plan import FileRange as FileRange
from ._plan import InlineBody as InlineBody
from ._plan import MultipartPart as MultipartPart
from ._plan import MultipartRanges as MultipartRanges
from ._plan import ResponsePlan as ResponsePlan
from ._plan import StaticRequest as StaticRequest
from ._plan import WholeFile as WholeFile
from ._send import CHUNK_SIZE as CHUNK_SIZE

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_RANGES",
    "Body",
    "ByteRange",
    "CompressedFile",
    "Compression",
    "DirEntry",
    "Directory",
    "EmptyBody",
    "FileInfo",
    "FileRange",
    "InlineBody",
    "MultipartPart",
    "MultipartRanges",
    "Representation",
    "ResolvedPath",
    "Resource",
    "ResponsePlan",
    "StaticFile",
    "StaticFiles",
    "StaticRequest",
    "WholeFile",
    "choose_coding",
    "choose_representation",
    "compressed_etag",
    "content_type_for",
    "decide",
    "get_route_path",
    "is_compressible",
    "is_inside",
    "list_directory",
    "load_resource",
    "parse_accept_encoding",
    "parse_http_date",
    "parse_range",
    "render_listing",
    "resolve_path",
    "split_path",
]
