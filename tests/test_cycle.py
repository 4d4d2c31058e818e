"""The request cycle's ASGI semantics, on a fake exchange (no h11, no sockets: pure trio).

What an app sees through ``receive()`` and ``send()``, and what the server does about it (500,
499, a cut-off response, the refusal it answers, the access line), whatever wire protocol carries
the request. The HTTP/1.1 wire rules (framing, keep-alive, 100-continue, timeouts, bytes on the
wire) are tested end to end in ``test_connection.py``.

How the tests are built
-----------------------
Each test takes an ``exchange_kind``: a :class:`Driver` that runs one request cycle for an app
over some adapter and reports what a client got (:class:`Outcome`). There are two:

* ``fake``: a :class:`FakeExchange` that serves a scripted request body, records everything
  sent, and lets the test make the client leave (``await client.leave()``, a :class:`trio.Event`
  underneath). It also checks the cycle's side of the Exchange contract.
* ``h2``: the real :class:`H2Connection` over ``trio.testing.memory_stream_pair()`` with an h2
  client as the peer (:class:`H2Driver`). The request goes out as HEADERS and DATA frames (body
  pieces one at a time, each once the server has settled); ``ending="open"`` never sends
  END_STREAM; a :class:`RequestRefused` ending is provoked for real (413: a body one byte over
  ``max_body_size``; 408: a body that stops, on ``autojump_clock``). ``leave()`` resets the
  stream (``RST_STREAM`` CANCEL), or closes the connection once the response is over. The
  outcome is read from the client's side: :class:`Sent` from the response frames; a response the
  app did not send (:class:`AppSpy` knows) is the server's refusal, from its status and body;
  ``complete`` is a response ended by END_STREAM and not reset; ``status`` is read from the
  access line (the driver turns the access log on, and swallows the lines when the test's config
  had it off). No seam in the server is needed: the driver only overrides
  ``H2Connection.stream_done`` to know when the stream's task has ended.

Where HTTP/2 genuinely differs (no unframed bytes for ``trioserve.fault.raw``, no visible TCP
reset over a memory stream, a file seen as bytes not as a path), the test says so per driver.
The tests of the Exchange contract (``FakeExchange`` only) and of HTTP/2's own rules
(``H2Driver`` only) at the end stay unparametrized.

Tests that involve time run on trio's ``autojump_clock``; the others never wait for time at all.
Either way a deadlock fails in the driver's ``fail_after`` (see ``deadlock_after``) rather than
hanging the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import h2.errors
import h2.events
import pytest
import trio
import trio.testing

from trioserve import ClientDisconnected, Config
from trioserve._errors import RequestRefused
from trioserve._h2._connection import H2Connection, H2Stream
from trioserve._http._cycle import RequestCycle
from trioserve._http._events import RequestHead
from trioserve._http._scope import ConnectionInfo, build_scope, connection_info
from trioserve._http._state import ServerState
from trioserve._transport import Transport

from .h2_helpers import H2Client


def deadlock_after() -> float:
    """How long a request may take before the driver calls it a deadlock.

    On virtual time: longer than any app here sleeps (100 s), and free, since the clock jumps.
    On real time (tests that involve no time at all): long enough for a loaded machine.
    """
    return 1000.0 if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock) else 10.0


# -- what a test asks for and what it gets back ------------------------------------------------


@dataclass
class Request:
    """One request, as the client sends it.

    ``body`` arrives in these pieces; then the body ``ending`` is ``"end"`` (complete), ``"open"``
    (never completes: the client leaves mid-body once the test says so) or a
    :class:`RequestRefused` (the wire protocol refuses the body after these pieces).
    """

    method: str = "GET"
    target: str = "/"
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: Sequence[bytes] = ()
    ending: Literal["end", "open"] | RequestRefused = "end"


@dataclass
class Sent:
    """What the client received."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    #: The response ended (its last piece was sent).
    ended: bool = False
    file: str | None = None
    raw: bytes = b""
    #: ``None``: not aborted; else whether the connection was reset.
    reset: bool | None = None
    #: The ``RST_STREAM`` error code the response ended with (HTTP/2 only).
    stream_reset: int | None = None


@dataclass
class Outcome:
    """How one request cycle ended."""

    sent: Sent
    #: What the server must answer instead of a response (``run()`` raised it).
    refusal: RequestRefused | None
    #: Whether the response went out whole (else the connection must be cut off).
    complete: bool
    #: The status the request is logged with.
    status: int


class Client(Protocol):
    """The client side of a request in flight."""

    async def leave(self) -> None:
        """The client goes away (closes the connection, resets the stream).

        Returns once the server has had the chance to notice (a real client's leaving races
        the app; these tests say what happens when the server has heard it).
        """

    @property
    def outcome(self) -> Outcome:
        """How the cycle ended (once the ``serve()`` block has exited)."""


class Driver(Protocol):
    """Runs one request cycle over one kind of adapter (see the module docstring)."""

    #: The ``DRIVERS`` key, for the few expectations that differ per wire protocol.
    name: str
    #: The ``http_version`` of the scope (and so of the access line).
    http_version: str

    def serve(
        self, app: Any, request: Request | None = None, config: Config | None = None
    ) -> AbstractAsyncContextManager[Client]:
        """Run ``app`` for ``request``; the block's exit waits for the cycle to end."""


