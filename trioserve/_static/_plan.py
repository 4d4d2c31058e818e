"""What the decision works on and what it gives: a `StaticRequest` in, a `ResponsePlan` out.

Frozen values only; no I/O, no trioserve import at runtime (nor trio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from ._headers import ByteRange
from ._paths import Representation, get_route_path

if TYPE_CHECKING:
    from .._types import Scope

__all__ = [
    "CONDITIONAL_FIELDS",
    "Body",
    "CompressedFile",
    "EmptyBody",
    "FileRange",
    "Headers",
    "InlineBody",
    "MultipartPart",
    "MultipartRanges",
    "ResponsePlan",
    "StaticRequest",
    "WholeFile",
]

Headers: TypeAlias = tuple[tuple[bytes, bytes], ...]

# The request headers that make a file's plan depend on more than method and Accept-Encoding.
CONDITIONAL_FIELDS = frozenset(
    {b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"range"}
)


@dataclass(frozen=True, slots=True)
class StaticRequest:
    """The parts of an HTTP request that a static response depends on.

    Attributes:
        method: Request method, upper case.
        route_path: Decoded path below the mount point (`get_route_path`).
        headers: Request headers, lower-case names.
        root_path: Decoded mount point, used to build redirects and listing titles.
        query_string: Raw query string, carried over in redirects.
    """

    method: str
    route_path: str
    headers: Headers = ()
    root_path: str = ""
    query_string: bytes = b""
    #: Each header's values joined with ", ", by name: one pass over the headers, instead of
    #: one per header the decision asks for; decoded only when asked for.
    fields: dict[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields: dict[bytes, bytes] = {}
        for name, value in self.headers:
            fields[name] = fields[name] + b", " + value if name in fields else value
        object.__setattr__(self, "fields", fields)

    @classmethod
    def from_scope(cls, scope: Scope) -> StaticRequest:
        """Build a request from an ASGI HTTP scope."""
        return cls(
            method=scope["method"],
            route_path=get_route_path(scope),
            headers=tuple(
                [(bytes(name).lower(), bytes(value)) for name, value in scope["headers"]]
            ),
            root_path=scope.get("root_path", ""),
            query_string=bytes(scope.get("query_string", b"")),
        )

    def header(self, name: bytes) -> str | None:
        """All values of header `name` joined with ", " (latin-1), or None if absent."""
        value = self.fields.get(name)
        return None if value is None else value.decode("latin-1")

    def plan_key(self) -> tuple[str, bytes | None] | None:
        """What a file's plan depends on when no precondition or range is asked for.

        None when the request has a precondition or a Range: its plan is decided afresh.
        """
        fields = self.fields
        if CONDITIONAL_FIELDS.isdisjoint(fields):
            return self.method, fields.get(b"accept-encoding")
        return None


@dataclass(frozen=True, slots=True)
class EmptyBody:
    """No body: HEAD, 304, redirects."""


@dataclass(frozen=True, slots=True)
class InlineBody:
    """A small body held in memory: error texts and directory listings."""

    data: bytes


@dataclass(frozen=True, slots=True)
class WholeFile:
    """The whole file, `size` bytes; the one body that may go out with pathsend."""

    path: str
    size: int


@dataclass(frozen=True, slots=True)
class CompressedFile:
    """The whole file compressed on the fly with `coding`; its length is known only once done.

    The sender takes the body from its cache (then with Content-Length) or compresses while
    streaming (then without). For HEAD (`head`) only the head is sent, with the Content-Length
    when the body is in the cache.
    """

    path: str
    size: int
    coding: str
    head: bool = False


@dataclass(frozen=True, slots=True)
class FileRange:
    """One byte range of a file (206 with Content-Range)."""

    path: str
    range: ByteRange


@dataclass(frozen=True, slots=True)
class MultipartPart:
    """One part of a multipart/byteranges body: its delimiter and headers, then its bytes."""

    head: bytes
    range: ByteRange


@dataclass(frozen=True, slots=True)
class MultipartRanges:
    """A multipart/byteranges body: each part's head and bytes, then the closing delimiter."""

    path: str
    parts: tuple[MultipartPart, ...]
    closing: bytes

    @property
    def content_length(self) -> int:
        """Exact length of the whole body."""
        return sum(len(part.head) + part.range.length for part in self.parts) + len(self.closing)


Body: TypeAlias = EmptyBody | InlineBody | WholeFile | CompressedFile | FileRange | MultipartRanges


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What to answer: the outcome of `decide`.

    Attributes:
        status: HTTP status code.
        headers: Response headers, lower-case names, latin-1 values.
        body: What to send as the body.
        file: The representation a 200/206 describes (also for HEAD). The sender opens it to check
            that it is still the file that was decided on before sending anything.
    """

    status: int
    headers: Headers
    body: Body
    file: Representation | None = None
