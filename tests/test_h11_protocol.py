"""ServerProtocol, the sans-IO layer: bytes in, events or refusals out, bytes to write."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from trioserve._errors import RequestRefused
from trioserve._h11._protocol import (
    DRAIN_BYTES,
    NEXT,
    NEXT_BUFFERED,
    PIPELINE_DISCARD_BYTES,
    ResponseError,
    ServerProtocol,
    error_response,
)
from trioserve._http._date import http_date
from trioserve._http._events import (
    CLIENT_CLOSED,
    END_OF_BODY,
    HTTP2_PREFACE,
    NEED_DATA,
    BodyChunk,
    RequestHead,
)


@pytest.fixture(autouse=True)
def _both_parsers(http_parser: type[ServerProtocol], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on both parsers: ``ServerProtocol`` below is each in turn."""
    monkeypatch.setattr(sys.modules[__name__], "ServerProtocol", http_parser)


def make(max_body_size: int | None = 1000, **kwargs: object) -> ServerProtocol:
    return ServerProtocol(max_header_size=16384, max_body_size=max_body_size, **kwargs)  # type: ignore[arg-type]


def events(proto: ServerProtocol, data: bytes) -> list[object]:
    proto.receive_data(data)
    out = []
    while True:
        event = proto.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if event is END_OF_BODY:
            return out