# -- the fake adapter ------------------------------------------------------------------------


class FakeExchange:
    """An :class:`Exchange` that serves a scripted body and records what the cycle sends.

    It also checks the cycle's side of the contract (one waiter on the wire, nothing sent after
    the end): what it finds is in ``violations``, which the driver asserts empty.
    """

    # Like HTTP/2: a client that leaves is seen whether or not the body has been read.
    sees_disconnect_before_body = True

    def __init__(self, request: Request) -> None:
        self._pieces = deque(request.body)
        self._ending = request.ending
        self.gone = trio.Event()
        self.sent = Sent()
        #: Every call, in order: ``(method name, arguments...)``.
        self.calls: list[tuple[Any, ...]] = []
        self.violations: list[str] = []
        self._waiters = 0

    def leave(self) -> None:
        self.gone.set()

    async def receive_body(self) -> tuple[bytes, bool] | None:
        self.calls.append(("receive_body",))
        await trio.lowlevel.checkpoint()
        if self._pieces:
            piece = self._pieces.popleft()
            return piece, bool(self._pieces) or self._ending != "end"
        if isinstance(self._ending, RequestRefused):
            raise self._ending
        if self._ending == "end":
            return b"", False
        await self.gone.wait()
        return None

    async def wait_disconnected(self) -> None:
        self.calls.append(("wait_disconnected",))
        self._waiters += 1
        if self._waiters > 1:
            self.violations.append("two tasks waited on the wire at once")
        try:
            await self.gone.wait()
        finally:
            self._waiters -= 1

    async def _sending(self, call: tuple[Any, ...], *, head: bool) -> None:
        self.calls.append(call)
        if self.gone.is_set():
            raise ClientDisconnected("the client disconnected")
        if self.sent.ended or self.sent.reset is not None:
            self.violations.append(f"{call[0]} after the end of the response")
        if head != (self.sent.status is None):
            self.violations.append(f"{call[0]} {'after' if head else 'before'} the head")
        await trio.lowlevel.checkpoint()

    async def send_response(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, *, end: bool
    ) -> int:
        await self._sending(("send_response", status, list(headers), body, end), head=True)
        self.sent.status = status
        self.sent.headers = list(headers)
        self.sent.body.append(body)
        self.sent.ended = end
        return len(body)

    async def send_body(self, body: bytes, *, end: bool) -> int:
        await self._sending(("send_body", body, end), head=False)
        self.sent.body.append(body)
        self.sent.ended = end
        return len(body)

    async def send_file(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], path: str
    ) -> int:
        await self._sending(("send_file", status, list(headers), path), head=True)
        size = Path(path).stat().st_size
        self.sent.status = status
        self.sent.headers = list(headers)
        self.sent.file = path
        self.sent.ended = True
        return size

    async def send_raw(self, data: bytes) -> None:
        self.calls.append(("send_raw", data))
        self.sent.raw += data

    async def abort(self, *, reset: bool) -> None:
        self.calls.append(("abort", reset))
        self.sent.reset = reset
        self.gone.set()


class FakeClient:
    def __init__(self, exchange: FakeExchange, cycle: RequestCycle) -> None:
        self.exchange = exchange
        self.cycle = cycle
        self.refusal: RequestRefused | None = None
        self.done = trio.Event()

    async def leave(self) -> None:
        self.exchange.leave()

    @property
    def outcome(self) -> Outcome:
        assert self.done.is_set(), "the cycle is still running"
        return Outcome(
            sent=self.exchange.sent,
            refusal=self.refusal,
            complete=self.cycle.complete,
            status=self.cycle.status,
        )

    async def run(self, app: Any) -> None:
        try:
            await self.cycle.run(app)
        except RequestRefused as exc:
            self.refusal = exc
        finally:
            self.done.set()


class FakeDriver:
    """The request cycle over a :class:`FakeExchange`."""

    name = "fake"
    http_version = "1.1"

    @asynccontextmanager
    async def serve(
        self, app: Any, request: Request | None = None, config: Config | None = None
    ) -> AsyncIterator[FakeClient]:
        request = request or Request()
        config = config or Config(access_log=False)
        target = request.target.encode()
        head = RequestHead(
            method=request.method.encode(),
            target=target,
            http_version=self.http_version,
            headers=[(b"host", b"test"), *request.headers],
        )
        info = ConnectionInfo(
            client=("127.0.0.1", 5000),
            server=("127.0.0.1", 8000),
            scheme="http",
            tls=None,
            forwarded=None,
            trusted=None,
            connection_id=1,
        )
        exchange = FakeExchange(request)
        cycle = RequestCycle(
            exchange,
            build_scope(head, info, config, {}),
            config,
            target,
            bodyless=not request.body and request.ending == "end",
        )
        client = FakeClient(exchange, cycle)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run, app)
            yield client
            with trio.fail_after(deadlock_after()):
                await client.done.wait()
        assert exchange.violations == []


# -- the HTTP/2 adapter ------------------------------------------------------------------------


