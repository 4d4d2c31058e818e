"""Sans-IO HTTP/2 for one server connection, on top of h2, with the defences h2 leaves to us.

Theory of operation
-------------------
:class:`H2Protocol` wraps h2's server connection (:class:`ServerConnection`, its subclass in
``_server_connection.py``; this package is the only importer of h2): bytes go in through
:meth:`H2Protocol.receive_data`, neutral frozen events come out, and
:meth:`H2Protocol.data_to_send` returns the bytes to write. No I/O, and the clock is passed
in, so every defence is testable with bytes alone.

Before h2 sees any byte, a small frame scanner reads the 9-byte frame headers and enforces what
h2 does not (the 2019 and 2023-2025 HTTP/2 denial-of-service families):

* CONTINUATION flood (CVE-2024-27316): a header block (HEADERS plus its CONTINUATIONs) is
  bounded in bytes (``max_header_block``) and in frames (:data:`MAX_HEADER_BLOCK_FRAMES`);
* Rapid Reset (CVE-2023-44487) and MadeYouReset (CVE-2025-8671): resets, whether the client
  sent them or provoked ours, are counted per connection over :data:`FLOOD_WINDOW` seconds;
* control-frame floods (CVE-2019-9512/9515/9518 and friends): PING, SETTINGS, PRIORITY and empty
  DATA frames, and separately WINDOW_UPDATE frames, are counted over the same window.

Past a budget the connection is ended with GOAWAY ``ENHANCE_YOUR_CALM``
(:class:`ConnectionEnded` with ``calm=True``).

Where h2 would end the whole connection for one stream's fault, the stream alone is reset:
a stream over ``SETTINGS_MAX_CONCURRENT_STREAMS`` gets ``RST_STREAM REFUSED_STREAM`` (RFC 9113
section 5.1.2), and a malformed request (bad pseudo-headers, uppercase or connection-specific
header names, a body that contradicts its Content-Length) ``RST_STREAM PROTOCOL_ERROR``
(section 8.1.1). Both still decode the header block, so that the HPACK state stays in step with
the client's. A graceful GOAWAY leaves the streams in flight able to answer, and refuses later
ones with REFUSED_STREAM (section 6.8).

For speed, h2 keeps the states and the windows but not the header fields' checks or the
frames we send: a request's header block is checked once by ``_fields.py`` (h2's validators
are off in ``_CONFIG``), and response HEADERS and DATA frames are written here and in
:class:`ServerConnection` (``header_frames``, ``account_data``: h2's state machines and windows
kept in step), a body's bytes sliced, not copied, until :meth:`H2Protocol.data_to_send` joins
them.

Flow control is tied to consumption: the connection window is credited as DATA arrives (each
stream's buffer is bounded by its own window, so the total stays bounded), a stream's window
only as the app reads its body (:meth:`H2Protocol.consumed`): an app that does not read its body
stalls its own stream only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from hyperframe.frame import GoAwayFrame

from .._http._events import RequestHead
from ._compact import CompactSettings
from ._events import (
    BodyData,
    ConnectionEnded,
    Event,
    StreamOpened,
    StreamReset,
    WindowOpened,
)
from ._fields import add_fields
from ._scanner import (
    DEFAULT_LIMITS,
    FLOOD_WINDOW,
    MAX_HEADER_BLOCK_FRAMES,
    FloodLimits,
    FrameScanner,
)
from ._server_connection import DATA, FRAME_HEADER, ServerConnection

__all__ = [
    "FLOOD_WINDOW",
    "MAX_HEADER_BLOCK_FRAMES",
    "BodyData",
    "ConnectionEnded",
    "Event",
    "FloodLimits",
    "H2Protocol",
    "StreamOpened",
    "StreamReset",
    "WindowOpened",
]

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# How much of a stream's body is credited to the client ahead of the app reading it: 64 KiB
# (the RFC's default window, less one byte) keeps a fast upload flowing and bounds what one
# stream can make us buffer; 100 streams at once hold at most 6.4 MiB.
STREAM_WINDOW: Final = 65_535
# The connection window is credited back in steps of this size, not per frame.
_CONNECTION_CREDIT_STEP: Final = 32 * 1024
_END_STREAM: Final = 0x1


# One configuration for every connection (h2 only reads it): server side, bytes for header
# names and values (no decoding). h2's checks and rewrites of header fields are off: a received
# block is checked once by ServerConnection (``_fields.py``), cookies are joined in
# H2Protocol._request, and what we send is ours (built and checked by the request cycle).
_CONFIG: Final = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


class H2Protocol:
    """The HTTP/2 state of one server connection: bytes in, events out, bytes to write.

    Args:
        clock: Seconds, monotonic (for the flood windows).
        max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS.
        max_header_block: Bytes allowed in one header block (and SETTINGS_MAX_HEADER_LIST_SIZE).
        max_headers: Header fields allowed in one request (more: 431).
        limits: The flood budgets.
    """

    __slots__ = (
        "_clock",
        "_conn",
        "_ended",
        "_goaway",
        "_goaway_last",
        "_limits",
        "_max_header_block",
        "_max_headers",
        "_out",
        "_reported_end",
        "_scanner",
        "_uncredited",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_concurrent_streams: int = 100,
        max_header_block: int = 64 * 1024,
        max_headers: int | None = 100,
        limits: FloodLimits = DEFAULT_LIMITS,
    ) -> None:
        self._conn = ServerConnection(config=_CONFIG)
        self._conn.local_settings = CompactSettings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_block,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                # RFC 8441: websockets over HTTP/2 (an extended CONNECT per websocket).
                h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self._conn.initiate_connection()
        self._conn.compact()
        self._clock = clock
        self._limits = limits
        self._max_header_block = max_header_block
        self._max_headers = max_headers
        self._scanner = FrameScanner(clock, limits, max_header_block, skip=len(PREFACE))
        self._uncredited = 0
        self._ended = False
        # The StreamEnded event h2 attached to the last request or DATA event (reported there).
        self._reported_end: h2.events.StreamEnded | None = None
        # The last stream named by our graceful GOAWAY (None: not said).
        self._goaway_last: int | None = None
        # What to write, in order: h2's frames (taken whenever we add ours), and the frames we
        # write ourselves (HEADERS; DATA, with the body's bytes as they came).
        self._out: list[bytes | bytearray | memoryview] = []
        # Our graceful GOAWAY, written after everything else queued with it.
        self._goaway = b""

    # -- receiving ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the client; returns what they mean."""
        if self._ended:
            return []
        verdict = self._scanner.scan(data)
        if verdict is not None:
            code, reason = verdict
            self._ended = True
            self._conn.close_connection(code)
            return [ConnectionEnded(reason, calm=code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)]
        conn = self._conn
        before = conn.provoked
        conn.receiving = True
        try:
            h2_events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._ended = True
            return [ConnectionEnded(f"protocol error: {exc}")]
        finally:
            conn.receiving = False
        events: list[Event] = []
        for event in h2_events:
            self._translate(event, events)
        # Fixed: counting StreamReset events missed the resets h2 makes without one (DATA on a
        # stream we had reset: RST_STREAM STREAM_CLOSED), so MadeYouReset went uncounted there.
        provoked = conn.provoked - before
        if provoked and self._scanner.count("resets", provoked, self._limits.resets):
            events.append(self._end_calm("too many streams reset"))
        return events

    def _translate(self, event: h2.events.Event, out: list[Event]) -> None:
        kind = type(event)
        if kind is h2.events.RequestReceived:
            assert isinstance(event, h2.events.RequestReceived)
            self._reported_end = event.stream_ended
            assert event.stream_id is not None
            if self._goaway_last is not None and event.stream_id > self._goaway_last:
                # Opened after our GOAWAY: not processed; the client may retry it elsewhere.
                self._conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            out.append(self._request(event))
        elif kind is h2.events.DataReceived:
            assert isinstance(event, h2.events.DataReceived)
            assert event.stream_id is not None
            self._reported_end = event.stream_ended
            self._credit_connection(event.flow_controlled_length or 0)
            out.append(BodyData(event.stream_id, event.data or b"", event.stream_ended is not None))
        elif kind is h2.events.StreamEnded:
            assert isinstance(event, h2.events.StreamEnded)
            assert event.stream_id is not None
            # An END_STREAM on HEADERS or DATA was reported with them (h2 hangs this very event
            # on theirs); this one ends a body with trailers. Fixed: it used to be reported
            # twice (a second, empty BodyData with end_stream after every request).
            if event is not self._reported_end:
                out.append(BodyData(event.stream_id, b"", True))
        elif kind is h2.events.StreamReset:
            assert isinstance(event, h2.events.StreamReset)
            assert event.stream_id is not None
            out.append(StreamReset(event.stream_id))
        elif kind is h2.events.WindowUpdated:
            assert isinstance(event, h2.events.WindowUpdated)
            out.append(WindowOpened(event.stream_id or 0))
        elif kind is h2.events.RemoteSettingsChanged:
            # A new initial window may open every stream's window.
            out.append(WindowOpened(0))
        elif kind is h2.events.ConnectionTerminated:
            self._ended = True
            out.append(ConnectionEnded("the client said GOAWAY", by_client=True))
        elif kind is h2.events.TrailersReceived:
            pass  # request trailers are not passed to ASGI apps; the StreamEnded follows

    def _request(self, event: h2.events.RequestReceived) -> StreamOpened:
        assert event.stream_id is not None
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        host: bytes | None = None
        count = 0
        cookies: list[bytes] = []
        for name, value in event.headers or ():
            if name[:1] == b":":
                pseudo[name] = value
                continue
            count += 1
            if name == b"host":
                host = value
            elif name == b"cookie":
                cookies.append(value)
                continue
            headers.append((name, value))
        if cookies:
            # A client may split Cookie into several fields (RFC 9113 section 8.2.3): one field
            # again, for the app (counted as the client sent them).
            headers.append((b"cookie", b"; ".join(cookies)))
        authority = pseudo.get(b":authority")
        if host is None and authority is not None:
            # ASGI apps (and the proxy-header rules) read the authority from Host.
            headers.insert(0, (b"host", authority))
        method = pseudo.get(b":method", b"")
        head = RequestHead(method, pseudo.get(b":path", b"/"), "2", headers)
        ended = event.stream_ended is not None
        refusal: tuple[int, str] | None = None
        protocol = pseudo.get(b":protocol")
        websocket = method == b"CONNECT" and protocol is not None
        if self._max_headers is not None and count > self._max_headers:
            refusal = (431, "Too many request header fields.")
        elif method == b"CONNECT" and protocol is None:
            refusal = (405, "CONNECT is not supported: this is not a proxy.")
        elif websocket and protocol != b"websocket":
            refusal = (501, "Only the websocket protocol is supported by extended CONNECT.")
        return StreamOpened(event.stream_id, head, ended, refusal, websocket)

    def _credit_connection(self, length: int) -> None:
        self._uncredited += length
        if self._uncredited >= _CONNECTION_CREDIT_STEP:
            self._conn.increment_flow_control_window(self._uncredited)
            self._uncredited = 0

    def consumed(self, stream_id: int, length: int) -> None:
        """The app has read ``length`` body bytes of ``stream_id``: credit its window."""
        if length and not self._ended:
            # A stream that has ended meanwhile has no window to open.
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._conn.increment_flow_control_window(length, stream_id)

    def _end_calm(self, reason: str) -> ConnectionEnded:
        self._ended = True
        self._conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
        return ConnectionEnded(reason, calm=True)

    # -- sending -----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The bytes to write now (frames queued by everything above)."""
        return b"".join(self.pieces_to_send())

    def pieces_to_send(self) -> list[bytes | bytearray | memoryview]:
        """:meth:`data_to_send` in the pieces it is made of (frame headers, slices of bodies),
        for a gathering write: a large body is never copied into one buffer."""
        out = self._out
        if not out and not self._goaway:
            data = self._conn.take_data_to_send()
            return [data] if data else []
        self._take_h2_frames()
        if self._goaway:
            out.append(self._goaway)
            self._goaway = b""
        self._out = []
        return out

    def _take_h2_frames(self) -> None:
        """Move h2's queued frames to ours, before we add one (keeping the order)."""
        pending = self._conn.take_data_to_send()
        if pending:
            self._out.append(pending)

    def send_headers(
        self,
        stream_id: int,
        status: int,
        headers: Iterable[Sequence[bytes]],
        *,
        end_stream: bool,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Queue the response head of ``stream_id``.

        Raises:
            ValueError: the status or a header is invalid (the app's fault).
        """
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"invalid status for a final response: {status!r}")
        fields: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status)]
        add_fields(fields, headers)
        fields.extend(extra)
        try:
            frames = self._conn.header_frames(stream_id, fields, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise ValueError(f"invalid response head: {exc}") from exc
        self._take_h2_frames()
        self._out.append(frames)

    def send_trailers(self, stream_id: int, headers: Iterable[Sequence[bytes]]) -> None:
        """Queue trailer fields that end ``stream_id``'s response (a HEADERS frame with
        END_STREAM).

        Raises:
            ValueError: a pseudo-header or an invalid field (the app's fault).
        """
        fields: list[tuple[bytes, bytes]] = []
        add_fields(fields, headers)
        try:
            frames = self._conn.header_frames(stream_id, fields, end_stream=True)
        except h2.exceptions.ProtocolError as exc:
            raise ValueError(f"invalid response trailers: {exc}") from exc
        self._take_h2_frames()
        self._out.append(frames)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, *, end_stream: bool
    ) -> int:
        """Queue as much of ``data`` as the windows allow, in frames of the largest size the
        client accepts; END_STREAM on the last frame when ``end_stream`` and all of it fits.

        Returns:
            How many bytes were queued (0 when a window is shut).
        """
        conn = self._conn
        size = len(data)
        try:
            allowed = min(conn.local_flow_control_window(stream_id), size)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            return 0
        if allowed <= 0:
            if size:
                return 0
            # Fixed (review): a client's smaller SETTINGS_INITIAL_WINDOW_SIZE can leave a window
            # below zero (RFC 9113 section 6.9.2); the empty END_STREAM frame, not flow
            # controlled, was then accounted as a negative size (the windows grew) and its
            # frame header failed to pack.
            allowed = 0
        end = end_stream and allowed == size
        conn.account_data(stream_id, allowed, end_stream=end)
        if type(data) is not bytes and not memoryview(data).readonly:
            # Queued by reference until written: an app may reuse its buffer once send() returns
            # (or was cancelled), so a mutable body is copied, the part queued now only.
            # Fixed (review): H2Stream passes a view, and a view of a bytearray went uncopied.
            data = bytes(memoryview(data)[:allowed])
            size = allowed
        # The frames, written here: a 9-byte header and a slice of the body (no copy until
        # data_to_send() joins them), instead of h2's frame objects (four copies of a body).
        self._take_h2_frames()
        out = self._out
        frame_size = conn.max_outbound_frame_size
        view = memoryview(data) if allowed > frame_size else data
        sent = 0
        while True:
            length = min(frame_size, allowed - sent)
            last = sent + length >= allowed
            flags = _END_STREAM if end and last else 0
            out.append(FRAME_HEADER.pack(length >> 16, length & 0xFFFF, DATA, flags, stream_id))
            if length:
                out.append(view[sent : sent + length] if length < size else data)
            sent += length
            if last:
                return sent

    def idle(self) -> None:
        """No stream is being served: forget h2's streams that have closed (idle memory)."""
        if not self._ended:
            self._conn.forget_closed_streams()

    def window(self, stream_id: int) -> int:
        """How many body bytes ``stream_id`` may send now (stream and connection windows)."""
        try:
            return self._conn.local_flow_control_window(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
            return 0

    def stream_open(self, stream_id: int) -> bool:
        """Whether ``stream_id`` can still carry our response."""
        if self._ended:
            return False  # h2's connection is closed: nothing more can be sent
        stream = self._conn.streams.get(stream_id)
        return stream is not None and stream.open and not stream.closed

    def response_ended(self, stream_id: int) -> bool:
        """Whether ``stream_id``'s response is complete (END_STREAM sent) while the client's
        side is still open."""
        stream = self._conn.streams.get(stream_id)
        return (
            stream is not None
            and stream.state_machine.state is h2.stream.StreamState.HALF_CLOSED_LOCAL
        )

    def reset(self, stream_id: int, *, code: int = h2.errors.ErrorCodes.INTERNAL_ERROR) -> None:
        """Reset ``stream_id`` (if it is still open)."""
        if self.stream_open(stream_id):
            self._conn.reset_stream(stream_id, code)

    def goaway(self) -> None:
        """Queue a graceful GOAWAY (no error) naming the last stream the client opened.

        Written as a frame of our own rather than through h2's ``close_connection``, which
        would close h2's connection state and forbid the responses of the streams still in
        flight. Streams the client opens past it are refused (``REFUSED_STREAM``: safe to retry
        elsewhere).
        """
        if self._ended or self._goaway_last is not None:
            return
        self._goaway_last = self._conn.highest_inbound_stream_id
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._goaway_last
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        self._goaway = frame.serialize()

    @property
    def highest_stream_id(self) -> int:
        """The highest stream the client has opened."""
        return self._conn.highest_inbound_stream_id

    @property
    def ended(self) -> bool:
        """Whether the connection is over (GOAWAY said or heard, or a fatal error)."""
        return self._ended