def refusal(data: bytes, **kwargs: object) -> RequestRefused:
    proto = make(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(RequestRefused) as info:
        events(proto, data)
    return info.value


def test_simple_get_gives_request_then_end() -> None:
    got = events(make(), b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(got[0], RequestHead)
    assert got[0].target == b"/x?y=1"
    assert got[1] is END_OF_BODY


def test_chunked_request_body_is_decoded() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    got = events(make(), data)
    assert [type(e) for e in got[:2]] == [RequestHead, BodyChunk]
    assert got[2] is END_OF_BODY
    assert got[1].data == b"abc"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x0bb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x7fb\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
        (b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 requires Host
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
    ],
)
def test_bad_requests_are_refused_with_status(head: bytes, status: int) -> None:
    assert refusal(head).status == status


def test_oversized_head_gets_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert refusal(head).status == 431


def test_declared_body_over_limit_gets_413_before_any_body_byte() -> None:
    proto = make(max_body_size=10)
    proto.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(RequestRefused) as info:
        proto.next_event()
    assert info.value.status == 413
    assert proto.will_close


def test_chunked_body_over_limit_gets_413_as_it_arrives() -> None:
    proto = make(max_body_size=5)
    data = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"
    assert [type(e) for e in events(proto, data)] == [RequestHead, BodyChunk]
    proto.receive_data(b"4\r\nefgh\r\n")
    with pytest.raises(RequestRefused) as info:
        proto.next_event()
    assert info.value.status == 413


def test_no_body_limit_when_none() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    got = events(make(max_body_size=None), data)
    assert sum(len(e.data) for e in got if isinstance(e, BodyChunk)) == 5000


@pytest.mark.parametrize(
    "first_bytes",
    [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x16", b"\x16\x03"],
)
def test_tls_client_hello_on_plain_port_gets_400(first_bytes: bytes) -> None:
    proto = make()
    with pytest.raises(RequestRefused) as info:
        proto.receive_data(first_bytes)
        proto.receive_data(b"\x03\x01")
        proto.next_event()
    assert info.value.status == 400
    assert "TLS" in info.value.reason


def test_http2_preface_on_plain_port_gets_400() -> None:
    proto = make()
    with pytest.raises(RequestRefused) as info:
        for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
            proto.receive_data(bytes([byte]))
    assert info.value.status == 400
    assert "HTTP/2" in info.value.reason


def test_sniffing_stops_after_the_first_bytes() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    proto.send_response(200, [(b"content-length", b"0")])
    proto.send_end()
    assert proto.start_next_cycle()
    # A later request starting with PRI is an ordinary (unknown) method, not a preface.
    got = events(proto, b"PRI / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(got[0], RequestHead)


def test_response_has_date_reason_and_no_server_by_default() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(200, [(b"content-length", b"2")])
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert re.search(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", head)
    assert b"server:" not in head


def test_server_header_and_no_date_when_configured() -> None:
    proto = make(server_header=b"trioserve", date=None)
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(204, [])
    assert b"\r\nserver: trioserve\r\n" in head
    assert b"date:" not in head


def test_response_without_length_is_chunked_for_http11() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(200, [])
    assert b"transfer-encoding: chunked" in head.lower()
    assert proto.send_data(b"abc") == b"3\r\nabc\r\n"
    assert proto.send_end() == b"0\r\n\r\n"


def test_response_without_length_closes_for_http10() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.0\r\n\r\n")
    head = proto.send_response(200, [])
    assert b"transfer-encoding" not in head.lower()
    assert proto.send_data(b"abc") == b"abc"
    proto.send_end()
    assert not proto.start_next_cycle()


def test_head_response_drops_body_bytes() -> None:
    proto = make()
    events(proto, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(200, [(b"content-length", b"5")])
    assert b"content-length: 5" in head
    assert proto.send_data(b"hello") == b""
    assert proto.send_end() == b""
    assert proto.start_next_cycle()


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_drop_body_bytes(status: int) -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    proto.send_response(status, [])
    assert proto.send_data(b"ignored") == b""


def test_closing_adds_connection_close_and_ends_keep_alive() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    proto.close_after_response()
    head = proto.send_response(200, [(b"content-length", b"0")])
    assert b"connection: close" in head.lower()
    proto.send_end()
    assert not proto.start_next_cycle()


def test_client_connection_close_ends_keep_alive() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    proto.send_response(200, [(b"content-length", b"0")])
    proto.send_end()
    assert not proto.start_next_cycle()


@pytest.mark.parametrize(
    ("after", "says"),
    [
        (b"", NEXT),  # nothing of the next request yet: its wait need not ask the parser
        (b"GET /2 HT", NEXT_BUFFERED),  # part of a pipelined head
        (b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", NEXT_BUFFERED),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", NEXT_BUFFERED),
        (None, NEXT_BUFFERED),  # the client's close came behind the request
    ],
)
@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        # A cycle that the fast parser hands to h11 (a chunked body) says the same.
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_the_next_cycle_says_whether_bytes_of_the_next_request_are_here(
    request_: bytes, after: bytes | None, says: int
) -> None:
    proto = make()
    events(proto, request_ + (after or b""))
    if after is None:
        proto.receive_data(b"")
    proto.send_response(200, [(b"content-length", b"0")])
    proto.send_end()
    assert proto.start_next_cycle() == says
    if says == NEXT:
        assert proto.next_event() is NEED_DATA
        assert not proto.has_buffered_data
    elif after is None:
        assert proto.next_event() is CLIENT_CLOSED
    else:
        assert proto.has_buffered_data


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"],
        [b"GE", b"T / HTTP/1.1\r\nHost: a\r\n\r\n"],  # the first bytes, still being sniffed
        [bytearray(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")],
        [b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"],
        [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b""],
        [b"GET / HTTP/1.1\r\nHo", b"st: a\r\n\r\n"],
        [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n"],
        [b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
        [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
        [b""],
    ],
)
def test_receive_next_is_receive_data_then_next_event(pieces: list[bytes]) -> None:
    # The same bytes, twice over, to two protocols: one fed with receive_next, one with
    # receive_data and next_event. Each request is answered once its body has ended, and the
    # next cycle started; events, refusals and buffered bytes must agree at every step.
    def run(one_call: bool) -> list[object]:
        proto = make()
        seen: list[object] = []
        for piece in pieces * 2:
            try:
                if one_call:
                    event = proto.receive_next(piece)
                else:
                    proto.receive_data(piece)
                    event = proto.next_event()
                seen.append(event)
                while event is not NEED_DATA and event is not CLIENT_CLOSED:
                    if event is HTTP2_PREFACE:
                        return seen
                    if event is END_OF_BODY:
                        seen.append(proto.has_buffered_data)
                        proto.send_response(200, [(b"content-length", b"0")])
                        proto.send_end()
                        next_cycle = proto.start_next_cycle()
                        seen.append(next_cycle)
                        if not next_cycle:
                            return seen
                    event = proto.next_event()
                    seen.append(event)
            except RequestRefused as exc:
                seen.append(("refused", exc.status, exc.reason))
                return seen
            if not piece:
                return seen  # the client closed: nothing comes after
        return seen

    assert run(True) == run(False)


def test_pipelined_requests_come_out_one_cycle_at_a_time() -> None:
    proto = make()
    data = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
    first = events(proto, data)
    assert first[0].target == b"/1"  # type: ignore[attr-defined]
    assert proto.next_event() is NEED_DATA
    proto.send_response(200, [(b"content-length", b"0")])
    proto.send_end()
    assert proto.start_next_cycle()
    second = events(proto, b"")  # nothing new: the second request was already buffered
    assert second[0].target == b"/2"  # type: ignore[attr-defined]


def test_expect_100_continue_is_reported_and_answered() -> None:
    proto = make()
    events(
        proto, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    assert proto.waiting_for_100_continue
    assert proto.continue_response().startswith(b"HTTP/1.1 100 ")
    assert not proto.waiting_for_100_continue


def test_error_response_is_complete_and_closes() -> None:
    data = error_response(413, "Request body too large.", server=b"x")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 Request Entity Too Large")
    assert b"\r\nconnection: close" in head
    assert b"\r\nserver: x" in head
    assert b"\r\nvary: Accept" in head
    assert b"\r\ncontent-type: text/plain; charset=utf-8" in head
    assert body == b"413 Content Too Large: Request body too large.\n"
    assert f"content-length: {len(body)}".encode() in head


def test_error_response_follows_accept() -> None:
    data = error_response(413, "Request body too large.", accept=b"application/json")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/problem+json\r\n" in head
    assert b"\r\nvary: Accept\r\n" in head
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Content Too Large",
        "status": 413,
        "detail": "Request body too large.",
    }
    assert f"content-length: {len(body)}".encode() in head
    page = error_response(404, "No such thing.", accept=b"text/html,*/*;q=0.8")
    head, _, body = page.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: text/html; charset=utf-8\r\n" in head
    assert b"<h1>404 Not Found</h1>" in body
    assert b"<p>No such thing.</p>" in body


def test_error_response_for_head_has_no_body() -> None:
    data = error_response(500, "boom", head_only=True)
    assert data.endswith(b"\r\n\r\n")
    assert b"content-length: %d" % len(b"500 Internal Server Error: boom\n") in data


def test_http_date_is_cached_within_a_second() -> None:
    assert http_date() is http_date() or http_date() == http_date()
    assert http_date().endswith(b" GMT")


# -- response framing (done here, not by h11) ---------------------------------------------------


def started(request: bytes = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") -> ServerProtocol:
    proto = make()
    events(proto, request)
    return proto


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-injected", b"a\r\nset-cookie: evil=1")],
        [(b"x-bad", b"a\nb")],
        [(b"x-bad", b"a\x00b")],
        [(b"bad name", b"v")],
        [(b"", b"v")],
        [(b"content-length", b"abc")],
        [(b"content-length", b"3"), (b"content-length", b"4")],
        [(b"transfer-encoding", b"gzip")],
        [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
    ],
)
def test_invalid_response_headers_are_refused(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(ResponseError):
        started().send_response(200, headers)


def test_a_content_length_seen_before_is_checked_as_strictly() -> None:
    """Validated Content-Length fields are remembered (a hot path); the rules still hold."""
    cached = (b"content-length", b"3")
    head = started().send_response(200, [cached])  # the first time: validated and remembered
    assert b"\r\ncontent-length: 3\r\n" in head
    for headers in (
        [cached, (b"content-length", b"4")],
        [(b"content-length", b"4"), cached],
        [cached, (b"transfer-encoding", b"chunked")],
    ):
        with pytest.raises(ResponseError):
            started().send_response(200, headers)
    proto = started()
    head = proto.send_response(200, [cached, cached])
    assert head.count(b"content-length: 3\r\n") == 2
    with pytest.raises(ResponseError, match="longer"):
        proto.send_data(b"abcd")


@pytest.mark.parametrize("status", [100, 101, 199, 600, "200"])
def test_invalid_final_status_is_refused(status: object) -> None:
    with pytest.raises(ResponseError, match="invalid status"):
        started().send_response(status, [])  # type: ignore[arg-type]


def test_body_longer_than_content_length_is_refused() -> None:
    proto = started()
    proto.send_response(200, [(b"content-length", b"3")])
    with pytest.raises(ResponseError, match="longer"):
        proto.send_data(b"abcd")


@pytest.mark.parametrize(
    ("declared", "body", "refused"),
    [(b"3", b"abcd", "longer"), (b"3", b"ab", "1 missing"), (b"3", b"abc", None)],
)
def test_a_whole_body_is_held_to_the_apps_content_length(
    declared: bytes, body: bytes, refused: str | None
) -> None:
    proto = started()
    if refused is not None:
        with pytest.raises(ResponseError, match=refused):
            proto.send_whole_response(200, [(b"content-length", declared)], body)
        return
    out, sent = proto.send_whole_response(200, [(b"content-length", declared)], body)
    assert out.endswith(b"\r\ncontent-length: 3\r\n\r\nabc")
    assert sent == 3
    assert proto.response_complete


def test_body_shorter_than_content_length_is_refused_at_the_end() -> None:
    proto = started()
    proto.send_response(200, [(b"content-length", b"3")])
    proto.send_data(b"ab")
    with pytest.raises(ResponseError, match="1 missing"):
        proto.send_end()


def test_app_chunked_header_is_honoured_once() -> None:
    proto = started()
    head = proto.send_response(200, [(b"Transfer-Encoding", b"chunked")])
    assert head.lower().count(b"transfer-encoding: chunked") == 1
    assert proto.send_data(b"ab") == b"2\r\nab\r\n"


def test_app_connection_close_header_ends_keep_alive() -> None:
    proto = started()
    head = proto.send_response(200, [(b"content-length", b"0"), (b"connection", b"close")])
    assert head.lower().count(b"connection: close") == 1
    proto.send_end()
    assert not proto.start_next_cycle()


def test_str_headers_are_accepted_as_latin1() -> None:
    proto = started()
    head = proto.send_response(200, [("x-name", "caf\xe9")])  # type: ignore[list-item]
    assert b"\r\nx-name: caf\xe9\r\n" in head


def test_response_head_has_exact_wire_form() -> None:
    proto = make(date=None, server_header=b"ts")
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(404, [(b"content-length", b"0")])
    assert head == b"HTTP/1.1 404 Not Found\r\nserver: ts\r\ncontent-length: 0\r\n\r\n"


def test_second_response_on_the_same_cycle_is_refused() -> None:
    proto = started()
    proto.send_response(200, [(b"content-length", b"0")])
    with pytest.raises(ResponseError, match="already started"):
        proto.send_response(200, [])


# -- connection policy, owned by the protocol ----------------------------------------------


def request_with_body(size: int) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size


def test_drain_body_discards_an_unread_body_within_the_budget() -> None:
    proto = make(max_body_size=None)
    proto.receive_data(request_with_body(10) + b"0123456789")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.drain_body() is True
    assert proto.request_complete


def test_drain_body_asks_for_more_then_finishes() -> None:
    proto = make(max_body_size=None)
    proto.receive_data(request_with_body(10) + b"01234")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.drain_body() is None
    proto.receive_data(b"56789")
    assert proto.drain_body() is True


def test_drain_body_gives_up_past_the_drain_budget() -> None:
    size = DRAIN_BYTES + 10
    proto = make(max_body_size=None)
    proto.receive_data(request_with_body(size) + b"x" * size)
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.drain_body() is False


def test_pipelined_bytes_are_kept_until_the_head_limit() -> None:
    proto = make()
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.receive_pipelined(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not proto.will_close
    proto.send_response(200, [(b"content-length", b"0")])
    proto.send_end()
    assert proto.start_next_cycle()
    head = proto.next_event()
    assert isinstance(head, RequestHead)
    assert head.target == b"/2"


def test_pipelining_past_the_head_limit_makes_the_response_the_last() -> None:
    proto = ServerProtocol(max_header_size=100, max_body_size=None)
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.receive_pipelined(b"x" * 101)
    assert proto.will_close
    assert b"connection: close" in proto.send_response(200, [])
    # Past the discard budget the client is flooding: stop reading.
    assert not proto.receive_pipelined(b"y" * (PIPELINE_DISCARD_BYTES + 1))


def test_continue_is_due_only_before_the_response_starts() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    proto = make()
    proto.receive_data(data)
    assert isinstance(proto.next_event(), RequestHead)
    assert proto.continue_response().startswith(b"HTTP/1.1 100 ")
    late = make()
    late.receive_data(data)
    late.next_event()
    head = late.send_response(200, [(b"content-length", b"0")])
    assert late.continue_response() == b""
    # The client still holds back a body nobody asked for: this response ends the connection.
    assert b"connection: close" in head


def test_the_date_comes_from_the_callable_given() -> None:
    proto = make(date=lambda: b"Thu, 01 Jan 1970 00:00:00 GMT")
    proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    proto.next_event()
    assert b"date: Thu, 01 Jan 1970 00:00:00 GMT\r\n" in proto.send_response(200, [])


def test_each_response_has_the_date_its_own_callable_gives_at_that_moment() -> None:
    # The Date line is made once per value and shared by every connection: connections with
    # different clocks, answered in turn, and a clock that moves on, each get their own date.
    clocks = {"a": b"Thu, 01 Jan 1970 00:00:00 GMT", "b": b"Fri, 02 Jan 1970 00:00:00 GMT"}
    protos = {name: make(date=lambda name=name: clocks[name]) for name in clocks}
    for _ in range(2):
        for name, proto in protos.items():
            proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            proto.next_event()
            out, _sent = proto.send_whole_response(200, [], b"hi")
            assert b"\r\ndate: " + clocks[name] + b"\r\n" in out
            assert out.endswith(b"\r\n\r\nhi")
            assert proto.start_next_cycle()
        clocks["a"] = b"Sat, 03 Jan 1970 00:00:01 GMT"


def test_a_close_between_requests_is_client_closed() -> None:
    proto = make()
    proto.receive_data(b"")
    assert proto.next_event() is CLIENT_CLOSED


@pytest.mark.parametrize(
    "module",
    [
        "trioserve/_h11/_protocol.py",
        "trioserve/_h11/_strict.py",
        "trioserve/_h11/_writers.py",
        "trioserve/_http/_authority.py",
        "trioserve/_http/_events.py",
        "trioserve/_http/_date.py",
    ],
)
def test_sans_io_modules_import_no_io(module: str) -> None:
    tree = ast.parse((Path(__file__).parent.parent / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "socket", "asyncio", "anyio", "os", "select"}


# -- strictness beyond h11 ---------------------------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def body_events(data: bytes, **kwargs: object) -> list[object]:
    """All events of a request fed as ``data`` (the body read to its end)."""
    proto = make(**kwargs)  # type: ignore[arg-type]
    proto.receive_data(data)
    out = []
    while (event := proto.next_event()) is not NEED_DATA:
        out.append(event)
        if event is END_OF_BODY:
            break
    return out


@pytest.mark.parametrize(
    "body",
    [
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",  # a bare CR: a line end to some proxies
        b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
        b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
        b"5;a=\x7f\r\nhello\r\n0\r\n\r\n",
        b"5;\r\nhello\r\n0\r\n\r\n",  # an extension with no name
        b"5;=v\r\nhello\r\n0\r\n\r\n",
        b'5;a="unterminated\r\nhello\r\n0\r\n\r\n',
        b"5;a b\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0;x\ry\r\n\r\n",  # in the last chunk's line
        b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n",  # control character in a trailer
        b"5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-T: a\r\n folded\r\n\r\n",
    ],
)
def test_malformed_chunk_lines_and_trailers_are_refused_with_400(body: bytes) -> None:
    proto = make()
    with pytest.raises(RequestRefused) as info:
        events(proto, CHUNKED_HEAD + body)
    assert info.value.status == 400
    assert proto.will_close


@pytest.mark.parametrize(
    "body",
    [
        b"5;name=value\r\nhello\r\n0\r\n\r\n",
        b'5; a = "quoted \\" ; value"; b\r\nhello\r\n0\r\n\r\n',
        b"5 \r\nhello\r\n0\r\nX-Trailer: fine\tvalue\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\n",
    ],
)
def test_well_formed_chunk_extensions_and_trailers_are_accepted(body: bytes) -> None:
    got = body_events(CHUNKED_HEAD + body)
    assert got[1:] == [BodyChunk(b"hello"), END_OF_BODY]


def test_bare_cr_in_a_chunk_extension_is_refused_however_the_bytes_arrive() -> None:
    data = CHUNKED_HEAD + b"5;a\rb\r\nhello\r\n0\r\n\r\n"
    for split in range(len(CHUNKED_HEAD) - 10, len(data)):
        proto = make()
        with pytest.raises(RequestRefused) as info:
            proto.receive_data(data[:split])
            while proto.next_event() is not NEED_DATA:
                pass
            proto.receive_data(data[split:])
            while proto.next_event() is not END_OF_BODY:
                pass
        assert info.value.status == 400, split


def test_chunk_size_over_the_body_limit_is_refused_at_its_size_line() -> None:
    proto = make(max_body_size=100)
    assert [type(e) for e in events(proto, CHUNKED_HEAD + b"10\r\n" + b"x" * 16 + b"\r\n")] == [
        RequestHead,
        BodyChunk,
    ]
    # Not one byte of the chunk has arrived: its size line is enough.
    proto.receive_data(b"55\r\n")
    with pytest.raises(RequestRefused) as info:
        proto.next_event()
    assert info.value.status == 413
    assert proto.will_close


def test_absurd_chunk_size_is_refused_with_413() -> None:
    size = b"%x" % (2**64 + 5)
    assert refusal(CHUNKED_HEAD + size + b"\r\n").status == 413


def test_chunk_size_longer_than_h11_reads_is_refused_without_a_limit() -> None:
    assert refusal(CHUNKED_HEAD + b"1" * 21 + b"\r\n", max_body_size=None).status == 400


def test_chunk_size_line_too_long_is_refused() -> None:
    proto = ServerProtocol(max_header_size=100, max_body_size=None)
    proto.receive_data(CHUNKED_HEAD)
    assert isinstance(proto.next_event(), RequestHead)
    proto.receive_data(b"5;" + b"a" * 200)
    with pytest.raises(RequestRefused) as info:
        proto.next_event()
    assert info.value.status == 400


def test_missing_crlf_after_a_chunk_is_refused() -> None:
    assert refusal(CHUNKED_HEAD + b"3\r\nabcX\r\n0\r\n\r\n").status == 400


def test_pipelined_request_after_a_chunked_body_is_not_checked_as_chunks() -> None:
    proto = make()
    got = events(proto, CHUNKED_HEAD + b"2\r\nab\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert got[1:] == [BodyChunk(b"ab"), END_OF_BODY]
    proto.send_response(204, [])
    proto.send_end()
    assert proto.start_next_cycle()
    head = proto.next_event()
    assert isinstance(head, RequestHead)
    assert head.target == b"/2"


@pytest.mark.parametrize(
    "host",
    [b"a b", b"a/b", b"user@a", b"a:65536", b"a:99999999999999999999", b"[::1", b"a%zz", b"a:b"],
)
def test_invalid_host_is_refused_with_400(host: bytes) -> None:
    error = refusal(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert error.status == 400
    assert "Host" in error.reason


@pytest.mark.parametrize(
    "host",
    [b"a", b"a:", b"a:80", b"a:065535", b"[::1]:8080", b"127.0.0.1", b"xn--bcher-kva.ex", b""],
)
def test_valid_host_is_accepted(host: bytes) -> None:
    head = events(make(), b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert (b"host", host) in head.headers


def test_second_request_with_an_invalid_host_is_refused() -> None:
    proto = make()
    events(proto, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    proto.send_response(204, [])
    proto.send_end()
    assert proto.start_next_cycle()
    with pytest.raises(RequestRefused):
        events(proto, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")


def test_two_host_headers_are_refused() -> None:
    assert refusal(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status == 400


def test_target_over_the_head_limit_gets_414() -> None:
    assert refusal(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n").status == 414


def test_target_over_the_head_limit_in_pieces_gets_414() -> None:
    proto = make()
    with pytest.raises(RequestRefused) as info:
        proto.receive_data(b"GET /")
        for _ in range(20):
            proto.receive_data(b"a" * 1000)
            assert proto.next_event() is NEED_DATA
    assert info.value.status == 414


def test_headers_over_the_limit_in_pieces_get_431() -> None:
    proto = make()
    with pytest.raises(RequestRefused) as info:
        proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(20):
            proto.receive_data(b"a" * 1000)
            assert proto.next_event() is NEED_DATA
    assert info.value.status == 431


def test_fragment_in_the_target_gets_400() -> None:
    assert refusal(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n").status == 400


def test_http_1_2_is_served_as_http_1_1() -> None:
    proto = make()
    head = events(proto, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n")[0]
    assert isinstance(head, RequestHead)
    assert head.http_version == "1.1"
    response = proto.send_response(200, [])
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in response  # an HTTP/1.1 client can read chunks
    assert b"connection: close" not in response
    proto.send_end()
    assert proto.start_next_cycle()


def test_http_1_2_needs_a_host_like_http_1_1() -> None:
    assert refusal(b"GET / HTTP/1.2\r\n\r\n").status == 400


@pytest.mark.parametrize("version", [b"2.0", b"3.1", b"0.9"])
def test_other_major_versions_get_505(version: bytes) -> None:
    assert refusal(b"GET / HTTP/" + version + b"\r\nHost: a\r\n\r\n").status == 505


def test_max_headers_allows_exactly_the_limit() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    head = events(make(max_headers=5), b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")[0]
    assert isinstance(head, RequestHead)
    assert len(head.headers) == 5


def test_max_headers_refuses_one_more_with_431() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    error = refusal(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", max_headers=5)
    assert error.status == 431
    assert "Too many" in error.reason


def test_no_header_count_limit_when_none() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(500))
    head = events(make(), b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")[0]
    assert isinstance(head, RequestHead)


# -- response writers --------------------------------------------------------------------------


class Placeholder:
    """Stands for body bytes sent by other means (a file range): only its length is known."""

    def __len__(self) -> int:
        return 7


def test_file_placeholder_passes_through_chunked_framing_in_place() -> None:
    proto = started()
    proto.send_response(200, [])
    piece = Placeholder()
    assert proto.send_data_passthrough(piece) == [b"7\r\n", piece, b"\r\n"]


def test_file_placeholder_counts_against_content_length() -> None:
    proto = started()
    proto.send_response(200, [], body_length=7)
    piece = Placeholder()
    assert proto.send_data_passthrough(piece) == [piece]
    assert proto.send_end() == b""
    with pytest.raises(ResponseError, match="after the end"):
        proto.send_data(b"x")


def test_file_placeholder_over_content_length_is_refused() -> None:
    proto = started()
    proto.send_response(200, [(b"content-length", b"6")])
    with pytest.raises(ResponseError, match="longer"):
        proto.send_data_passthrough(Placeholder())


def test_head_response_keeps_the_resource_length_and_drops_the_placeholder() -> None:
    proto = started(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    head = proto.send_response(200, [], body_length=7, length_is_resource_size=True)
    assert b"\r\ncontent-length: 7\r\n" in head
    assert proto.send_data_passthrough(Placeholder()) == []
    assert proto.discards_body


def test_body_before_the_head_is_refused() -> None:
    with pytest.raises(ResponseError, match="before the response head"):
        started().send_data(b"x")
    with pytest.raises(ResponseError, match="not started"):
        started().send_end()


@pytest.mark.parametrize(
    "bad",
    [
        b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",  # refused after h11 parsed it
        b"GARBAGE\r\n\r\n",  # refused by h11
        CHUNKED_HEAD + b"5;\r\nhello\r\n0\r\n\r\n",  # refused by the chunk follower
    ],
)
def test_nothing_comes_out_after_a_refusal(bad: bytes) -> None:
    proto = make()
    valid = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    with pytest.raises(RequestRefused) as first:
        events(proto, bad + valid)
    proto.receive_data(valid)
    for _ in range(3):
        with pytest.raises(RequestRefused) as again:
            proto.next_event()
        assert again.value is first.value
    assert not proto.start_next_cycle()


def test_response_headers_seen_before_are_rendered_the_same_and_bad_ones_still_refused() -> None:
    # Validated fields are remembered (a cache keyed by the exact name and value): a second
    # response with the same fields renders them identically, a field of another type
    # (bytearray, str, a writable memoryview, which cannot be a key) or shape (a list) still
    # works, and an invalid value is refused every time.
    heads = []
    for _ in range(2):
        proto = make()
        proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.next_event()
        heads.append(
            proto.send_response(
                200,
                [
                    (b"x-same", b"1"),
                    (bytearray(b"x-bytearray"), b"2"),  # type: ignore[list-item]
                    ("x-str", "3"),  # type: ignore[list-item]
                    (b"x-view", memoryview(bytearray(b"4"))),  # type: ignore[list-item]
                    [b"x-list", b"5"],
                    [b"content-length", b"0"],
                ],
            )
        )
    assert heads[0].split(b"\r\n")[2:] == heads[1].split(b"\r\n")[2:]
    assert b"x-same: 1\r\n" in heads[1]
    assert b"x-bytearray: 2\r\n" in heads[1]
    assert b"x-str: 3\r\n" in heads[1]
    assert b"x-view: 4\r\nx-list: 5\r\ncontent-length: 0\r\n" in heads[1]
    for _ in range(2):
        proto = make()
        proto.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        proto.next_event()
        with pytest.raises(ResponseError):
            proto.send_response(200, [(b"x-bad", b"a\r\nb")])
