"""The header-field checks and the HPACK encoder of ``trioserve/_h2/_fields.py``."""

from __future__ import annotations

import h2.settings
import hpack
import pytest

from trioserve._h2._compact import ClosedStreams, CompactSettings
from trioserve._h2._fields import LiteralEncoder, request_fault, trailers_fault

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
    (b"accept", b"*/*"),
]


def test_a_plain_request_is_well_formed() -> None:
    assert request_fault(GET) is None


@pytest.mark.parametrize(
    "block",
    [
        pytest.param([*GET, (b"te", b"trailers")], id="te-trailers"),
        pytest.param([*GET[:2], GET[3], (b"host", b"example.com")], id="host-alone"),
        pytest.param([*GET, (b"host", b"example.com")], id="host-equal-to-authority"),
        pytest.param([*GET, (b"x-empty", b"")], id="empty-value"),
        pytest.param(
            [(b":method", b"CONNECT"), (b":authority", b"example.com:443")], id="plain-connect"
        ),
        pytest.param(
            [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GET[1:]],
            id="extended-connect",
        ),
    ],
)
def test_well_formed_requests_pass(block: list[tuple[bytes, bytes]]) -> None:
    assert request_fault(block) is None


@pytest.mark.parametrize(
    "block",
    [
        pytest.param([*GET, (b"Accept", b"*/*")], id="uppercase-name"),
        pytest.param([*GET, (b"x y", b"1")], id="space-in-name"),
        pytest.param([*GET, (b"x:y", b"1")], id="colon-in-name"),
        pytest.param([*GET, (b"", b"1")], id="empty-name"),
        pytest.param([*GET, (b"x-a", b"1\r\nx: 2")], id="crlf-in-value"),
        pytest.param([*GET, (b"x-a", b"\x00")], id="nul-in-value"),
        pytest.param([*GET, (b"x-a", b" 1")], id="leading-space"),
        pytest.param([*GET, (b"x-a", b"1\t")], id="trailing-tab"),
        pytest.param([*GET, (b"connection", b"close")], id="connection"),
        pytest.param([*GET, (b"transfer-encoding", b"chunked")], id="transfer-encoding"),
        pytest.param([*GET, (b"te", b"gzip")], id="te-gzip"),
        pytest.param([*GET, (b":path", b"/x")], id="pseudo-after-regular"),
        pytest.param([*GET[:4], (b":path", b"/x")], id="duplicate-pseudo"),
        pytest.param([(b":status", b"200"), *GET], id="response-pseudo"),
        pytest.param([(b":custom", b"1"), *GET], id="unknown-pseudo"),
        pytest.param(GET[1:], id="no-method"),
        pytest.param([GET[0], GET[2], GET[3]], id="no-scheme"),
        pytest.param([GET[0], GET[1], GET[2]], id="no-path"),
        pytest.param([*GET[:3], (b":path", b"")], id="empty-path"),
        pytest.param([*GET[:2], GET[3]], id="no-authority-no-host"),
        pytest.param([*GET, (b"host", b"other.example")], id="host-differs"),
        pytest.param(
            [*GET[:2], GET[3], (b"host", b"a.example"), (b"host", b"a.example")], id="two-hosts"
        ),
        pytest.param([(b":protocol", b"websocket"), *GET], id="protocol-without-connect"),
        pytest.param(
            [(b":method", b"CONNECT"), (b":authority", b"a.example"), (b":path", b"/")],
            id="plain-connect-with-path",
        ),
        pytest.param([*GET[:3], (b":path", b"/\r\n")], id="crlf-in-pseudo-value"),
    ],
)
def test_malformed_requests_are_named(block: list[tuple[bytes, bytes]]) -> None:
    assert request_fault(block) is not None


def test_trailers_take_regular_fields_only() -> None:
    assert trailers_fault([(b"x-checksum", b"abc")]) is None
    assert trailers_fault([(b":path", b"/")]) is not None
    assert trailers_fault([(b"X-Checksum", b"abc")]) is not None
    assert trailers_fault([(b"connection", b"close")]) is not None


def test_encoded_fields_decode_to_the_same_fields() -> None:
    fields = [
        (b":status", b"200"),
        (b":status", b"299"),
        (b"content-type", b"text/plain"),
        (b"x-long", b"v" * 300),
        (b"x-" + b"n" * 200, b"1"),
        (b"set-cookie", b"a=1"),
        (b"x-empty", b""),
    ]
    encoder = LiteralEncoder()
    decoder = hpack.Decoder()
    for _ in range(2):
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    # Nothing was indexed: the decoder's dynamic table is still empty.
    assert len(decoder.header_table.dynamic_entries) == 0


def test_sensitive_fields_are_never_indexed() -> None:
    decoded = hpack.Decoder().decode(LiteralEncoder().encode([(b"set-cookie", b"a=1")]), raw=True)
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)


def test_a_table_size_change_is_signalled_in_the_next_block() -> None:
    encoder = LiteralEncoder()
    encoder.header_table_size = 0
    encoder.header_table_size = 1024
    block = encoder.encode([(b":status", b"200")])
    # Two dynamic table size updates (the smallest, then the final size), then the field.
    assert block == b"\x20" + b"\x3f\xe1\x07" + b"\x88"
    decoder = hpack.Decoder()
    decoder.decode(block)
    assert decoder.header_table_size == 1024
    assert encoder.encode([(b":status", b"200")]) == b"\x88"


def test_closed_streams_keep_only_the_newest_up_to_the_limit() -> None:
    closed = ClosedStreams(3)
    for stream_id in (1, 3, 5, 7, 9):
        closed[stream_id] = stream_id
    assert list(closed) == [5, 7, 9]
    assert 1 not in closed
    assert closed[9] == 9


def test_equal_settings_share_one_dict_and_an_acknowledged_change_does_not_leak() -> None:
    first, second = CompactSettings(client=True), CompactSettings(client=True)
    assert first._settings is second._settings  # shared while equal
    first[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 7
    first.acknowledge()
    assert first.max_concurrent_streams == 7
    with pytest.raises(KeyError):
        second[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]  # untouched


def test_closed_streams_past_the_limit_drop_the_oldest_eighth_at_once() -> None:
    # One by one, each deletion from a dict's front slowed every later one (a plain dict is
    # a poor FIFO); dropping a batch at once keeps a stream's close cheap past the limit.
    closed = ClosedStreams(16)
    for stream_id in range(1, 35, 2):  # 17 streams: one past the limit
        closed[stream_id] = stream_id
    # The one past the limit and two more (16 // 8) went together.
    assert list(closed) == list(range(7, 35, 2))
    closed[35] = 35
    assert len(closed) == 15  # no eviction until the limit is passed again
    assert 35 in closed
