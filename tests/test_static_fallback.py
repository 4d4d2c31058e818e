"""trioserve._static._fallback and StaticFiles' custom error pages and SPA fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trioserve._static import FileInfo, Representation, StaticFile, StaticFiles, StaticRequest
from trioserve._static._fallback import error_page_plan, wants_error_page, wants_spa_fallback
from trioserve._static._plan import EmptyBody, InlineBody, ResponsePlan, WholeFile

from .static_helpers import MTIME_NS, write
from .test_static import call

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def request(path: str = "/x", method: str = "GET", accept: str | None = None) -> StaticRequest:
    headers = () if accept is None else ((b"accept", accept.encode()),)
    return StaticRequest(method, path, headers)


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        (None, True),
        ("*/*", True),
        (BROWSER, True),
        ("application/json", False),
        ("text/plain", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.5, application/json;q=0.4", True),
    ],
)
def test_error_page_goes_to_clients_that_do_not_prefer_json_or_text(
    accept: str | None, wanted: bool
) -> None:
    assert wants_error_page(request(accept=accept)) is wanted


PAGE = StaticFile("404.html", Representation("/srv/404.html", FileInfo(300, MTIME_NS)))


def test_error_page_plan_keeps_the_status_and_the_error_headers() -> None:
    error = ResponsePlan(
        405,
        (
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"23"),
            (b"vary", b"Accept"),
            (b"allow", b"GET, HEAD"),
        ),
        InlineBody(b"405 Method Not Allowed\n"),
    )
    plan = error_page_plan(request(method="POST"), error, PAGE)
    assert plan.status == 405
    assert plan.headers == (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"300"),
        (b"vary", b"Accept"),
        (b"allow", b"GET, HEAD"),
    )
    assert (plan.body, plan.file) == (WholeFile("/srv/404.html", 300), PAGE.identity)
    assert error_page_plan(request(method="HEAD"), error, PAGE).body == EmptyBody()


@pytest.mark.parametrize(
    ("path", "method", "accept", "wanted"),
    [
        ("/settings", "GET", BROWSER, True),
        ("/users/42/edit", "GET", BROWSER, True),
        ("/users/42/", "GET", BROWSER, True),
        ("/settings", "HEAD", None, True),
        ("/settings", "GET", "*/*", True),
        ("/app.js", "GET", BROWSER, False),  # a missing asset stays 404
        ("/v1.2/x.png", "GET", BROWSER, False),
        ("/settings", "POST", BROWSER, False),
        ("/settings", "GET", "application/json", False),
        ("/settings", "GET", "text/html;q=0, */*", False),
        ("/../settings", "GET", BROWSER, False),  # refused by safety
        ("/a\\b", "GET", BROWSER, False),
    ],
)
def test_spa_fallback_applies_to_extensionless_html_navigations(
    path: str, method: str, accept: str | None, wanted: bool
) -> None:
    assert wants_spa_fallback(request(path, method, accept)) is wanted


@pytest.fixture
def spa(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    write(root / "index.html", b"<div id=app></div>")
    write(root / "404.html", b"<h1>Lost?</h1>")
    write(root / "app.js", b"run()")
    write(root / "docs" / "a.txt", b"a")
    write(root / ".hidden" / "x", b"x")
    write(tmp_path / "outside" / "real", b"secret")
    (root / "out").symlink_to(tmp_path / "outside")
    return root


async def test_spa_fallback_serves_the_app_for_client_side_routes(spa: Path) -> None:
    app = StaticFiles(spa, spa_fallback="index.html")
    response = await call(app, "/settings/profile", headers=[("Accept", BROWSER)])
    assert (response.status, response.body) == (200, b"<div id=app></div>")
    assert response.header[b"content-type"] == b"text/html; charset=utf-8"
    assert response.header[b"vary"] == b"Accept"
    etag = response.header[b"etag"].decode()
    again = await call(
        app, "/settings/profile", headers=[("Accept", BROWSER), ("If-None-Match", etag)]
    )
    assert again.status == 304


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/app2.js", BROWSER),  # a missing asset
        ("/settings", "application/json"),  # an API client
        ("/.hidden/missing", BROWSER),  # a dotfile path: refused
        ("/out/missing", BROWSER),  # below a symlink leaving the root: refused
        ("/out/real", BROWSER),
        ("/docs/a.txt/more", BROWSER),  # below a file
        ("/../index", BROWSER),
    ],
)
async def test_spa_fallback_leaves_the_rest_404(spa: Path, path: str, accept: str) -> None:
    response = await call(
        StaticFiles(spa, spa_fallback="index.html"), path, headers=[("Accept", accept)]
    )
    assert response.status == 404
    assert b"div id=app" not in response.body
    assert b"secret" not in response.body


async def test_spa_fallback_does_not_hide_real_files(spa: Path) -> None:
    app = StaticFiles(spa, spa_fallback="index.html")
    assert (await call(app, "/app.js", headers=[("Accept", BROWSER)])).body == b"run()"


@pytest.mark.parametrize(
    ("accept", "content_type", "body"),
    [
        (BROWSER, b"text/html; charset=utf-8", b"<h1>Lost?</h1>"),
        ("*/*", b"text/html; charset=utf-8", b"<h1>Lost?</h1>"),
        ("text/plain", b"text/plain; charset=utf-8", b"404 Not Found\n"),
    ],
)
async def test_custom_error_page_is_served_with_the_original_status(
    spa: Path, accept: str, content_type: bytes, body: bytes
) -> None:
    app = StaticFiles(spa, error_pages={404: "404.html"})
    response = await call(app, "/missing.png", headers=[("Accept", accept)])
    assert (response.status, response.body) == (404, body)
    assert response.header[b"content-type"] == content_type
    assert response.header[b"vary"] == b"Accept"


async def test_json_clients_get_problem_json_despite_an_error_page(spa: Path) -> None:
    app = StaticFiles(spa, error_pages={404: "404.html"})
    response = await call(app, "/missing", headers=[("Accept", "application/json")])
    assert json.loads(response.body)["status"] == 404


async def test_a_missing_error_page_falls_back_to_the_built_in_body(spa: Path) -> None:
    app = StaticFiles(spa, error_pages={404: "nope.html", 405: "404.html"})
    missing = await call(app, "/missing", headers=[("Accept", BROWSER)])
    assert missing.status == 404
    assert b"404 Not Found" in missing.body
    post = await call(app, "/app.js", method="POST", headers=[("Accept", BROWSER)])
    assert (post.status, post.body, post.header[b"allow"]) == (405, b"<h1>Lost?</h1>", b"GET, HEAD")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"error_pages": {200: "a.html"}}, "statuses 400 to 599"),
        ({"error_pages": {404: "../x.html"}}, "path under the root"),
        ({"error_pages": {404: ""}}, "path under the root"),
        ({"spa_fallback": "/"}, "path under the root"),
        ({"spa_fallback": "a/../../x"}, "path under the root"),
    ],
)
def test_fallback_arguments_are_checked(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        StaticFiles(tmp_path, **kwargs)  # type: ignore[arg-type]