class AppSpy:
    """The app, with a note of whether its response head went out (a send carrying a body
    returned): what tells the app's response from the server's error answer on the wire."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.head_out = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def spied(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] in ("http.response.body", "http.response.pathsend"):
                self.head_out = True

        await self.app(scope, receive, spied)


class AccessStatuses(logging.Filter):
    """Reads the status of every ``trioserve.access`` line; swallows them when the test's
    config had the access log off (the driver turns it on to learn the status)."""

    def __init__(self, *, swallow: bool) -> None:
        super().__init__()
        self.swallow = swallow
        self.statuses: list[int] = []

    def filter(self, record: logging.LogRecord) -> bool:
        line = record.getMessage()
        if line.startswith("{"):
            self.statuses.append(int(json.loads(line)["status"]))
        elif match := re.search(r'" (\d{3}) \d+', line):  # the default line, and refusals'
            self.statuses.append(int(match[1]))
        # (A template line of the test's own says nothing the driver can parse.)
        return not self.swallow


class UnexpectedErrors(logging.Filter):
    """Keeps the server's "Unexpected error ..." records: the driver asserts there are none."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Unexpected error"):
            self.records.append(record.getMessage())
        return True


class WatchedH2Connection(H2Connection):
    """The real HTTP/2 connection, telling the driver when a stream's task has ended."""

    stream_ended: trio.Event

    def stream_done(self, stream: H2Stream) -> None:
        super().stream_done(stream)
        self.stream_ended.set()


class H2TestClient:
    """One request on a real :class:`H2Connection`, from an h2 client's side."""

    def __init__(self, client: H2Client, stream_id: int, spy: AppSpy) -> None:
        self.client = client
        self.stream_id = stream_id
        self.spy = spy
        self.left = False
        self.statuses: list[int] = []
        self.done = False

    async def leave(self) -> None:
        self.left = True
        conn = self.client.conn
        stream = conn.streams.get(self.stream_id)
        if stream is not None and not stream.closed:
            conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            await self.client.flush()
        else:
            # The response is over: nothing left to reset, so the client closes the connection.
            await self.client.send_eof()
        await trio.testing.wait_all_tasks_blocked()

    @property
    def outcome(self) -> Outcome:
        assert self.done, "the cycle is still running"
        seen = Sent()
        for event in self.client.stream_events(self.stream_id):
            if isinstance(event, h2.events.ResponseReceived):
                fields = [(bytes(k), bytes(v)) for k, v in event.headers or ()]
                seen.status = int(dict(fields)[b":status"])
                seen.headers = [f for f in fields if not f[0].startswith(b":")]
            elif isinstance(event, h2.events.DataReceived) and event.data:
                # (An empty DATA frame carries only END_STREAM: not a piece the app sent.)
                seen.body.append(bytes(event.data))
            elif isinstance(event, h2.events.StreamEnded):
                seen.ended = True
            elif isinstance(event, h2.events.StreamReset):
                code = int(event.error_code or 0)
                if not (seen.ended and code == h2.errors.ErrorCodes.NO_ERROR):
                    # (NO_ERROR after a whole response only tells the client to stop sending.)
                    seen.stream_reset = code
        if not (seen.ended or seen.stream_reset is not None or self.left):
            # The server dropped the connection under the stream (a memory stream carries no
            # TCP reset, so a reset and a close look the same here).
            seen.reset = False
        refusal = None
        if not self.spy.head_out and seen.status is not None:
            # The server answered in the app's stead: its error response is the refusal.
            # Its plain-text body is "413 Content Too Large: <reason>" (no Accept was sent), or
            # just "500 Internal Server Error" when the reason is the status's own title.
            text = b"".join(seen.body).decode().removesuffix("\n")
            assert seen.headers is not None
            assert (b"content-type", b"text/plain; charset=utf-8") in seen.headers
            assert (b"vary", b"Accept") in seen.headers
            title, colon, detail = text.partition(": ")
            assert title.startswith(f"{seen.status} ")
            refusal = RequestRefused(seen.status, detail if colon else title[4:])
            seen = Sent(stream_reset=seen.stream_reset)
        return Outcome(
            sent=seen,
            refusal=refusal,
            complete=self.spy.head_out and seen.ended and seen.stream_reset is None,
            status=self.statuses[-1] if self.statuses else 0,
        )


