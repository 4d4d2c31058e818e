"""trioserve._http._problem: error bodies negotiated on Accept."""

from __future__ import annotations

import json

import pytest

from trioserve._http._problem import VARY, choose_error_type, negotiate_error

CHROME = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "text/plain"),
        ("", "text/plain"),
        ("*/*", "text/plain"),  # curl, requests, httpx
        (CHROME, "text/html"),
        (FIREFOX, "text/html"),
        ("application/json", "application/problem+json"),
        ("application/problem+json", "application/problem+json"),
        ("APPLICATION/JSON", "application/problem+json"),
        ("application/json, text/html;q=0.9", "application/problem+json"),
        ("text/html;q=0.5, application/json;q=0.6", "application/problem+json"),
        ("text/html;q=0.7, application/json;q=0.6", "text/html"),
        ("application/*", "application/problem+json"),
        ("text/*", "text/plain"),  # tie between text/plain and text/html: server order
        ("text/*;q=0.9, text/html", "text/html"),
        ("text/html;q=0, text/*", "text/plain"),  # the most specific range decides
        ("text/plain;q=0, */*", "application/problem+json"),
        ("text/plain;q=0, application/json;q=0, */*", "text/html"),
        ("image/png", "text/plain"),  # nothing acceptable: text anyway, never 406
        ("application/json;q=0", "text/plain"),
        ("application/json;q=2", "text/plain"),  # invalid q: ignored
        ("application/json;q=abc, text/html", "text/html"),
        ("garbage, ,;;, application/json", "application/problem+json"),
        (b"application/json", "application/problem+json"),
    ],
)
def test_error_type_follows_accept(accept: str | bytes | None, chosen: str) -> None:
    assert choose_error_type(accept) == chosen


def test_plain_text_is_status_and_phrase() -> None:
    assert negotiate_error(404) == (b"text/plain; charset=utf-8", b"404 Not Found\n")
    assert negotiate_error(413, "The body is over 1 MiB.", "*/*") == (
        b"text/plain; charset=utf-8",
        b"413 Content Too Large: The body is over 1 MiB.\n",
    )


def test_problem_json_has_the_rfc_9457_members() -> None:
    content_type, body = negotiate_error(404, None, "application/json")
    assert content_type == b"application/problem+json"
    assert json.loads(body) == {"type": "about:blank", "title": "Not Found", "status": 404}
    _, body = negotiate_error(431, 'Header "x" is too <big>.', "application/json")
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": 'Header "x" is too <big>.',
    }
    assert body.isascii()


def test_html_page_is_small_and_escaped() -> None:
    content_type, body = negotiate_error(400, "<script>alert(1)</script> & more", FIREFOX)
    assert content_type == b"text/html; charset=utf-8"
    assert b"<title>400 Bad Request</title>" in body
    assert b"<h1>400 Bad Request</h1>" in body
    assert b"&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in body
    assert b"<script>" not in body
    assert b'name="viewport"' in body
    assert len(body) < 400


def test_unknown_status_gets_a_generic_title() -> None:
    assert negotiate_error(599) == (b"text/plain; charset=utf-8", b"599 Error\n")


def test_detail_equal_to_the_title_is_not_repeated() -> None:
    assert negotiate_error(404, "Not Found")[1] == b"404 Not Found\n"


def test_a_long_accept_is_bounded() -> None:
    # Past the cap the ranges are not read: the JSON range at the end is never seen.
    accept = ", ".join(["image/png"] * 200 + ["application/json"])
    assert choose_error_type(accept) == "text/plain"


def test_vary_names_accept() -> None:
    assert VARY == b"Accept"
