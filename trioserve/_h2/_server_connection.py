"""h2's server connection, with the stream errors, counts and graceful GOAWAY we need.

Overrides private hooks of ``h2.connection.H2Connection`` (pinned by ``h2>=4.1,<5`` and by the
tests of each case in tests/test_h2_protocol.py and tests/test_h2_conformance.py), and uses its
internals where it writes frames itself (:meth:`ServerConnection.header_frames`,
:meth:`ServerConnection.account_data`: the same state-machine inputs and window arithmetic as
h2's ``send_headers`` and ``send_data``) or trims an idle connection
(:meth:`ServerConnection.compact`).
"""

from __future__ import annotations

import struct
from typing import Any, Final

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.stream
from hyperframe.frame import DataFrame, HeadersFrame, RstStreamFrame

from ._compact import ClosedStreams, CompactSettings, Dispatch, Entries
from ._fields import LiteralEncoder, request_fault, trailers_fault

__all__ = ["DATA", "FRAME_HEADER", "ServerConnection"]


class ServerConnection(h2.connection.H2Connection):
    """h2's connection, with two of its connection errors turned into stream errors.

    Overrides one private hook (pinned by ``h2>=4.1,<5`` and by the tests of both cases).
    """

    refused: int = 0
    malformed: int = 0
    #: RST_STREAM frames queued while receiving: every reset the client provoked (a refused or
    #: malformed stream, DATA or HEADERS on a closed stream, a window overflow...), whether or
    #: not h2 reports it with an event (a frame on a stream we reset already gets none).
    provoked: int = 0
    receiving: bool = False

    def compact(self) -> None:
        """Make an idle connection small (once the local settings are set, before any frame).

        The remote settings, the frame dispatch table, the record of closed streams and the
        HPACK decoder's dynamic table give way to the smaller stand-ins of ``_compact.py``;
        hpack's encoder (a table, a deque, a Huffman coder) to our :class:`LiteralEncoder`
        (see ``_fields.py``).
        """
        self.remote_settings = CompactSettings(client=True)
        self.encoder = LiteralEncoder()  # type: ignore[assignment]
        self.decoder.header_table.dynamic_entries = Entries()  # type: ignore[assignment]
        self._frame_dispatch_table = Dispatch(self, self._frame_dispatch_table)  # type: ignore[assignment]
        self._closed_streams = ClosedStreams(self._closed_streams._size_limit)  # type: ignore[attr-defined]

    def forget_closed_streams(self) -> None:
        """Drop the streams that have closed (h2 does so only when the next one opens: an idle
        connection kept its last stream, about 700 bytes)."""
        self._open_streams(1)  # the client's streams (odd); deletes every closed one
        if not self.streams:
            self.streams = {}  # a dict that held streams keeps its larger table

    def header_frames(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], *, end_stream: bool
    ) -> bytes:
        """What h2's ``send_headers`` does for a response head or trailers on ``stream_id``
        (its states, END_STREAM too), returning the frames: HEADERS, and CONTINUATIONs if the
        block is larger than a frame. ``fields`` are ready to send (see ``_add_fields`` in
        ``_protocol.py``); h2's checks and rewrites of them are off anyway (``_CONFIG``).

        Raises:
            h2.exceptions.ProtocolError: the stream is gone or cannot send this now.
        """
        stream = self._get_stream_by_id(stream_id)
        self.state_machine.process_input(h2.connection.ConnectionInputs.SEND_HEADERS)
        machine = stream.state_machine
        machine.process_input(h2.stream.StreamInputs.SEND_HEADERS)
        if end_stream:
            machine.process_input(h2.stream.StreamInputs.SEND_END_STREAM)
        block = self.encoder.encode(fields)
        size = len(block)
        frame_size = self.max_outbound_frame_size
        flags = _END_STREAM if end_stream else 0
        if size <= frame_size:
            head = FRAME_HEADER.pack(
                size >> 16, size & 0xFFFF, _HEADERS, flags | _END_HEADERS, stream_id
            )
            return head + block
        frames: list[bytes] = []
        kind = _HEADERS
        for start in range(0, size, frame_size):
            piece = block[start : start + frame_size]
            length = len(piece)
            if start + frame_size >= size:
                flags |= _END_HEADERS
            frames.append(FRAME_HEADER.pack(length >> 16, length & 0xFFFF, kind, flags, stream_id))
            frames.append(piece)
            kind, flags = _CONTINUATION, 0
        return b"".join(frames)

    def account_data(self, stream_id: int, size: int, *, end_stream: bool) -> None:
        """Everything h2's ``send_data`` does for ``size`` body bytes of ``stream_id`` but the
        frames (H2Protocol writes those itself, without copying the body): the connection's
        and the stream's states (END_STREAM too) and send windows. The caller has checked the
        windows (``local_flow_control_window``) and the frame sizes.
        """
        self.state_machine.process_input(h2.connection.ConnectionInputs.SEND_DATA)
        stream = self.streams[stream_id]
        machine = stream.state_machine
        machine.process_input(h2.stream.StreamInputs.SEND_DATA)
        if end_stream:
            machine.process_input(h2.stream.StreamInputs.SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size

    def take_data_to_send(self) -> bytearray:
        """The frames h2 has queued, handed over without a copy (``data_to_send`` makes one)."""
        data = self._data_to_send
        if data:
            self._data_to_send = bytearray()
        return data

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        if self.receiving:
            self.provoked += sum(type(frame) is RstStreamFrame for frame in frames)
        super()._prepare_for_sending(frames)

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Any], list[Any]]:
        try:
            return self._receive_headers(frame)
        except h2.exceptions.ProtocolError as exc:
            if _DECODING_ERROR in str(exc):
                # Fixed: RFC 9113 section 4.3 makes a field block that does not decode a
                # COMPRESSION_ERROR; h2 says PROTOCOL_ERROR.
                exc.error_code = h2.errors.ErrorCodes.COMPRESSION_ERROR
            raise

    def _receive_headers(self, frame: HeadersFrame) -> tuple[list[Any], list[Any]]:
        stream_id = frame.stream_id
        served = stream_id in self.streams  # trailers (else a new request)
        try:
            frames, events = super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            return self._refuse(frame)
        except h2.exceptions.ProtocolError as exc:
            if type(exc) is not h2.exceptions.ProtocolError or stream_id not in self.streams:
                raise
            if _DECODING_ERROR in str(exc):
                raise  # HPACK: the compression context is broken, a connection error
            # A malformed request (header validation): a stream error.
            return self._reset_malformed(stream_id, tell=served)
        # h2's own validation is off (our configuration): one pass of ours instead, at the
        # same point (after the stream's state has moved on, as h2 raises).
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                fault = request_fault(event.headers or ())
            elif isinstance(event, h2.events.TrailersReceived):
                fault = trailers_fault(event.headers or ())
            else:
                continue
            if fault is not None:
                return self._reset_malformed(stream_id, tell=served)
            break
        return frames, events

    def _refuse(self, frame: HeadersFrame) -> tuple[list[Any], list[Any]]:
        """Refuse a new stream alone (REFUSED_STREAM), keeping HPACK in step."""
        stream_id = frame.stream_id
        h2.connection._decode_headers(self.decoder, frame.data)
        self.highest_inbound_stream_id = max(self.highest_inbound_stream_id, stream_id)
        self._closed_streams[stream_id] = h2.stream.StreamClosedBy.SEND_RST_STREAM
        self.refused += 1
        return [_reset_frame(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)], []

    def _receive_data_frame(self, frame: DataFrame) -> tuple[list[Any], list[Any]]:
        try:
            return super()._receive_data_frame(frame)
        except h2.exceptions.InvalidBodyLengthError:
            # Fixed: a body that does not match its Content-Length is a malformed request, a
            # stream error (RFC 9113 section 8.1.1); h2 ended the whole connection. The
            # connection window the frame took is given back (nobody will read the data).
            if frame.flow_controlled_length:
                self.increment_flow_control_window(frame.flow_controlled_length)
            return self._reset_malformed(frame.stream_id, tell=True)

    def _reset_malformed(self, stream_id: int, *, tell: bool) -> tuple[list[Any], list[Any]]:
        """Reset a stream with PROTOCOL_ERROR; with ``tell``, say so to the stream being served
        (fixed: a malformed trailer block used to reset it silently, leaving its task waiting
        for the rest of a body until the body timeout)."""
        self.malformed += 1
        frames = self.streams[stream_id].reset_stream(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        if not tell:
            return frames, []
        event = h2.events.StreamReset(
            stream_id=stream_id, error_code=h2.errors.ErrorCodes.PROTOCOL_ERROR, remote_reset=False
        )
        return frames, [event]


# A frame's header (RFC 9113 section 4.1): the 24-bit length (as 8 + 16 bits), type, flags,
# stream id; and the types and flags we write.
FRAME_HEADER: Final = struct.Struct(">BHBBL")
DATA: Final = 0x0
_HEADERS: Final = 0x1
_CONTINUATION: Final = 0x9
_END_STREAM: Final = 0x1
_END_HEADERS: Final = 0x4

# How h2 words an HPACK decoding error (the only way to tell it from a malformed request).
_DECODING_ERROR: Final = "decoding header block"


def _reset_frame(stream_id: int, code: h2.errors.ErrorCodes) -> RstStreamFrame:
    frame = RstStreamFrame(stream_id)
    frame.error_code = code
    return frame
