"""H2Protocol, the sans-IO HTTP/2 layer: requests, refusals, flow control and every defence.

Bytes only, with a fake clock. The frame-by-frame conformance cases (h2spec's) live in
test_h2_conformance.py; this file covers what the server adds on top of h2.
"""

from __future__ import annotations

import h2.connection
import h2.events
import hpack
import pytest
from hyperframe.frame import DataFrame, GoAwayFrame, RstStreamFrame, WindowUpdateFrame

from trioserve._h2._protocol import (
    FLOOD_WINDOW,
    MAX_HEADER_BLOCK_FRAMES,
    STREAM_WINDOW,
    BodyData,
    ConnectionEnded,
    FloodLimits,
    StreamOpened,
    StreamReset,
    WindowOpened,
)
from trioserve._http._events import RequestHead

from .h2_helpers import GET, RawClient, client_config, request, server

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x1, 0x3, 0x5
REFUSED_STREAM, ENHANCE_YOUR_CALM = 0x7, 0xB


def goaways(frames: list[object]) -> list[int]:
    return [f.error_code for f in frames if isinstance(f, GoAwayFrame)]


def resets(frames: list[object]) -> list[tuple[int, int]]:
    return [(f.stream_id, f.error_code) for f in frames if isinstance(f, RstStreamFrame)]


def opened(events: list[object]) -> list[StreamOpened]:
    return [e for e in events if isinstance(e, StreamOpened)]


def calm(events: list[object]) -> bool:
    return any(isinstance(e, ConnectionEnded) and e.calm for e in events)


# -- the exchange (RFC 9113 sections 3.4, 6.5, 8.3.1) --------------------------------------------


def test_preface_and_settings_exchange_with_an_h2_client() -> None:
    """RFC 9113 section 3.4: both sides send SETTINGS first and acknowledge each other's."""
    side = server(raw_preface=False, max_concurrent_streams=50)
    client = h2.connection.H2Connection(config=client_config())
    client.initiate_connection()
    assert side.send(client.data_to_send()) == [WindowOpened(0)]  # the client's settings
    events = client.receive_data(side.proto.data_to_send())
    changed = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged))
    assert changed.changed_settings[0x3].new_value == 50  # MAX_CONCURRENT_STREAMS
    assert changed.changed_settings[0x4].new_value == STREAM_WINDOW  # INITIAL_WINDOW_SIZE
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
    side.send(client.data_to_send())  # the client's ACK of ours
    assert goaways(side.frames()) == []


def test_get_becomes_one_stream_opened_with_end_stream() -> None:
    """RFC 9113 section 8.1: a HEADERS with END_STREAM is a whole request without a body."""
    side = server()
    assert side.send(side.client.headers(1, request(b"GET", b"/a?b=1"))) == [
        StreamOpened(1, RequestHead(b"GET", b"/a?b=1", "2", [(b"host", b"example.test")]), True)
    ]


def test_post_body_becomes_body_data_events() -> None:
    """RFC 9113 section 8.1: DATA frames carry the body; END_STREAM on the last ends it once."""
    side = server()
    c = side.client
    events = side.send(
        c.headers(1, request(b"POST", b"/up"), end_stream=False),
        c.data(1, b"hello"),
        c.data(1, b" world", end_stream=True),
    )
    assert events[1:] == [BodyData(1, b"hello", False), BodyData(1, b" world", True)]
    assert opened(events)[0].end_stream is False


def test_authority_becomes_host() -> None:
    """RFC 9113 section 8.3.1: :authority stands for Host (ASGI apps read Host)."""
    side = server()
    head = opened(side.send(side.client.headers(1, [*GET, (b"accept", b"*/*")])))[0].head
    assert head.headers == [(b"host", b"example.test"), (b"accept", b"*/*")]


def test_a_host_header_matching_the_authority_is_kept_once() -> None:
    side = server()
    head = opened(side.send(side.client.headers(1, [*GET, (b"host", b"example.test")])))[0].head
    assert head.headers == [(b"host", b"example.test")]


def test_a_host_header_contradicting_the_authority_resets_the_stream() -> None:
    """RFC 9113 section 8.3.1: Host and :authority must not differ (a request-smuggling path)."""
    side = server()
    assert opened(side.send(side.client.headers(1, [*GET, (b"host", b"other.test")]))) == []
    assert resets(side.frames()) == [(1, PROTOCOL_ERROR)]


