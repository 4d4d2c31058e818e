"""Property tests of the HTTP/1.1 sans-IO protocol: random and mutated bytes in, never a crash.

The bounded run here takes a few seconds. For a long run: ``TRIOSERVE_FUZZ=1`` selects the
``fuzz`` hypothesis profile (many more examples, failures kept in ``.hypothesis/``), which
``nox -s fuzz`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioserve._errors import RequestRefused
from trioserve._h11._protocol import ServerProtocol
from trioserve._http._events import CLIENT_CLOSED, END_OF_BODY, NEED_DATA, BodyChunk, RequestHead

settings.register_profile(
    "default-bounded",
    # ~200 examples per property keeps this file under ~10 s on a loaded 2-core machine.
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = settings.get_profile("fuzz" if os.environ.get("TRIOSERVE_FUZZ") else "default-bounded")

VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x?y=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nX-A: b\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET http://b/p HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=v\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
]
NEXT_REQUEST = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
INSERTS = [b"\r", b"\n", b"\x00", b" ", b"\t", b";", b":", b"\r\n", b"\x7f", b"#", b"@"]


@dataclass
class Outcome:
    """What a client got out of a byte stream: request heads, bodies, and a refusal."""

    heads: list[tuple[bytes, bytes, str, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    refusal: RequestRefused | None = None
    closed: bool = False


def drive(
    pieces: list[bytes], *, eof: bool = True, parser: type[ServerProtocol] = ServerProtocol
) -> tuple[Outcome, ServerProtocol]:
    """Feed ``pieces`` one at a time, as a connection does, answering every complete request.

    Anything raised but :class:`RequestRefused` fails the test that drives.
    """
    proto = parser(max_header_size=1024, max_body_size=64, max_headers=20)
    out = Outcome()
    in_body = False
    feed = [*pieces, b""] if eof else pieces
    try:
        for piece in feed:
            proto.receive_data(piece)
            while True:
                event = proto.next_event()
                if event is NEED_DATA:
                    break
                if event is CLIENT_CLOSED:
                    out.closed = True
                    break
                if type(event) is RequestHead:
                    heads = [(bytes(n), bytes(v)) for n, v in event.headers]
                    out.heads.append((event.method, event.target, event.http_version, heads))
                    out.bodies.append(b"")
                    in_body = not proto.request_bodyless
                elif type(event) is BodyChunk:
                    assert in_body
                    out.bodies[-1] += event.data
                else:
                    assert event is END_OF_BODY
                    in_body = False
                if not in_body:
                    proto.send_response(200, [(b"content-length", b"0")])
                    proto.send_end()
                    if not proto.start_next_cycle():
                        return out, proto
    except RequestRefused as exc:
        out.refusal = exc
    return out, proto


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_REQUESTS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                index = draw(st.integers(1, len(lines) - 2))
                lines.insert(index, lines[index])
                data = bytearray(b"\r\n".join(lines))
    return bytes(data)


byte_streams = st.one_of(
    mutated_requests(),
    st.binary(max_size=300),
    st.builds(lambda a, b: a + b, st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST "]), st.binary()),
)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (modulo its length), without empty pieces (b"" is the EOF)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} - {0, len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@PROFILE
@given(byte_streams)
def test_any_bytes_give_events_or_a_refusal_with_a_4xx_or_5xx(data: bytes) -> None:
    outcome, _ = drive([data])
    if outcome.refusal is not None:
        assert 400 <= outcome.refusal.status <= 505, outcome.refusal


@PROFILE
@given(mutated_requests())
def test_no_request_is_served_after_a_refusal(data: bytes) -> None:
    outcome, proto = drive([data + NEXT_REQUEST], eof=False)
    if outcome.refusal is None:
        return
    assert all(head[1] != b"/next" for head in outcome.heads)
    proto.receive_data(NEXT_REQUEST)
    for _ in range(2):
        try:
            event = proto.next_event()
        except RequestRefused:
            continue
        raise AssertionError(f"an event after a refusal: {event!r}")
    assert not proto.start_next_cycle()


@PROFILE
@given(st.one_of(mutated_requests(), st.sampled_from(VALID_REQUESTS)), st.lists(st.integers(0)))
def test_split_bytes_give_the_same_events_as_whole_ones(data: bytes, cuts: list[int]) -> None:
    whole, _ = drive([data])
    split, _ = drive(split_at(data, cuts))
    assert split.heads == whole.heads
    assert (split.refusal is None) == (whole.refusal is None), (whole.refusal, split.refusal)
    if whole.refusal is None:
        assert split.bodies == whole.bodies
        assert split.closed == whole.closed
    else:
        assert split.refusal is not None
        assert split.refusal.status == whole.refusal.status


@PROFILE
@given(st.sampled_from(VALID_REQUESTS), st.lists(st.integers(0), max_size=20))
def test_valid_requests_are_never_refused_however_split(data: bytes, cuts: list[int]) -> None:
    outcome, _ = drive(split_at(data, cuts))
    assert outcome.refusal is None
    assert outcome.heads
