"""Custom error pages and the single-page app fallback: when they apply, and their plans.

Pure, like the decision: the app looks the files up, these functions say whether to and what to
answer with them (the fallback file itself is planned by `_decide.spa_fallback_plan`).
"""

from __future__ import annotations

from .._http._problem import accepts_media_type, preferred_media_type
from ._decide import ALLOWED_METHODS
from ._headers import content_type_for
from ._paths import StaticFile, split_path
from ._plan import Body, EmptyBody, ResponsePlan, StaticRequest, WholeFile

__all__ = ["error_page_plan", "wants_error_page", "wants_spa_fallback"]

# The forms an error page competes with: HTML first, so that a client without a preference
# (`*/*`, or no Accept at all) gets the page, as nginx would serve it.
_ERROR_PAGE_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text/html", ("text/html", "application/xhtml+xml")),
    ("application/problem+json", ("application/problem+json", "application/json")),
    ("text/plain", ("text/plain",)),
)


def wants_error_page(request: StaticRequest) -> bool:
    """Whether a custom (HTML) error page suits this client: it does not prefer JSON or text."""
    accept = request.header(b"accept")
    return preferred_media_type(accept, _ERROR_PAGE_TYPES) == "text/html"


def error_page_plan(request: StaticRequest, plan: ResponsePlan, page: StaticFile) -> ResponsePlan:
    """`plan` (an error) with the body of the custom error page `page`, its status kept.

    The page goes out whole (no validators, no ranges: they would describe the page, not the
    resource asked for); the headers the error carried besides its body's (Allow,
    Content-Range, Vary) stay.
    """
    kept = tuple(
        (name, value)
        for name, value in plan.headers
        if name not in (b"content-type", b"content-length")
    )
    size = page.identity.info.size
    headers = (
        (b"content-type", content_type_for(page.name).encode("latin-1")),
        (b"content-length", str(size).encode()),
        *kept,
    )
    body: Body = EmptyBody() if request.method == "HEAD" else WholeFile(page.identity.path, size)
    return ResponsePlan(plan.status, headers, body, page.identity)


def wants_spa_fallback(request: StaticRequest) -> bool:
    """Whether a request that found nothing may get the single-page app's fallback file.

    GET or HEAD, a path safety accepts whose last segment has no extension (a missing
    "/app.js" stays a 404), from a client that accepts HTML.
    """
    if request.method not in ALLOWED_METHODS:
        return False
    segments = split_path(request.route_path, allow_dotfiles=True)
    if segments is None or (segments and "." in segments[-1]):
        return False
    return accepts_media_type(request.header(b"accept"), ("text/html", "application/xhtml+xml"))