# -- malformed requests: a stream error, the connection kept (RFC 9113 section 8.1.1) -----------

MALFORMED = {
    "uppercase_name": [*GET, (b"X-Upper", b"1")],
    "connection_header": [*GET, (b"connection", b"close")],
    "transfer_encoding": [*GET, (b"transfer-encoding", b"chunked")],
    "missing_method": [f for f in GET if f[0] != b":method"],
    "missing_path": [f for f in GET if f[0] != b":path"],
    "duplicated_path": [*GET, (b":path", b"/again")],
    "pseudo_after_regular": [GET[0], (b"accept", b"*/*"), *GET[1:]],
    "te_other_than_trailers": [*GET, (b"te", b"gzip")],
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_request_resets_its_stream_while_another_goes_on(
    headers: list[tuple[bytes, bytes]],
) -> None:
    side = server()
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False))
    events = side.send(c.headers(3, headers), c.data(1, b"still here", end_stream=True))
    assert resets(side.frames()) == [(3, PROTOCOL_ERROR)]
    assert opened(events) == []
    assert events == [BodyData(1, b"still here", True)]
    assert [e.stream_id for e in opened(side.send(c.headers(5)))] == [5]


def test_malformed_trailers_reset_the_stream_and_say_so() -> None:
    """RFC 9113 section 8.1: pseudo-headers in trailers make the request malformed; the stream
    being served learns at once (StreamReset), not at its body timeout."""
    side = server()
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False))
    events = side.send(c.headers(1, [(b":path", b"/")]))
    assert events == [StreamReset(1)]
    assert resets(side.frames()) == [(1, PROTOCOL_ERROR)]


def test_content_length_mismatch_resets_the_stream_and_returns_the_connection_window() -> None:
    """RFC 9113 section 8.1.1: a stream error; the DATA it carried is credited back."""
    side = server()
    c = side.client
    headers = request(b"POST", b"/", (b"content-length", b"1"))
    side.send(c.headers(1, headers, end_stream=False))
    events = side.send(c.data(1, b"x" * 16_384))
    frames = side.frames()
    assert events == [StreamReset(1)]
    assert resets(frames) == [(1, PROTOCOL_ERROR)]
    assert [
        (f.stream_id, f.window_increment) for f in frames if isinstance(f, WindowUpdateFrame)
    ] == [(0, 16_384)]


# -- SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 section 5.1.2) -----------------------------------


def test_stream_over_the_concurrency_limit_is_refused_and_hpack_stays_in_step() -> None:
    side = server(max_concurrent_streams=2)
    c = side.client
    side.send(c.headers(1), c.headers(3))
    # The refused request adds a field to the client's HPACK table ...
    events = side.send(c.headers(5, [*GET, (b"x-custom", b"indexed-value")]))
    assert opened(events) == []
    assert resets(side.frames()) == [(5, REFUSED_STREAM)]
    assert not side.proto.ended
    # ... which the next request refers to by index once a slot is free.
    side.proto.send_headers(1, 200, [], end_stream=True)
    block = c.block([*GET, (b"x-custom", b"indexed-value")])
    assert len(block) < 10  # everything by index: the server must have kept the table in step
    events = side.send(c.headers(7, block=block))
    assert [(e.stream_id, e.head.headers[-1]) for e in opened(events)] == [
        (7, (b"x-custom", b"indexed-value"))
    ]


# -- header count (issue 10 item 4; RFC 9113 section 10.5.1) -------------------------------------


def test_header_count_over_max_headers_is_refused_with_431() -> None:
    side = server(max_headers=5)
    c = side.client
    fields = [(b"x-h%d" % i, b"v") for i in range(6)]
    too_many = opened(side.send(c.headers(1, [*GET, *fields])))
    just_enough = opened(side.send(c.headers(3, [*GET, *fields[:5]])))
    assert too_many[0].refusal is not None
    assert too_many[0].refusal[0] == 431
    assert just_enough[0].refusal is None


# -- CONTINUATION flood (CVE-2024-27316) --------------------------------------------------------


