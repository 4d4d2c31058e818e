"""HTTP/2 conformance of H2Protocol, case by case after h2spec, by RFC 9113 / RFC 7541 section.

Bytes only (no trio): each case sends, after the preface and SETTINGS exchange, frames a client
may or may not send, and states what the server must answer:

* ``conn(code)``: a connection error (RFC 9113 section 5.4.1): GOAWAY with ``code``, and the
  protocol reports the connection ended;
* ``stream(id, code)``: a stream error (section 5.4.2): RST_STREAM with ``code`` on that stream,
  no GOAWAY, and the connection still serves a new request (HPACK still in step);
* ``either(code)``: the RFC lets the server choose (h2spec accepts both);
* ``OK``: nothing is refused; the connection still serves a new request.

The section number opens each case id, so ``pytest -k 6_9`` runs one section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from trioserve._h2._protocol import ConnectionEnded, StreamOpened

from .h2_helpers import GET, RawClient, request, server

# Error codes (RFC 9113 section 7).
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x9
# Frame types (section 6) for hand-made frames.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
# Flags.
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8

# A stream id above any the cases use: the request that proves the connection still works.
NEXT = 101


@dataclass(frozen=True)
class Expect:
    kind: str  # "conn", "stream", "either", "ok"
    code: int = NO_ERROR
    stream_id: int = 0


def conn(code: int) -> Expect:
    return Expect("conn", code)


def stream(stream_id: int, code: int) -> Expect:
    return Expect("stream", code, stream_id)


def either(code: int) -> Expect:
    return Expect("either", code)


OK = Expect("ok")

Build = Callable[[RawClient], list[bytes]]


def get_block(c: RawClient) -> bytes:
    return c.block(GET)


def hpack_case(tail: bytes) -> Build:
    """A request whose header block is valid up to ``tail`` (RFC 7541 decoding errors)."""
    return lambda c: [c.headers(1, block=get_block(c) + tail)]


def open_stream(c: RawClient, stream_id: int = 1) -> bytes:
    """A request whose body is still to come (the stream stays open)."""
    return c.headers(stream_id, request(b"POST"), end_stream=False)


def malformed(*headers: tuple[bytes, bytes]) -> Build:
    return lambda c: [c.headers(1, list(headers))]


_M, _S, _A, _P = (
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.test"),
    (b":path", b"/"),
)

CASES: dict[str, tuple[Build, Expect]] = {
    # -- 3.4 / 3.5 HTTP/2 connection preface ---------------------------------------------------
    "3_5_settings_gets_settings_ack": (lambda c: [c.settings(MAX_CONCURRENT_STREAMS=10)], OK),
    # -- 4.1 frame format ----------------------------------------------------------------------
    "4_1_unknown_frame_type_is_ignored": (lambda c: [c.raw(0x16, 0, 0, b"abcd")], OK),
    "4_1_undefined_flags_are_ignored": (lambda c: [c.raw(PING, 0x16, 0, b"12345678")], OK),
    "4_1_reserved_bit_is_ignored": (
        lambda c: [c.raw(PING, 0, 0x8000_0000, b"12345678")],
        OK,
    ),
    # -- 4.2 frame size ------------------------------------------------------------------------
    "4_2_data_of_max_frame_size_is_accepted": (
        lambda c: [open_stream(c), c.data(1, b"x" * 16_384)],
        OK,
    ),
    "4_2_data_over_max_frame_size": (
        lambda c: [open_stream(c), c.raw(DATA, 0, 1, b"x" * 16_385)],
        either(FRAME_SIZE_ERROR),
    ),
    "4_2_headers_over_max_frame_size": (
        lambda c: [c.raw(HEADERS, END_STREAM | END_HEADERS, 1, get_block(c) + b"\0" * 16_385)],
        conn(FRAME_SIZE_ERROR),
    ),
    # -- 4.3 header compression and decompression ----------------------------------------------
    "4_3_invalid_header_block_is_a_compression_error": (
        lambda c: [c.headers(1, block=b"\xff\xff\xff\xff")],
        conn(COMPRESSION_ERROR),
    ),
    "4_3_priority_inside_a_header_block": (
        lambda c: [c.headers(1, end_headers=False), c.priority(1)],
        conn(PROTOCOL_ERROR),
    ),
    "4_3_headers_of_another_stream_inside_a_header_block": (
        lambda c: [c.headers(1, end_headers=False), c.headers(3)],
        conn(PROTOCOL_ERROR),
    ),
    # -- 5.1 stream states ---------------------------------------------------------------------
    "5_1_idle_data": (lambda c: [c.data(1, b"x")], conn(PROTOCOL_ERROR)),
    "5_1_idle_rst_stream": (lambda c: [c.rst(1)], conn(PROTOCOL_ERROR)),
    "5_1_idle_window_update": (lambda c: [c.window_update(1, 100)], conn(PROTOCOL_ERROR)),
    "5_1_idle_continuation": (lambda c: [c.continuation(1, get_block(c))], conn(PROTOCOL_ERROR)),
    "5_1_half_closed_remote_data": (
        lambda c: [c.headers(1), c.data(1, b"x")],
        either(STREAM_CLOSED),
    ),
    "5_1_half_closed_remote_headers": (
        lambda c: [c.headers(1), c.headers(1)],
        either(STREAM_CLOSED),
    ),
    "5_1_half_closed_remote_continuation": (
        lambda c: [c.headers(1), c.continuation(1, get_block(c))],
        either(PROTOCOL_ERROR),
    ),
    "5_1_closed_data_after_rst_stream": (
        lambda c: [open_stream(c), c.rst(1), c.data(1, b"x")],
        either(STREAM_CLOSED),
    ),
    "5_1_closed_headers_after_rst_stream": (
        lambda c: [open_stream(c), c.rst(1), c.headers(1)],
        either(STREAM_CLOSED),
    ),
    "5_1_closed_continuation_after_rst_stream": (
        lambda c: [open_stream(c), c.rst(1), c.continuation(1, get_block(c))],
        either(PROTOCOL_ERROR),
    ),
    "5_1_priority_on_a_closed_stream_is_allowed": (
        lambda c: [open_stream(c), c.rst(1), c.priority(1, 0)],
        OK,
    ),
    # -- 5.1.1 stream identifiers --------------------------------------------------------------
    "5_1_1_even_stream_id": (lambda c: [c.headers(2)], conn(PROTOCOL_ERROR)),
    "5_1_1_stream_id_lower_than_before": (
        lambda c: [c.headers(5), c.headers(3)],
        conn(PROTOCOL_ERROR),
    ),
    # -- 5.1.2 stream concurrency (refused by the stream alone: see test_h2_protocol.py) -------
    # -- 5.3.1 stream dependencies -------------------------------------------------------------
    "5_3_1_headers_depending_on_itself": (
        lambda c: [c.headers(1, depends_on=1, stream_weight=15)],
        either(PROTOCOL_ERROR),
    ),
    "5_3_1_priority_depending_on_itself": (
        lambda c: [c.priority(1, depends_on=1)],
        either(PROTOCOL_ERROR),
    ),
    # -- 5.4.1 connection error handling -------------------------------------------------------
    "5_4_1_invalid_ping_ends_the_connection": (
        lambda c: [c.raw(PING, 0, 0, b"123456")],
        conn(FRAME_SIZE_ERROR),
    ),
    # -- 5.5 extending HTTP/2 ------------------------------------------------------------------
    "5_5_unknown_extension_frame_is_ignored": (lambda c: [c.raw(0xFF, 0, 1, b"ext")], OK),
    "5_5_unknown_frame_inside_a_header_block": (
        lambda c: [c.headers(1, end_headers=False), c.raw(0xFF, 0, 1, b"ext")],
        conn(PROTOCOL_ERROR),
    ),
    # -- 6.1 DATA ------------------------------------------------------------------------------
    "6_1_data_on_stream_0": (lambda c: [c.raw(DATA, 0, 0, b"x")], conn(PROTOCOL_ERROR)),
    "6_1_data_on_a_half_closed_remote_stream": (
        lambda c: [c.headers(1), c.data(1, b"x", end_stream=True)],
        either(STREAM_CLOSED),
    ),
    "6_1_data_with_padding_longer_than_the_frame": (
        lambda c: [open_stream(c), c.raw(DATA, PADDED, 1, b"\x06abcd")],
        conn(PROTOCOL_ERROR),
    ),
    "6_1_data_with_padding_is_accepted": (
        lambda c: [open_stream(c), c.raw(DATA, PADDED | END_STREAM, 1, b"\x02ab\0\0")],
        OK,
    ),
    # -- 6.2 HEADERS ---------------------------------------------------------------------------
    "6_2_headers_then_data_inside_a_header_block": (
        lambda c: [c.headers(1, end_headers=False, end_stream=False), c.data(1, b"x")],
        conn(PROTOCOL_ERROR),
    ),
    "6_2_headers_on_stream_0": (
        lambda c: [c.raw(HEADERS, END_HEADERS | END_STREAM, 0, get_block(c))],
        conn(PROTOCOL_ERROR),
    ),
    "6_2_headers_with_padding_longer_than_the_frame": (
        lambda c: [c.raw(HEADERS, PADDED | END_HEADERS | END_STREAM, 1, b"\xff" + get_block(c))],
        conn(PROTOCOL_ERROR),
    ),
    "6_2_headers_with_padding_and_priority_are_accepted": (
        lambda c: [
            c.raw(
                HEADERS,
                PADDED | END_HEADERS | END_STREAM | 0x20,
                1,
                b"\x03" + b"\0\0\0\0\x0f" + get_block(c) + b"\0\0\0",
            )
        ],
        OK,
    ),
    # -- 6.3 PRIORITY --------------------------------------------------------------------------
    "6_3_priority_on_stream_0": (lambda c: [c.raw(PRIORITY, 0, 0, b"\0\0\0\0\x0f")], conn(1)),
    "6_3_priority_of_length_4": (
        lambda c: [c.raw(PRIORITY, 0, 1, b"\0\0\0\0")],
        either(FRAME_SIZE_ERROR),
    ),
    "6_3_priority_on_an_idle_stream_is_allowed": (lambda c: [c.priority(9, 0)], OK),
    # -- 6.4 RST_STREAM ------------------------------------------------------------------------
    "6_4_rst_stream_on_stream_0": (
        lambda c: [c.raw(RST_STREAM, 0, 0, b"\0\0\0\x08")],
        conn(PROTOCOL_ERROR),
    ),
    "6_4_rst_stream_on_an_idle_stream": (lambda c: [c.rst(7)], conn(PROTOCOL_ERROR)),
    "6_4_rst_stream_of_length_3": (
        lambda c: [open_stream(c), c.raw(RST_STREAM, 0, 1, b"\0\0\x08")],
        conn(FRAME_SIZE_ERROR),
    ),
    # -- 6.5 SETTINGS --------------------------------------------------------------------------
    "6_5_settings_ack_with_a_payload": (
        lambda c: [c.raw(SETTINGS, ACK, 0, b"\0\x03\0\0\0\x01")],
        conn(FRAME_SIZE_ERROR),
    ),
    "6_5_settings_on_a_stream": (
        lambda c: [c.raw(SETTINGS, 0, 1, b"\0\x03\0\0\0\x01")],
        conn(PROTOCOL_ERROR),
    ),
    "6_5_settings_of_length_not_a_multiple_of_6": (
        lambda c: [c.raw(SETTINGS, 0, 0, b"\0\x03\0\0\0")],
        conn(FRAME_SIZE_ERROR),
    ),
    # -- 6.5.2 defined SETTINGS parameters -----------------------------------------------------
    "6_5_2_enable_push_other_than_0_or_1": (
        lambda c: [c.settings(ENABLE_PUSH=2)],
        conn(PROTOCOL_ERROR),
    ),
    "6_5_2_initial_window_size_over_the_maximum": (
        lambda c: [c.settings(INITIAL_WINDOW_SIZE=2**31)],
        conn(FLOW_CONTROL_ERROR),
    ),
    "6_5_2_max_frame_size_under_the_minimum": (
        lambda c: [c.settings(MAX_FRAME_SIZE=16_383)],
        conn(PROTOCOL_ERROR),
    ),
    "6_5_2_max_frame_size_over_the_maximum": (
        lambda c: [c.settings(MAX_FRAME_SIZE=2**24)],
        conn(PROTOCOL_ERROR),
    ),
    "6_5_2_unknown_setting_is_ignored": (
        lambda c: [c.raw(SETTINGS, 0, 0, b"\x00\xff\0\0\0\x01")],
        OK,
    ),
    # -- 6.7 PING ------------------------------------------------------------------------------
    "6_7_ping_on_a_stream": (lambda c: [c.raw(PING, 0, 1, b"12345678")], conn(PROTOCOL_ERROR)),
    "6_7_ping_of_length_6": (lambda c: [c.raw(PING, 0, 0, b"123456")], conn(FRAME_SIZE_ERROR)),
    "6_7_ping_ack_gets_no_answer": (lambda c: [c.ping(ack=True)], OK),
    # -- 6.8 GOAWAY ----------------------------------------------------------------------------
    "6_8_goaway_on_a_stream": (
        lambda c: [c.raw(GOAWAY, 0, 1, b"\0\0\0\0\0\0\0\0")],
        conn(PROTOCOL_ERROR),
    ),
    # -- 6.9 WINDOW_UPDATE ---------------------------------------------------------------------
    "6_9_zero_increment_on_the_connection": (
        lambda c: [c.window_update(0, 0)],
        conn(PROTOCOL_ERROR),
    ),
    "6_9_zero_increment_on_a_stream": (
        lambda c: [open_stream(c), c.window_update(1, 0)],
        either(PROTOCOL_ERROR),
    ),
    "6_9_window_update_of_length_3": (
        lambda c: [c.raw(WINDOW_UPDATE, 0, 0, b"\0\0\x01")],
        conn(FRAME_SIZE_ERROR),
    ),
    # -- 6.9.1 the flow-control window ---------------------------------------------------------
    "6_9_1_connection_window_over_2_31_minus_1": (
        lambda c: [c.window_update(0, 2**31 - 1)],
        conn(FLOW_CONTROL_ERROR),
    ),
    "6_9_1_stream_window_over_2_31_minus_1": (
        lambda c: [open_stream(c), c.window_update(1, 2**31 - 1)],
        stream(1, FLOW_CONTROL_ERROR),
    ),
    "6_9_1_data_filling_the_stream_window": (
        lambda c: (
            [open_stream(c)]
            + [c.data(1, b"x" * 16_384) for _ in range(3)]
            + [c.data(1, b"x" * 16_383)]
        ),
        OK,  # the whole window (65,535 bytes), not a byte more
    ),
    "6_9_1_data_past_the_stream_window": (
        lambda c: [open_stream(c)] + [c.data(1, b"x" * 16_384) for _ in range(4)],
        either(FLOW_CONTROL_ERROR),
    ),
    # -- 6.9.2 initial flow-control window size ------------------------------------------------
    "6_9_2_initial_window_size_over_the_maximum": (
        lambda c: [
            c.settings(INITIAL_WINDOW_SIZE=2**31 - 1),
            c.settings(INITIAL_WINDOW_SIZE=2**31),
        ],
        conn(FLOW_CONTROL_ERROR),
    ),
    # -- 6.10 CONTINUATION ---------------------------------------------------------------------
    "6_10_continuation_frames_make_one_header_block": (
        lambda c: _split_block(c, get_block(c), 3),
        OK,
    ),
    "6_10_continuation_then_another_frame": (
        lambda c: (
            [
                c.headers(1, end_headers=False),
                c.continuation(1, b"", end_headers=False),
                c.data(1, b"x"),
            ]
        ),
        conn(PROTOCOL_ERROR),
    ),
    "6_10_continuation_on_stream_0": (
        lambda c: [c.headers(1, end_headers=False), c.raw(CONTINUATION, END_HEADERS, 0, b"")],
        conn(PROTOCOL_ERROR),
    ),
    "6_10_continuation_after_end_headers": (
        lambda c: [c.headers(1, end_stream=False), c.continuation(1, b"")],
        conn(PROTOCOL_ERROR),
    ),
    "6_10_continuation_after_a_continuation_with_end_headers": (
        lambda c: [c.headers(1, end_headers=False), c.continuation(1, b""), c.continuation(1, b"")],
        conn(PROTOCOL_ERROR),
    ),
    "6_10_continuation_after_data": (
        lambda c: [open_stream(c), c.data(1, b"x"), c.continuation(1, b"")],
        conn(PROTOCOL_ERROR),
    ),
    # -- 7 error codes -------------------------------------------------------------------------
    "7_unknown_error_code_in_rst_stream_is_accepted": (
        lambda c: [open_stream(c), c.rst(1, code=0xFF)],
        OK,
    ),
    # -- 8.1 HTTP request/response exchange ----------------------------------------------------
    "8_1_trailers_end_the_request": (
        lambda c: [open_stream(c), c.data(1, b"x"), c.headers(1, [(b"x-trailer", b"1")])],
        OK,
    ),
    "8_1_second_headers_without_end_stream": (
        lambda c: [open_stream(c), c.headers(1, [(b"x-trailer", b"1")], end_stream=False)],
        either(PROTOCOL_ERROR),
    ),
    # -- 8.2.1 field validity (RFC 9113; 8.1.2 in RFC 7540) ------------------------------------
    "8_2_1_uppercase_header_name": (
        malformed(_M, _S, _A, _P, (b"X-Upper", b"1")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_1_header_name_with_a_space": (
        malformed(_M, _S, _A, _P, (b"x bad", b"1")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_1_header_value_with_a_newline": (
        malformed(_M, _S, _A, _P, (b"x-bad", b"a\r\nb")),
        stream(1, PROTOCOL_ERROR),
    ),
    # -- 8.2.2 connection-specific header fields -----------------------------------------------
    "8_2_2_connection_header": (
        malformed(_M, _S, _A, _P, (b"connection", b"keep-alive")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_2_transfer_encoding_header": (
        malformed(_M, _S, _A, _P, (b"transfer-encoding", b"chunked")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_2_upgrade_header": (
        malformed(_M, _S, _A, _P, (b"upgrade", b"h2c")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_2_keep_alive_header": (
        malformed(_M, _S, _A, _P, (b"keep-alive", b"timeout=5")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_2_te_other_than_trailers": (
        malformed(_M, _S, _A, _P, (b"te", b"gzip")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_2_2_te_trailers_is_accepted": (malformed(_M, _S, _A, _P, (b"te", b"trailers")), OK),
    # -- 8.3 / 8.3.1 request pseudo-header fields ----------------------------------------------
    "8_3_unknown_pseudo_header": (
        malformed(_M, _S, _A, _P, (b":foo", b"bar")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_3_response_pseudo_header_in_a_request": (
        malformed(_M, _S, _A, _P, (b":status", b"200")),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_3_pseudo_header_after_a_regular_one": (
        malformed(_M, _S, _A, (b"x-a", b"1"), _P),
        stream(1, PROTOCOL_ERROR),
    ),
    "8_3_pseudo_header_in_trailers": (
        lambda c: [open_stream(c), c.headers(1, [(b":method", b"GET")])],
        either(PROTOCOL_ERROR),
    ),
    "8_3_1_empty_path": (malformed(_M, _S, _A, (b":path", b"")), stream(1, PROTOCOL_ERROR)),
    "8_3_1_missing_method": (malformed(_S, _A, _P), stream(1, PROTOCOL_ERROR)),
    "8_3_1_missing_scheme": (malformed(_M, _A, _P), stream(1, PROTOCOL_ERROR)),
    "8_3_1_missing_path": (malformed(_M, _S, _A), stream(1, PROTOCOL_ERROR)),
    "8_3_1_duplicated_method": (malformed(_M, _M, _S, _A, _P), stream(1, PROTOCOL_ERROR)),
    "8_3_1_duplicated_scheme": (malformed(_M, _S, _S, _A, _P), stream(1, PROTOCOL_ERROR)),
    "8_3_1_duplicated_path": (malformed(_M, _S, _A, _P, _P), stream(1, PROTOCOL_ERROR)),
    # -- 8.1.1 malformed messages: Content-Length against DATA ---------------------------------
    "8_1_1_content_length_above_the_data": (
        lambda c: [
            c.headers(1, request(b"POST", b"/", (b"content-length", b"5")), end_stream=False),
            c.data(1, b"abc", end_stream=True),
        ],
        stream(1, PROTOCOL_ERROR),
    ),
    "8_1_1_content_length_below_the_data": (
        lambda c: [
            c.headers(1, request(b"POST", b"/", (b"content-length", b"1")), end_stream=False),
            c.data(1, b"abc", end_stream=True),
        ],
        stream(1, PROTOCOL_ERROR),
    ),
    # -- 8.4 server push -----------------------------------------------------------------------
    "8_4_push_promise_from_a_client": (
        lambda c: [open_stream(c), c.raw(PUSH_PROMISE, END_HEADERS, 1, b"\0\0\0\x02")],
        conn(PROTOCOL_ERROR),
    ),
    # -- RFC 7541 HPACK ------------------------------------------------------------------------
    "hpack_2_3_3_index_past_the_tables": (hpack_case(b"\xc6"), conn(COMPRESSION_ERROR)),
    "hpack_6_1_index_0": (hpack_case(b"\x80"), conn(COMPRESSION_ERROR)),
    "hpack_4_2_table_size_update_over_the_setting": (
        lambda c: [c.headers(1, block=b"\x3f\xe2\x1f" + get_block(c))],
        conn(COMPRESSION_ERROR),
    ),
    "hpack_6_3_table_size_update_after_a_field": (hpack_case(b"\x20"), conn(COMPRESSION_ERROR)),
    "hpack_5_2_huffman_string_with_eos": (
        hpack_case(b"\x00\x01x\x84\xff\xff\xff\xff"),
        conn(COMPRESSION_ERROR),
    ),
    "hpack_5_2_huffman_padding_over_7_bits": (
        hpack_case(b"\x00\x01x\x82\x1f\xff"),
        conn(COMPRESSION_ERROR),
    ),
    "hpack_5_2_huffman_padding_of_zeros": (
        hpack_case(b"\x00\x01x\x81\x18"),
        conn(COMPRESSION_ERROR),
    ),
    "hpack_4_4_table_size_update_at_the_start_is_accepted": (
        lambda c: [_shrink_table(c), c.headers(1)][1:],
        OK,
    ),
}


def _shrink_table(c: RawClient) -> bytes:
    """The encoder opens its next block with a size update to 0 (and indexes nothing after)."""
    c.encoder.header_table_size = 0
    return b""


def _split_block(c: RawClient, block: bytes, pieces: int) -> list[bytes]:
    size = -(-len(block) // pieces)
    parts = [block[i : i + size] for i in range(0, len(block), size)]
    frames = [c.headers(1, block=parts[0], end_headers=False)]
    frames += [c.continuation(1, part, end_headers=False) for part in parts[1:-1]]
    frames.append(c.continuation(1, parts[-1]))
    return frames


@pytest.mark.parametrize(("build", "expect"), list(CASES.values()), ids=list(CASES))
def test_conformance_case(build: Build, expect: Expect) -> None:
    side = server()
    events = side.send(*build(side.client))
    frames = side.frames()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    resets = [f for f in frames if isinstance(f, RstStreamFrame)]
    ended = [e for e in events if isinstance(e, ConnectionEnded)]
    if expect.kind == "conn" or (expect.kind == "either" and goaways):
        assert [g.error_code for g in goaways] == [expect.code], frames
        assert ended
        assert side.proto.ended
        return
    if expect.kind == "stream" or (expect.kind == "either" and resets):
        assert [(r.stream_id, r.error_code) for r in resets][-1:] == [
            (expect.stream_id or resets[-1].stream_id, expect.code)
        ], frames
    else:
        assert expect.kind == "ok", f"expected {expect}, got {frames}"
        assert not resets, frames
    assert not goaways, frames
    assert not ended
    # The connection (and HPACK) still work: a new request is decoded as sent.
    opened = side.send(side.client.headers(NEXT, request(b"GET", b"/next")))
    assert [(e.stream_id, e.head.target) for e in opened if isinstance(e, StreamOpened)] == [
        (NEXT, b"/next")
    ]


def test_3_5_ping_before_settings_is_answered_after_the_server_settings() -> None:
    """RFC 9113 section 3.4: the server's SETTINGS is the first frame it sends."""
    side = server(raw_preface=False)
    side.send(side.client.preface(), RawClient.ping(b"abcdefgh"))
    frames = side.frames()
    assert type(frames[0]).__name__ == "SettingsFrame"
    assert "ACK" not in frames[0].flags