class H2Driver:
    """The request cycle on a real :class:`H2Connection` over a memory stream pair, with an
    h2 client as the peer. A refused body is provoked for real: 413 by a body one byte over
    ``max_body_size``, 408 by a body that stops coming (on ``autojump_clock``)."""

    name = "h2"
    http_version = "2"

    @asynccontextmanager
    async def serve(
        self, app: Any, request: Request | None = None, config: Config | None = None
    ) -> AsyncIterator[H2TestClient]:
        request = request or Request()
        config = config or Config(access_log=False)
        pieces = list(request.body)
        changes: dict[str, Any] = {"access_log": True, "date_header": False, "server_header": None}
        if isinstance(request.ending, RequestRefused):
            status = request.ending.status
            if status == 413:
                changes["max_body_size"] = sum(map(len, pieces))
                pieces.append(b"!")
            elif status == 408:
                clock = trio.lowlevel.current_clock()
                assert isinstance(clock, trio.testing.MockClock), "a 408 needs autojump_clock"
            else:
                pytest.fail(f"no way to make HTTP/2 refuse a body with {status}")
        statuses = AccessStatuses(swallow=not config.access_log)
        config = dataclasses.replace(config, **changes)
        spy = AppSpy(app)
        client_stream, server_stream = trio.testing.memory_stream_pair()
        state = ServerState(spy, config)
        info = connection_info(state, ("127.0.0.1", 5000), ("127.0.0.1", 8000), "http", None)
        conn = WatchedH2Connection(Transport(server_stream, config.write_timeout), state, info)
        conn.stream_ended = trio.Event()
        h2client = H2Client(client_stream)
        logger = logging.getLogger("trioserve.access")
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addFilter(statuses)
        unexpected = UnexpectedErrors()
        logging.getLogger("trioserve.error").addFilter(unexpected)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)
                await h2client.start()
                h2conn = h2client.conn
                stream_id: int = h2conn.get_next_available_stream_id()
                headers = [
                    (b":method", request.method.encode()),
                    (b":scheme", b"http"),
                    (b":authority", b"test"),
                    (b":path", request.target.encode()),
                    *request.headers,
                ]
                end = request.ending == "end"
                h2conn.send_headers(stream_id, headers, end_stream=end and not pieces)
                await h2client.flush()

                async def send_body() -> None:
                    # One piece at a time, each once the server has done what it does with the
                    # last (else it hands the app everything that arrived as one message).
                    for i, piece in enumerate(pieces, 1):
                        if i > 1:
                            await trio.testing.wait_all_tasks_blocked()
                        if not h2conn.streams[stream_id].open:
                            break  # answered or reset meanwhile
                        h2conn.send_data(stream_id, piece, end_stream=end and i == len(pieces))
                        await h2client.flush()

                await send_body() if len(pieces) <= 1 else nursery.start_soon(send_body)
                nursery.start_soon(h2client.read_all)
                client = H2TestClient(h2client, stream_id, spy)
                yield client
                with trio.fail_after(deadlock_after()):
                    await conn.stream_ended.wait()
                if not h2client.closed:
                    await h2client.send_eof()  # the server reads EOF, closes, the reader ends
        finally:
            logger.removeFilter(statuses)
            logger.setLevel(level)
            logging.getLogger("trioserve.error").removeFilter(unexpected)
        client.statuses = statuses.statuses
        client.done = True
        assert unexpected.records == []


DRIVERS: dict[str, type[Driver]] = {"fake": FakeDriver, "h2": H2Driver}


@pytest.fixture(params=sorted(DRIVERS))
def exchange_kind(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param]()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioserve.access"]


async def respond(send: Any, body: bytes = b"ok", status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


# -- receive: the request body, then http.disconnect -------------------------------------------


async def test_body_in_several_messages(exchange_kind: Driver) -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            messages.append(await receive())
            if not messages[-1]["more_body"]:
                break
        await respond(send, b"".join(m["body"] for m in messages))

    request = Request("POST", body=[b"ab", b"cd", b"ef"])
    async with exchange_kind.serve(app, request) as client:
        pass
    assert messages == [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"ef", "more_body": False},
    ]
    outcome = client.outcome
    assert (outcome.sent.status, b"".join(outcome.sent.body)) == (200, b"abcdef")
    assert outcome.complete


async def test_bodyless_request_is_one_empty_message(exchange_kind: Driver) -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append(await receive())
        await respond(send)

    async with exchange_kind.serve(app) as client:
        pass
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]
    assert client.outcome.complete


async def test_receive_reports_disconnect_once_the_client_leaves(exchange_kind: Driver) -> None:
    messages: list[dict[str, Any]] = []
    errors: list[OSError] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        messages.append(await receive())
        messages.append(await receive())  # blocks until the client goes
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"x"})
        except OSError as exc:
            errors.append(exc)

    async with exchange_kind.serve(app) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert len(messages) == 1  # still waiting: the client is there
        await client.leave()
    assert messages == [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    [error] = errors
    assert isinstance(error, ClientDisconnected)
    assert "disconnected" in str(error)
    assert client.outcome.sent.status is None
    assert not client.outcome.complete


async def test_receive_after_the_response_is_complete_returns_disconnect(
    exchange_kind: Driver,
) -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await respond(send, b"done")
        messages.append(await receive())

    async with exchange_kind.serve(app) as client:
        pass
    assert messages == [{"type": "http.disconnect"}]
    assert client.outcome.complete


async def test_two_tasks_receiving_after_the_body_both_hear_the_disconnect(
    exchange_kind: Driver,
) -> None:
    heard: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()

        async def listen(name: str) -> None:
            assert (await receive()) == {"type": "http.disconnect"}
            heard.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen, "first")
            nursery.start_soon(listen, "second")

    async with exchange_kind.serve(app) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert heard == []
        await client.leave()
    assert sorted(heard) == ["first", "second"]
    assert client.outcome.status == 499