def test_continuation_flood_of_frames_gets_enhance_your_calm() -> None:
    side = server()
    c = side.client
    chunks = [c.headers(1, end_headers=False)]
    chunks += [c.continuation(1, b"", end_headers=False)] * MAX_HEADER_BLOCK_FRAMES
    events = side.send(*chunks)
    assert calm(events)
    assert goaways(side.frames()) == [ENHANCE_YOUR_CALM]


def test_header_block_over_the_byte_limit_gets_enhance_your_calm_before_it_ends() -> None:
    side = server(max_header_block=1024)
    c = side.client
    first = c.headers(1, block=c.block(GET), end_headers=False)
    events = side.send(first, c.continuation(1, b"\0" * 1024, end_headers=False))
    assert calm(events)
    assert goaways(side.frames()) == [ENHANCE_YOUR_CALM]


def test_header_block_within_the_frame_limit_is_served() -> None:
    side = server()
    c = side.client
    block = c.block(GET)
    chunks = [c.headers(1, block=block[:1], end_headers=False)]
    chunks += [c.continuation(1, block[i : i + 1], end_headers=False) for i in range(1, 15)]
    chunks.append(c.continuation(1, block[15:]))
    assert len(chunks) == MAX_HEADER_BLOCK_FRAMES
    assert [e.stream_id for e in opened(side.send(*chunks))] == [1]


# -- Rapid Reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671) ------------------------------


def test_rapid_reset_past_the_budget_gets_enhance_your_calm() -> None:
    side = server(limits=FloodLimits(resets=10))
    c = side.client
    events: list[object] = []
    for stream_id in range(1, 2 * 11, 2):
        events += side.send(c.headers(stream_id, end_stream=False), c.rst(stream_id))
    assert calm(events)
    assert goaways(side.frames()) == [ENHANCE_YOUR_CALM]


def test_resets_under_the_budget_in_separate_windows_are_fine() -> None:
    side = server(limits=FloodLimits(resets=10))
    c = side.client
    stream_id = 1
    for _ in range(3):
        for _ in range(10):
            side.send(c.headers(stream_id, end_stream=False), c.rst(stream_id))
            stream_id += 2
        side.clock.now += FLOOD_WINDOW
    assert not side.proto.ended
    assert goaways(side.frames()) == []


def test_made_you_reset_data_on_reset_streams_is_counted() -> None:
    """DATA on a stream the server has reset: each gets RST_STREAM STREAM_CLOSED, each counts."""
    side = server(limits=FloodLimits(resets=5))
    c = side.client
    side.send(c.headers(1, [*MALFORMED["uppercase_name"]], end_stream=False))
    events: list[object] = []
    for _ in range(5):
        events += side.send(c.data(1, b"x"))
    frames = side.frames()
    assert resets(frames)[:2] == [(1, PROTOCOL_ERROR), (1, STREAM_CLOSED)]
    assert calm(events)
    assert goaways(frames) == [ENHANCE_YOUR_CALM]


def test_made_you_reset_window_overflows_are_counted() -> None:
    """A WINDOW_UPDATE past 2^31-1 on a stream makes the server reset it: counted."""
    side = server(limits=FloodLimits(resets=3))
    c = side.client
    events: list[object] = []
    for stream_id in (1, 3, 5, 7):
        events += side.send(c.headers(stream_id), c.window_update(stream_id, 2**31 - 1))
    frames = side.frames()
    assert resets(frames)[:3] == [(1, FLOW_CONTROL_ERROR), (3, FLOW_CONTROL_ERROR), (5, 3)]
    assert calm(events)


# -- control-frame floods (CVE-2019-9512, 9515, 9518, 9511/9517) --------------------------------

FLOODS = {
    "ping": lambda c: c.ping(),
    "settings": lambda c: c.settings(),
    "priority": lambda c: c.priority(9),
    "empty_data": lambda c: c.data(1, b""),
    "window_update": lambda c: c.window_update(0, 1),
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_control_frame_flood_gets_enhance_your_calm(name: str) -> None:
    side = server(limits=FloodLimits(control_frames=50, window_updates=50))
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False))
    events = side.send(*[FLOODS[name](c) for _ in range(51)])
    assert calm(events)
    assert goaways(side.frames())[-1:] == [ENHANCE_YOUR_CALM]


