"""HTTP/2 test clients: raw frames (hyperframe + hpack) and a well-behaved h2 client over trio.

Two ways to be the peer of the server's HTTP/2:

* :class:`RawClient` builds frames byte by byte, including the ones a well-behaved client never
  sends (the conformance cases), with its own HPACK encoder so that the server's decoder stays in
  step; :func:`parse_frames` reads what the server wrote back.
* :class:`H2Client` drives ``h2.connection.H2Connection(client_side=True)`` over a trio stream,
  for whole requests against :class:`trioserve._h2._connection.H2Connection`
  (:func:`h2_connection` runs one over an in-memory stream pair).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import trio
import trio.testing
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from trioserve import Config
from trioserve._h2._connection import H2Connection
from trioserve._h2._protocol import PREFACE, Event, H2Protocol
from trioserve._http._scope import connection_info
from trioserve._http._state import ServerState
from trioserve._transport import Transport

from ._helpers import run_in_scope

Headers = Sequence[tuple[bytes, bytes]]

# The request every test sends unless it says otherwise.
GET: Headers = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.test"),
    (b":path", b"/"),
]


def request(method: bytes = b"GET", path: bytes = b"/", *extra: tuple[bytes, bytes]) -> Headers:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", path),
        *extra,
    ]


def parse_frames(data: bytes) -> list[Frame]:
    """The frames in ``data`` (whole frames only: the server writes whole frames)."""
    frames: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


# -- raw frames --------------------------------------------------------------------------------


class RawClient:
    """Builds client frames by hand (HPACK state of its own, in step with the server's)."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()

    def preface(self, **settings: int) -> bytes:
        frame = SettingsFrame(0)
        for key, value in settings.items():
            frame.settings[getattr(h2.settings.SettingCodes, key)] = value
        return PREFACE + frame.serialize()

    def block(self, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        return bytes(self.encoder.encode(list(headers)))

    def headers(
        self,
        stream_id: int,
        headers: Headers = GET,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        block: bytes | None = None,
        **fields: Any,
    ) -> bytes:
        frame = HeadersFrame(stream_id)
        frame.data = self.block(headers) if block is None else block
        flags = {"END_STREAM"} if end_stream else set()
        if end_headers:
            flags.add("END_HEADERS")
        for key, value in fields.items():
            setattr(frame, key, value)
            if key in ("depends_on", "stream_weight", "exclusive"):
                flags.add("PRIORITY")
        frame.flags = flags  # type: ignore[assignment]
        return bytes(frame.serialize())

    @staticmethod
    def continuation(stream_id: int, data: bytes, *, end_headers: bool = True) -> bytes:
        frame = ContinuationFrame(stream_id, data)
        if end_headers:
            frame.flags.add("END_HEADERS")
        return bytes(frame.serialize())

    @staticmethod
    def data(stream_id: int, data: bytes = b"", *, end_stream: bool = False) -> bytes:
        frame = DataFrame(stream_id, data)
        if end_stream:
            frame.flags.add("END_STREAM")
        return bytes(frame.serialize())

    @staticmethod
    def rst(stream_id: int, code: int = 8) -> bytes:  # 8: CANCEL
        return bytes(RstStreamFrame(stream_id, code).serialize())

    @staticmethod
    def ping(payload: bytes = b"12345678", *, ack: bool = False) -> bytes:
        frame = PingFrame(0, payload)
        if ack:
            frame.flags.add("ACK")
        return bytes(frame.serialize())

    @staticmethod
    def settings(*, ack: bool = False, **settings: int) -> bytes:
        frame = SettingsFrame(0)
        if ack:
            frame.flags.add("ACK")
        for key, value in settings.items():
            frame.settings[getattr(h2.settings.SettingCodes, key)] = value
        return bytes(frame.serialize())

    @staticmethod
    def priority(stream_id: int, depends_on: int = 0) -> bytes:
        return bytes(PriorityFrame(stream_id, depends_on, 15).serialize())

    @staticmethod
    def window_update(stream_id: int, increment: int) -> bytes:
        return bytes(WindowUpdateFrame(stream_id, increment).serialize())

    @staticmethod
    def goaway(last_stream_id: int = 0, code: int = 0) -> bytes:
        return bytes(GoAwayFrame(0, last_stream_id, code).serialize())

    @staticmethod
    def raw(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
        """Any frame, valid or not: a 9-byte header and ``payload``."""
        return (
            len(payload).to_bytes(3, "big")
            + bytes([kind, flags])
            + stream_id.to_bytes(4, "big")
            + payload
        )


class FakeClock:
    """The clock H2Protocol reads; tests move it by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ServerSide:
    """An H2Protocol fed by a :class:`RawClient`: what each send produced, events and frames."""

    proto: H2Protocol
    clock: FakeClock
    client: RawClient = field(default_factory=RawClient)
    events: list[Event] = field(default_factory=list)

    def send(self, *chunks: bytes) -> list[Event]:
        """Feed the server; returns the events of these bytes (also kept in ``events``)."""
        got: list[Event] = []
        for chunk in chunks:
            got.extend(self.proto.receive_data(chunk))
        self.events.extend(got)
        return got

    def frames(self) -> list[Frame]:
        """The frames the server has queued since the last call."""
        return parse_frames(self.proto.data_to_send())


def server(raw_preface: bool = True, **kwargs: Any) -> ServerSide:
    """An H2Protocol past the preface and SETTINGS exchange (its own frames drained)."""
    clock = FakeClock()
    side = ServerSide(H2Protocol(clock=clock, **kwargs), clock)
    if raw_preface:
        side.send(side.client.preface(), RawClient.settings(ack=True))
        side.frames()
    return side


# -- a well-behaved client over trio -----------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reset: int | None = None  # the RST_STREAM error code, when the server reset the stream

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def client_config() -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )


class H2Client:
    """An h2 client over a trio stream: events are kept per stream as they arrive.

    ``auto_ack_data=False`` leaves the client's windows shut (backpressure tests credit by hand
    with :meth:`ack`).
    """

    def __init__(self, stream: trio.abc.Stream, *, auto_ack_data: bool = True) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(config=client_config())
        self.auto_ack_data = auto_ack_data
        self.events: list[h2.events.Event] = []
        self.closed = False
        # A reader task and a test's own sends may write at once: one writer at a time.
        self._write_lock = trio.StrictFIFOLock()
        self._eof_sent = False

    async def start(self, **settings: int) -> None:
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(
                {getattr(h2.settings.SettingCodes, k): v for k, v in settings.items()}
            )
        await self.flush()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self._send(data)

    async def send_raw(self, data: bytes) -> None:
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        # No extra checkpoint while nobody else writes (acquire_nowait): the tests' timing
        # stays what it is without the lock.
        if self._write_lock.locked():
            await self._write_lock.acquire()
        else:
            self._write_lock.acquire_nowait()
        try:
            if not self._eof_sent:
                await self.stream.send_all(data)
        finally:
            self._write_lock.release()

    async def send_eof(self) -> None:
        """Stop writing (the server reads EOF); frames queued afterwards are dropped."""
        async with self._write_lock:
            if not self._eof_sent:
                self._eof_sent = True
                assert isinstance(self.stream, trio.abc.HalfCloseableStream)
                await self.stream.send_eof()

    async def read_all(self) -> None:
        """Read until EOF, whatever the server does: once it has stopped reading, stop writing
        (window updates and acks then go nowhere) and read on what it sent before."""
        while not self.closed:
            try:
                await self.receive()
            except trio.BrokenResourceError:
                self._eof_sent = True

    async def request(
        self, headers: Headers = GET, body: bytes | None = None, *, end: bool = True
    ) -> int:
        """Open a stream; returns its id."""
        stream_id: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        await self.flush()
        return stream_id

    async def receive(self) -> list[h2.events.Event]:
        """Read once; the events it brought (``[]`` and ``closed`` at EOF)."""
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        if any(isinstance(e, h2.events.ConnectionTerminated) and not e.error_code for e in events):
            # h2 closes its state machine on any GOAWAY, so it could not receive the responses
            # of the streams a graceful GOAWAY lets finish (RFC 9113 section 6.8): reopen it,
            # as browsers do.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        for event in events:
            if isinstance(event, h2.events.DataReceived) and self.auto_ack_data:
                assert event.stream_id is not None
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
        self.events.extend(events)
        await self.flush()
        return events

    async def ack(self, stream_id: int, length: int) -> None:
        """Credit ``length`` received bytes of ``stream_id`` (auto_ack_data=False)."""
        self.conn.acknowledge_received_data(length, stream_id)
        await self.flush()

    def stream_events(self, stream_id: int) -> list[h2.events.Event]:
        return [e for e in self.events if getattr(e, "stream_id", None) == stream_id]

    def finished(self, stream_id: int) -> bool:
        return any(
            isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
            for e in self.stream_events(stream_id)
        )

    async def wait_for(self, predicate: Any) -> None:
        while not predicate():
            await self.receive()
            if self.closed:
                assert predicate(), "the server closed the connection"

    async def response(self, stream_id: int) -> Response:
        """Read until ``stream_id`` ends or is reset; its response."""
        await self.wait_for(lambda: self.finished(stream_id))
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = b""
        reset: int | None = None
        for event in self.stream_events(stream_id):
            if isinstance(event, h2.events.ResponseReceived):
                fields = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
                status = int(dict(fields)[b":status"])
                headers = [f for f in fields if not f[0].startswith(b":")]
            elif isinstance(event, h2.events.DataReceived):
                body += event.data or b""
            elif isinstance(event, h2.events.StreamReset):
                reset = int(event.error_code or 0)
        return Response(status, headers, body, reset)

    async def get(self, headers: Headers = GET, body: bytes | None = None) -> Response:
        return await self.response(await self.request(headers, body))

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        for event in self.events:
            if isinstance(event, h2.events.ConnectionTerminated):
                return event
        return None

    async def read_until_eof(self) -> None:
        while not self.closed:
            await self.receive()


@asynccontextmanager
async def h2_connection(
    app: Any,
    config: Config | None = None,
    *,
    lockstep: bool = False,
    auto_ack_data: bool = True,
    settings: dict[str, int] | None = None,
    idle_timer: bool = False,
) -> AsyncIterator[tuple[H2Client, H2Connection, ServerState]]:
    """Run one H2Connection over an in-memory stream pair with a started :class:`H2Client`.

    Like conftest's ``connection()`` for HTTP/1.1; ``lockstep=True``: no buffer between the two
    ends, so a client that does not read stalls the server's writes. ``idle_timer=True``: the
    server's keep-alive timer runs, as in a running server (else the connection keeps its own
    idle deadline).
    """
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_stream, server_stream = pair()
    state = ServerState(app, config or Config(access_log=False))
    info = connection_info(state, ("127.0.0.1", 5000), ("127.0.0.1", 8000), "http", None)
    conn = H2Connection(Transport(server_stream, state.config.write_timeout), state, info)
    client = H2Client(client_stream, auto_ack_data=auto_ack_data)
    async with trio.open_nursery() as nursery:
        timing = trio.CancelScope()
        if idle_timer:
            nursery.start_soon(run_in_scope, timing, state.idle_timer.run)
        nursery.start_soon(conn.run)
        if not lockstep:
            await client.start(**(settings or {}))
        yield client, conn, state
        await client_stream.aclose()
        timing.cancel()