async def test_no_spurious_disconnect_when_another_wait_is_cancelled(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[tuple[str, float]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        start = trio.current_time()

        async def listener() -> None:
            message = await receive()
            seen.append((message["type"], trio.current_time() - start))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener)
            with trio.move_on_after(0.2):
                await receive()  # this task's wait is cancelled; the listener must not hear it
            await trio.sleep(1)
            await respond(send, b"done")

    async with exchange_kind.serve(app) as client:
        pass
    assert client.outcome.sent.body == [b"done"]
    # Heard only once the response was complete (at 1.2 s), not when the poll gave up (0.2 s).
    assert seen == [("http.disconnect", pytest.approx(1.2))]


async def test_disconnect_delivered_while_the_app_streams(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    ticks = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal ticks
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                assert (await receive())["type"] == "http.disconnect"
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            while True:
                await send({"type": "http.response.body", "body": b"tick", "more_body": True})
                ticks += 1
                await trio.sleep(1)

    async with exchange_kind.serve(app) as client:
        await trio.sleep(2.5)
        await client.leave()
    # The watcher heard it at once: no tick was attempted after the client left.
    assert ticks == 3
    assert client.outcome.sent.body == [b"tick"] * 3
    assert not client.outcome.complete


async def test_a_refused_body_is_a_disconnect_and_run_raises_the_refusal(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[dict[str, Any]] = []
    errors: list[OSError] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "http.disconnect":
                break
        assert await receive() == {"type": "http.disconnect"}  # and stays so, at once
        try:
            await respond(send, b"too late")
        except OSError as exc:
            errors.append(exc)

    refusal = RequestRefused(413, "Request body too large.")
    request = Request("POST", body=[b"abcde"], ending=refusal)
    async with exchange_kind.serve(app, request) as client:
        pass
    assert seen == [
        {"type": "http.request", "body": b"abcde", "more_body": True},
        {"type": "http.disconnect"},
    ]
    assert [type(error) for error in errors] == [ClientDisconnected]
    outcome = client.outcome
    assert outcome.refusal is not None
    assert (outcome.refusal.status, outcome.refusal.reason) == (413, "Request body too large.")
    assert outcome.sent == Sent()  # nothing went out: the server answers 413 instead
    assert "Exception in ASGI application" not in caplog.text


async def test_an_app_failing_after_a_refused_body_still_gets_the_refusal_answered(
    exchange_kind: Driver,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,  # a real wire waits body_timeout for the 408
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise ValueError("the framework chokes on the disconnect")

    refusal = RequestRefused(408, "Timed out waiting for the request body.")
    async with exchange_kind.serve(app, Request("POST", ending=refusal)) as client:
        pass
    assert client.outcome.refusal is not None
    assert client.outcome.refusal.status == 408
    assert "Exception in ASGI application" not in caplog.text


# -- app failures: 500, or a response cut off --------------------------------------------------


async def test_app_raising_before_its_response_gets_500_and_is_logged(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    async with exchange_kind.serve(app, Request("GET", "/crash")) as client:
        pass
    outcome = client.outcome
    assert outcome.refusal is not None
    assert (outcome.refusal.status, outcome.refusal.reason) == (500, "Internal Server Error")
    assert outcome.sent == Sent()
    assert "Exception in ASGI application (GET /crash from 127.0.0.1:5000)" in caplog.text
    assert "ValueError: boom" in caplog.text


@pytest.mark.parametrize("starts", [False, True], ids=["silent", "start-only"])
async def test_app_returning_without_a_response_gets_500_and_is_logged(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture, starts: bool
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if starts:
            await send({"type": "http.response.start", "status": 200, "headers": []})

    async with exchange_kind.serve(app, Request("GET", "/silent")) as client:
        pass
    outcome = client.outcome
    assert outcome.refusal is not None
    assert outcome.refusal.status == 500
    assert outcome.sent == Sent()  # a head is held back, so a 500 can still be answered
    [record] = [r for r in caplog.records if r.name == "trioserve.error"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "ASGI application returned without completing a response (GET /silent)"
    )


async def test_app_failing_mid_stream_leaves_an_incomplete_response_not_a_500(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("boom")

    async with exchange_kind.serve(app) as client:
        pass
    outcome = client.outcome
    assert outcome.refusal is None
    assert not outcome.complete
    assert (outcome.sent.status, outcome.sent.body, outcome.sent.ended) == (
        200,
        [b"partial"],
        False,
    )
    assert "Exception in ASGI application" in caplog.text


async def test_app_returning_mid_stream_leaves_an_incomplete_response_and_is_logged(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    async with exchange_kind.serve(app, Request("GET", "/half")) as client:
        pass
    assert client.outcome.refusal is None
    assert not client.outcome.complete
    assert client.outcome.sent.ended is False
    assert "ASGI application returned before finishing its response (GET /half)" in caplog.text


async def test_send_after_the_client_left_raises_client_disconnected(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    left = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await left.wait()
        for body in (b"two", b"three"):  # the first send finds out, the next knows already
            try:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            except OSError as exc:
                errors.append(exc)

    async with exchange_kind.serve(app) as client:
        await trio.testing.wait_all_tasks_blocked()
        await client.leave()
        left.set()
    assert [type(error) for error in errors] == [ClientDisconnected, ClientDisconnected]
    assert client.outcome.sent.body == [b"one"]
    assert not client.outcome.complete
    assert "Exception in ASGI application" not in caplog.text


async def test_a_disconnect_escaping_a_task_group_is_not_an_app_error(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trioserve.error")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        assert (await receive())["type"] == "http.disconnect"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, {"type": "http.response.start", "status": 200})
            nursery.start_soon(send, {"type": "http.response.body", "body": b"x"})

    async with exchange_kind.serve(app, Request("GET", "/gone")) as client:
        await trio.testing.wait_all_tasks_blocked()
        await client.leave()
    assert client.outcome.refusal is None
    assert "Exception in ASGI application" not in caplog.text
    assert "Client 127.0.0.1:5000 left during GET /gone" in caplog.text


# -- messages out of order -----------------------------------------------------------------------

START: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
BODY: dict[str, Any] = {"type": "http.response.body", "body": b"x"}
MORE: dict[str, Any] = {"type": "http.response.body", "body": b"x", "more_body": True}


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        pytest.param([BODY], "ASGI app sent 'http.response.body' before 'http.response.start'"),
        pytest.param(
            [{"type": "http.response.pathsend", "path": "/x"}],
            "ASGI app sent 'http.response.pathsend' before 'http.response.start'",
        ),
        pytest.param([START, START], "ASGI app sent 'http.response.start' twice"),
        pytest.param([START, MORE, START], "ASGI app sent 'http.response.start' twice"),
        pytest.param(
            [START, BODY, BODY],
            "ASGI app sent 'http.response.body' after the response was complete",
        ),
        pytest.param(
            [START, BODY, {"type": "http.response.pathsend", "path": "/x"}],
            "ASGI app sent 'http.response.pathsend' after the response was complete",
        ),
        pytest.param(
            [START, {"type": "websocket.send"}],
            "Unexpected ASGI message 'websocket.send' for an HTTP request",
        ),
        pytest.param(
            [{"type": "trioserve.fault.raw", "data": b"x"}],
            "Unexpected ASGI message 'trioserve.fault.raw' for an HTTP request",
            id="fault-without-fault-injection",
        ),
    ],
)
async def test_messages_out_of_order_raise_runtime_error(
    exchange_kind: Driver,
    messages: list[dict[str, Any]],
    error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raised: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages[:-1]:
            await send(message)
        try:
            await send(messages[-1])
        except RuntimeError as exc:
            raised.append(str(exc))
            raise

    async with exchange_kind.serve(app) as client:
        pass
    assert raised == [error]
    assert "Exception in ASGI application" in caplog.text
    outcome = client.outcome
    if outcome.sent.status is None:
        assert outcome.refusal is not None
        assert outcome.refusal.status == 500
    else:
        assert outcome.refusal is None
        # A failure after a complete response leaves it complete; else it is cut off.
        assert outcome.complete is outcome.sent.ended


async def test_pathsend_while_the_body_streams_is_not_called_after_completion(
    exchange_kind: Driver, tmp_path: Path
) -> None:
    (tmp_path / "f").write_bytes(b"file")
    raised: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(MORE)
        try:
            await send({"type": "http.response.pathsend", "path": str(tmp_path / "f")})
        except RuntimeError as exc:
            raised.append(str(exc))

    async with exchange_kind.serve(app):
        pass
    [message] = raised
    assert "'http.response.pathsend'" in message
    assert "complete" not in message


# -- pathsend ------------------------------------------------------------------------------------


async def test_pathsend_sends_the_file_as_the_whole_response(
    exchange_kind: Driver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1234)
    after: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        headers = [(b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})
        after.append(await receive())
        after.append(await receive())

    async with exchange_kind.serve(app, config=Config(access_log=True)) as client:
        pass
    outcome = client.outcome
    headers = [(b"content-type", b"application/octet-stream")]
    if exchange_kind.name == "fake":
        assert outcome.sent.file == str(path)
    else:
        # On a wire: the file's bytes, and its length declared by the server.
        assert b"".join(outcome.sent.body) == b"x" * 1234
        headers.append((b"content-length", b"1234"))
    assert (outcome.sent.status, outcome.sent.headers) == (200, headers)
    assert outcome.complete
    # The unread body is still there; after it, the response being complete ends the request.
    assert after == [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    [line] = access_lines(caplog)
    assert " 200 1234 " in line  # the file's size is what went out


# -- cancel_on_disconnect ------------------------------------------------------------------------

CANCELLING = Config(access_log=False, cancel_on_disconnect=True)


@pytest.mark.parametrize(
    "request_",
    [Request(), Request("POST", body=[b"da", b"ta"])],
    ids=["without-body", "with-body"],
)
async def test_cancel_on_disconnect_cancels_a_sleeping_app_when_the_client_leaves(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock, request_: Request
) -> None:
    outcome: list[str] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["more_body"]:
            pass
        try:
            await trio.sleep(100)  # a slow database query, say
            outcome.append("completed")
        except trio.Cancelled:
            outcome.append(f"cancelled after {trio.current_time() - start:.1f}s")
            raise

    start = trio.current_time()
    async with exchange_kind.serve(slow, request_, CANCELLING) as client:
        await trio.sleep(1)
        await client.leave()
    assert outcome == ["cancelled after 1.0s"]
    assert client.outcome.status == 499
    assert client.outcome.refusal is None


async def test_cancel_on_disconnect_while_the_body_is_read(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled_at: list[float] = []

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            await trio.sleep(100)
        except trio.Cancelled:
            cancelled_at.append(trio.current_time() - start)
            raise

    start = trio.current_time()
    request = Request("POST", body=[b"abc"], ending="open")
    async with exchange_kind.serve(reader, request, CANCELLING) as client:
        await trio.sleep(1)
        await client.leave()
    assert cancelled_at == [1.0]


async def test_cancel_on_disconnect_with_an_app_that_polls_receive(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled_at: list[float] = []

    async def polls(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        try:
            with trio.move_on_after(0.2):
                await receive()  # a timed poll for a disconnect that has not happened yet
            await trio.sleep(100)
        except trio.Cancelled:
            cancelled_at.append(trio.current_time() - start)
            raise

    start = trio.current_time()
    async with exchange_kind.serve(polls, config=CANCELLING) as client:
        await trio.sleep(1)
        await client.leave()
    assert cancelled_at == [1.0]


async def test_without_cancel_on_disconnect_the_app_runs_to_completion(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[str] = []

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await trio.sleep(100)
        outcome.append(f"completed after {trio.current_time() - start:.1f}s")

    start = trio.current_time()
    async with exchange_kind.serve(slow) as client:
        await trio.sleep(1)
        await client.leave()
    assert outcome == ["completed after 100.0s"]


async def test_cancel_on_disconnect_leaves_a_complete_response_alone(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await respond(send)
        await trio.sleep(100)  # work after the response: the client may go, the app carries on
        outcome.append("completed")

    async with exchange_kind.serve(app, config=CANCELLING) as client:
        await trio.sleep(1)
        await client.leave()
    assert outcome == ["completed"]
    assert client.outcome.complete


async def test_cancel_on_disconnect_cancels_an_app_that_does_not_read_its_body(
    exchange_kind: Driver, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[str] = []

    async def ignores_body(scope: Any, receive: Any, send: Any) -> None:
        try:
            await trio.sleep(100)
            outcome.append("completed")
        except trio.Cancelled:
            outcome.append(f"cancelled after {trio.current_time() - start:.1f}s")
            raise

    start = trio.current_time()
    request = Request("POST", body=[b"data"])
    async with exchange_kind.serve(ignores_body, request, CANCELLING) as client:
        await trio.sleep(1)
        await client.leave()
    assert outcome == ["cancelled after 1.0s"]


# -- faults (the trioserve.fault extension) ------------------------------------------------------

FAULTY = Config(access_log=False, fault_injection=True)


async def test_fault_raw_writes_bytes_as_they_are_and_ends_the_connection(
    exchange_kind: Driver,
) -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "trioserve.fault" in scope["extensions"]
        await send({"type": "trioserve.fault.raw", "data": b"HTTP/1.1 200 OK\r\n\r\nnot framed"})
        try:
            await send(START)
        except RuntimeError as exc:
            errors.append(str(exc))

    async with exchange_kind.serve(app, config=FAULTY) as client:
        pass
    outcome = client.outcome
    if exchange_kind.name == "h2":
        # HTTP/2 has no unframed bytes: the nearest misbehaviour is a reset stream.
        assert outcome.sent.raw == b""
        assert outcome.sent.stream_reset == h2.errors.ErrorCodes.INTERNAL_ERROR
    else:
        assert outcome.sent.raw == b"HTTP/1.1 200 OK\r\n\r\nnot framed"
    assert outcome.sent.status is None  # nothing framed went out
    assert outcome.refusal is None  # and no 500 after the app's own bytes
    assert not outcome.complete  # the connection ends after them
    assert len(errors) == 1  # nothing more may be sent once the app owns the wire


@pytest.mark.parametrize("reset", [False, True])
async def test_fault_close_ends_the_connection(exchange_kind: Driver, reset: bool) -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "trioserve.fault.close", "reset": reset})
        assert await receive() == {"type": "http.disconnect"}
        try:
            await respond(send)
        except OSError as exc:
            errors.append(exc)

    async with exchange_kind.serve(app, config=FAULTY) as client:
        pass
    outcome = client.outcome
    if exchange_kind.name == "fake":
        assert outcome.sent.reset is reset
    else:
        # The connection ended under the stream; over a memory stream a TCP reset looks like
        # a close (the reset itself is checked over real sockets in test_harness.py).
        assert outcome.sent.reset is False
    assert outcome.sent.status is None
    assert outcome.refusal is None
    assert not outcome.complete
    assert [type(error) for error in errors] == [ClientDisconnected]


async def test_an_unknown_fault_is_an_app_error(exchange_kind: Driver) -> None:
    raised: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "trioserve.fault.nope"})
        except RuntimeError as exc:
            raised.append(str(exc))
            raise

    async with exchange_kind.serve(app, config=FAULTY) as client:
        pass
    assert raised == ["Unknown trioserve.fault message 'trioserve.fault.nope'"]
    assert client.outcome.refusal is not None
    assert client.outcome.refusal.status == 500


# -- the access record -----------------------------------------------------------------------


async def test_access_line_in_the_default_format(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world!"})

    async with exchange_kind.serve(app, Request("GET", "/logged?q=1"), Config()):
        pass
    [line] = access_lines(caplog)
    version = exchange_kind.http_version
    assert re.fullmatch(
        rf'127\.0\.0\.1:5000 - "GET /logged\?q=1 HTTP/{re.escape(version)}" 201 12 \d+\.\dms',
        line,
    ), line


async def test_access_line_as_json(exchange_kind: Driver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    request = Request("POST", "/j?x=1", headers=[(b"user-agent", b"curl/8")], body=[b"abc"])
    async with exchange_kind.serve(
        lambda scope, receive, send: respond(send, b"four", 202),
        request,
        Config(access_log_json=True),
    ):
        pass
    [line] = access_lines(caplog)
    data = json.loads(line)
    assert {key: data[key] for key in ("client", "method", "target", "path", "query")} == {
        "client": "127.0.0.1:5000",
        "method": "POST",
        "target": "/j?x=1",
        "path": "/j",
        "query": "x=1",
    }
    assert (data["status"], data["bytes"], data["user_agent"]) == (202, 4, "curl/8")
    assert (data["http_version"], data["scheme"]) == (exchange_kind.http_version, "http")


async def test_access_line_template_sees_the_response_headers(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hi"})

    config = Config(access_log_format="{status} {bytes} {response_header[content-type]}")
    async with exchange_kind.serve(app, config=config):
        pass
    assert access_lines(caplog) == ["200 2 text/plain"]


async def test_client_gone_before_the_response_is_logged_as_499(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await receive()  # returns once the client is gone

    async with exchange_kind.serve(app, Request("GET", "/gone"), Config()) as client:
        await trio.testing.wait_all_tasks_blocked()
        await client.leave()
    [line] = access_lines(caplog)
    assert f'"GET /gone HTTP/{exchange_kind.http_version}" 499 0 ' in line
    assert client.outcome.refusal is None  # nobody to answer


async def test_client_gone_before_the_first_send_is_logged_as_499(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    left = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await left.wait()
        await respond(send)  # raises ClientDisconnected: nobody is there any more

    async with exchange_kind.serve(app, Request("GET", "/gone"), Config()) as client:
        await client.leave()
        left.set()
    assert client.outcome.sent == Sent()
    [line] = access_lines(caplog)
    assert f'"GET /gone HTTP/{exchange_kind.http_version}" 499 0 ' in line


async def test_no_access_line_when_the_access_log_is_off(
    exchange_kind: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with exchange_kind.serve(lambda scope, receive, send: respond(send)):
        pass
    assert access_lines(caplog) == []


# -- the Exchange contract, seen from the FakeExchange (not parametrized: adapter-specific) -------


async def serve_on_fake(app: Any, request: Request | None = None) -> FakeExchange:
    async with FakeDriver().serve(app, request) as client:
        pass
    return client.exchange


async def test_the_head_goes_out_with_the_first_body_message() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    exchange = await serve_on_fake(app)
    assert exchange.calls == [
        ("send_response", 200, [(b"a", b"b")], b"one", False),
        ("send_body", b"two", True),
    ]


async def test_a_one_message_body_goes_out_with_the_head_as_the_whole_response() -> None:
    exchange = await serve_on_fake(lambda scope, receive, send: respond(send, b"whole"))
    assert exchange.calls == [("send_response", 200, [], b"whole", True)]


@pytest.mark.parametrize("reads", [0, 1, 2])
async def test_the_body_is_read_only_when_the_app_asks(reads: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(reads):
            await receive()
        await respond(send)

    exchange = await serve_on_fake(app, Request("POST", body=[b"a", b"b", b"c"]))
    assert [call[0] for call in exchange.calls] == ["receive_body"] * reads + ["send_response"]


# -- HTTP/2's own rules, seen through the H2Driver (not parametrized: HTTP/2 only) ---------------


async def read_all_body(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await respond(send)


async def test_h2_a_body_over_max_body_size_is_refused_with_413_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    request = Request("POST", "/up", body=[b"abc"], ending=RequestRefused(413, "too large"))
    async with H2Driver().serve(read_all_body, request, Config()) as client:
        pass
    outcome = client.outcome
    assert outcome.refusal is not None
    assert (outcome.refusal.status, outcome.refusal.reason) == (413, "Request body too large.")
    [line] = access_lines(caplog)
    # The access format of every response: method, target, version, status, body bytes, time.
    sent = len(b"413 Content Too Large: Request body too large.\n")
    assert re.fullmatch(rf'127\.0\.0\.1:5000 - "POST /up HTTP/2" 413 {sent} \d+\.\dms', line), line
    assert outcome.status == 413


async def test_h2_a_declared_length_over_max_body_size_is_refused_before_the_app_runs() -> None:
    ran: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(True)
        await read_all_body(scope, receive, send)

    request = Request("POST", headers=[(b"content-length", b"11")], body=[b"a"], ending="open")
    async with H2Driver().serve(app, request, Config(max_body_size=10)) as client:
        pass
    assert ran == []
    assert client.outcome.refusal is not None
    assert client.outcome.refusal.status == 413


async def test_h2_a_whole_response_before_the_body_ends_asks_the_client_to_stop_sending() -> None:
    request = Request("POST", body=[b"upload"], ending="open")
    async with H2Driver().serve(lambda scope, receive, send: respond(send), request) as client:
        pass
    events = client.client.stream_events(client.stream_id)
    kinds = [type(event) for event in events]
    assert kinds[-2:] == [h2.events.StreamEnded, h2.events.StreamReset]
    # NO_ERROR: "stop sending, the response is whole" (RFC 9113 section 8.1), not an error.
    assert events[-1].error_code == h2.errors.ErrorCodes.NO_ERROR
    assert client.outcome.complete