@pytest.mark.parametrize("name", list(FLOODS))
def test_control_frames_under_the_budget_per_window_are_fine(name: str) -> None:
    side = server(limits=FloodLimits(control_frames=50, window_updates=50))
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False))
    for _ in range(3):
        side.clock.now += FLOOD_WINDOW
        side.send(*[FLOODS[name](c) for _ in range(45)])
    assert not side.proto.ended
    assert goaways(side.frames()) == []


def test_settings_acks_are_not_counted_as_a_flood() -> None:
    side = server(limits=FloodLimits(control_frames=5))
    side.send(*[RawClient.settings(ack=True) for _ in range(20)])
    assert not side.proto.ended


# -- framing: any split of the bytes means the same (RFC 9113 section 4.1) ----------------------


def _conversation(c: RawClient) -> bytes:
    block = c.block(request(b"POST", b"/split"))
    return b"".join(
        [
            c.preface(),
            RawClient.settings(ack=True),
            c.headers(1, block=block[:3], end_headers=False, end_stream=False),
            c.continuation(1, block[3:]),
            RawClient.data(1, b"first"),
            RawClient.ping(),
            RawClient.data(1, b"second", end_stream=True),
            c.headers(3),
            RawClient.rst(3),
        ]
    )


def test_frames_split_at_every_byte_boundary_give_the_same_events() -> None:
    whole = server(raw_preface=False)
    data = _conversation(whole.client)
    expected = whole.send(data)
    assert len(expected) == 6
    for cut in range(1, len(data)):
        side = server(raw_preface=False)
        assert side.send(data[:cut], data[cut:]) == expected, cut
    byte_by_byte = server(raw_preface=False)
    assert byte_by_byte.send(*[data[i : i + 1] for i in range(len(data))]) == expected


# -- flow control tied to consumption (RFC 9113 section 5.2, issue 10 item 3) -------------------


def test_stream_window_is_credited_only_by_consumed() -> None:
    side = server()
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False), c.data(1, b"x" * 1000))
    assert [f for f in side.frames() if isinstance(f, WindowUpdateFrame)] == []
    side.proto.consumed(1, 1000)
    updates = [(f.stream_id, f.window_increment) for f in side.frames()]
    assert updates == [(1, 1000)]


def test_connection_window_is_credited_as_data_arrives() -> None:
    side = server()
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False))
    side.send(c.headers(3, request(b"POST"), end_stream=False))
    side.send(c.data(1, b"x" * 16_384), c.data(3, b"y" * 16_384))
    updates = [(f.stream_id, f.window_increment) for f in side.frames()]
    assert updates == [(0, 32_768)]  # the connection's; neither stream's (nobody read them)


def test_consumed_after_the_stream_is_gone_is_harmless() -> None:
    side = server()
    c = side.client
    side.send(c.headers(1, request(b"POST"), end_stream=False), c.data(1, b"abc"), c.rst(1))
    side.proto.consumed(1, 3)
    assert resets(side.frames()) == []
    assert not side.proto.ended


# -- the response side --------------------------------------------------------------------------


def test_response_drops_connection_specific_headers() -> None:
    """RFC 9113 section 8.2.2: HTTP/1.1 framing headers never go out over HTTP/2."""
    side = server()
    client = h2.connection.H2Connection(config=client_config())
    side2 = server(raw_preface=False)
    client.initiate_connection()
    side2.send(client.data_to_send())
    client.receive_data(side2.proto.data_to_send())
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, GET, end_stream=True)
    side2.send(client.data_to_send())
    side2.proto.send_headers(
        stream_id,
        200,
        [(b"Connection", b"close"), (b"transfer-encoding", b"chunked"), (b"x-kept", b"1")],
        end_stream=True,
    )
    events = client.receive_data(side2.proto.data_to_send())
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert list(response.headers or ()) == [(b":status", b"200"), (b"x-kept", b"1")]
    del side


@pytest.mark.parametrize("status", [100, 101, 99, 600, "200"])
def test_invalid_final_status_is_the_apps_error(status: object) -> None:
    side = server()
    side.send(side.client.headers(1))
    with pytest.raises(ValueError, match="status"):
        side.proto.send_headers(1, status, [], end_stream=True)  # type: ignore[arg-type]


# -- graceful GOAWAY (RFC 9113 section 6.8) ------------------------------------------------------