def test_3_5_invalid_preface_is_a_connection_error() -> None:
    """RFC 9113 section 3.4: a preface that is not the client preface ends the connection."""
    side = server(raw_preface=False)
    events = side.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + RawClient.settings())
    assert any(isinstance(e, ConnectionEnded) for e in events)
    assert side.proto.ended


def test_6_5_3_settings_are_acknowledged_once_each() -> None:
    """RFC 9113 section 6.5.3: every SETTINGS frame gets one SETTINGS ACK."""
    side = server()
    side.send(RawClient.settings(MAX_CONCURRENT_STREAMS=5), RawClient.settings(ENABLE_PUSH=0))
    acks = [f for f in side.frames() if type(f).__name__ == "SettingsFrame" and "ACK" in f.flags]
    assert len(acks) == 2


def test_6_7_ping_is_answered_with_the_same_payload() -> None:
    """RFC 9113 section 6.7: a PING gets a PING ACK with an identical payload."""
    side = server()
    side.send(RawClient.ping(b"h2spec!!"))
    pings = [f for f in side.frames() if type(f).__name__ == "PingFrame"]
    assert [(p.opaque_data, "ACK" in p.flags) for p in pings] == [(b"h2spec!!", True)]


def test_6_8_client_goaway_ends_the_connection_without_error() -> None:
    """RFC 9113 section 6.8: after the client's GOAWAY, the connection ends (not calm)."""
    side = server()
    events = side.send(RawClient.goaway(0, code=0xFF))
    assert [(type(e), e.calm) for e in events if isinstance(e, ConnectionEnded)] == [
        (ConnectionEnded, False)
    ]


def test_6_9_2_initial_window_size_change_applies_to_open_streams() -> None:
    """RFC 9113 section 6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE changes every stream's window,
    possibly below zero (then the stream may send nothing until WINDOW_UPDATEs bring it back)."""
    side = server()
    side.send(side.client.headers(1))
    assert (
        side.proto.window(1) == 65_535
    )  # the default initial window (frames are cut by send_data)
    side.send(RawClient.settings(INITIAL_WINDOW_SIZE=100))
    assert side.proto.window(1) == 100
    side.send(RawClient.settings(INITIAL_WINDOW_SIZE=0))
    assert side.proto.window(1) <= 0
    side.send(RawClient.window_update(1, 50))
    assert side.proto.window(1) == 50


def test_5_1_2_concurrency_limit_is_advertised() -> None:
    """RFC 9113 section 5.1.2 / 6.5.2: the server announces SETTINGS_MAX_CONCURRENT_STREAMS."""
    side = server(raw_preface=False, max_concurrent_streams=7)
    side.send(side.client.preface())
    first = side.frames()[0]
    assert type(first).__name__ == "SettingsFrame"
    assert first.settings[0x3] == 7
    assert first.settings[0x2] == 0  # no server push