def test_after_a_graceful_goaway_streams_in_flight_still_answer_and_new_ones_are_refused() -> None:
    side = server()
    c = side.client
    side.send(c.headers(1))
    side.proto.goaway()
    assert [
        (f.last_stream_id, f.error_code) for f in side.frames() if isinstance(f, GoAwayFrame)
    ] == [(1, 0)]
    events = side.send(c.headers(3, [*GET, (b"x-late", b"1")]))
    assert opened(events) == []
    assert resets(side.frames()) == [(3, REFUSED_STREAM)]
    side.proto.send_headers(1, 200, [], end_stream=False)
    side.proto.send_data(1, b"done", end_stream=True)
    assert [type(f).__name__ for f in side.frames()] == ["HeadersFrame", "DataFrame"]
    assert not side.proto.ended


def test_settings_a_client_names_for_the_first_time_take_effect_in_the_compact_table() -> None:
    # The settings tables are compacted (lists, not h2's 760-byte deques): a setting the client
    # names for the first time must still be applied, and stay applied after the ACK.
    side = server()
    side.send(RawClient.settings(MAX_CONCURRENT_STREAMS=7, MAX_FRAME_SIZE=32_768))
    remote = side.proto._conn.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.max_frame_size == 32_768
    assert side.proto._conn.max_outbound_frame_size == 32_768
    assert not any(type(values).__name__ == "deque" for values in remote._settings.values())


def test_response_headers_are_encoded_without_huffman_and_decode() -> None:
    side = server()
    side.send(side.client.headers(1))
    side.proto.send_headers(1, 200, [(b"content-type", b"text/plain")], end_stream=True)
    [headers] = [f for f in side.frames() if type(f).__name__ == "HeadersFrame"]
    assert b"text/plain" in headers.data  # literal, not Huffman-coded
    decoded = hpack.Decoder().decode(headers.data, raw=True)
    assert (b":status", b"200") in decoded
    assert (b"content-type", b"text/plain") in decoded


def test_the_end_of_a_body_goes_out_when_the_client_shrank_the_window_below_zero() -> None:
    # RFC 9113 section 6.9.2: a smaller SETTINGS_INITIAL_WINDOW_SIZE may leave a stream's
    # window negative; an empty DATA frame is not flow controlled, so the body still ends.
    side = server()
    side.send(side.client.headers(1))
    side.proto.send_headers(1, 200, [], end_stream=False)
    assert side.proto.send_data(1, b"x" * 1000, end_stream=False) == 1000
    side.frames()
    side.send(RawClient.settings(INITIAL_WINDOW_SIZE=0))
    shrunk = side.proto.window(1)
    assert shrunk < 0
    assert side.proto.send_data(1, b"", end_stream=True) == 0
    data = [f for f in side.frames() if isinstance(f, DataFrame)]
    assert [(len(f.data), "END_STREAM" in f.flags) for f in data] == [(0, True)]
    assert side.proto.window(1) == shrunk  # nothing was taken from (or given to) the window


def test_a_mutable_body_is_copied_when_queued() -> None:
    # DATA frames are queued by reference until written: an app that reuses its bytearray after
    # send() returned (or was cancelled) must not change what goes out.
    side = server()
    side.send(side.client.headers(1))
    side.proto.send_headers(1, 200, [], end_stream=False)
    body = bytearray(b"first")
    assert side.proto.send_data(1, body, end_stream=True) == 5
    body[:] = b"XXXXX"
    data = [f for f in side.frames() if isinstance(f, DataFrame)]
    assert [bytes(f.data) for f in data] == [b"first"]


def test_a_view_of_a_mutable_body_is_copied_when_queued() -> None:
    # H2Stream hands send_data a memoryview of the app's body: a view of a bytearray too.
    side = server()
    side.send(side.client.headers(1))
    side.proto.send_headers(1, 200, [], end_stream=False)
    body = bytearray(b"first")
    assert side.proto.send_data(1, memoryview(body)[1:], end_stream=True) == 4
    body[:] = b"XXXXX"
    body.extend(b"resizable: no view of it is kept")
    data = [f for f in side.frames() if isinstance(f, DataFrame)]
    assert [bytes(f.data) for f in data] == [b"irst"]
