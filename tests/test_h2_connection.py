"""H2Connection over in-memory streams, with a real h2 client and autojump_clock for every timer.

Streams (RFC 9113 section 5), flow control tied to consumption (section 5.2), the request
cycle's semantics per stream, GOAWAY on idle and on shutdown (section 6.8), and the write side's
bounds (a client that does not read).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h2.events
import pytest
import trio
import trio.testing

from trioserve import Config, StaticFiles

from .conftest import hello_app
from .h2_helpers import GET, H2Client, RawClient, h2_connection, request

INTERNAL_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x2, 0x8, 0xB


async def send_body(client: H2Client, stream_id: int, body: bytes, *, end: bool) -> None:
    """Send ``body`` in frames the peer accepts (the client's windows must allow it)."""
    size = client.conn.max_outbound_frame_size
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        client.conn.send_data(stream_id, piece, end_stream=end and start + size >= len(body))
    await client.flush()


def window_updates(client: H2Client, stream_id: int) -> list[int]:
    return [
        e.delta or 0
        for e in client.events
        if isinstance(e, h2.events.WindowUpdated) and e.stream_id == stream_id
    ]


# -- requests ------------------------------------------------------------------------------------


async def test_request_is_served_with_http_version_2(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, _, _):
        response = await client.get(request(b"POST", b"/echo?x=1"), b"payload")
    assert (response.status, response.body) == (200, b"POST /echo\npayload")
    assert response.header(b"content-length") == b"18"
    scope = scopes[0]
    assert (scope["http_version"], scope["query_string"], scope["scheme"]) == ("2", b"x=1", "http")
    assert (b"host", b"example.test") in scope["headers"]


async def test_head_gets_the_headers_without_a_body(autojump_clock: trio.testing.MockClock) -> None:
    async with h2_connection(hello_app) as (client, _, _):
        response = await client.get(request(b"HEAD", b"/"))
    assert (response.status, response.body) == (200, b"")
    assert response.header(b"content-length") == b"7"  # the GET's length, as the app said


async def test_access_log_says_http_2(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.INFO, logger="trioserve.access")
    async with h2_connection(hello_app, Config(access_log=True)) as (client, _, _):
        await client.get(request(b"GET", b"/logged"))
    assert any('"GET /logged HTTP/2" 200' in r.getMessage() for r in caplog.records)


async def test_health_path_is_answered_without_the_app(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see the health check")

    config = Config(access_log=False, health_path="/healthz")
    async with h2_connection(app, config) as (client, _, _):
        response = await client.get(request(b"GET", b"/healthz"))
    assert (response.status, response.body) == (200, b"ok\n")


async def test_max_requests_counts_http2_streams(autojump_clock: trio.testing.MockClock) -> None:
    reached: list[int] = []
    async with h2_connection(hello_app) as (client, _, state):
        state.request_limit = 3
        state.on_request_limit = lambda: reached.append(state.requests)
        for _ in range(2):
            await client.get()
        assert reached == []
        await client.get()
    assert reached == [3]


async def test_header_count_over_max_headers_gets_431_on_its_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = Config(access_log=False, max_headers=3)
    async with h2_connection(hello_app, config) as (client, _, _):
        fields = [(b"x-h%d" % i, b"v") for i in range(4)]
        refused = await client.get([*GET, *fields])
        served = await client.get()
    assert refused.status == 431
    assert served.status == 200


# -- streams are independent (RFC 9113 section 5) ----------------------------------------------


async def test_slow_stream_does_not_delay_another(autojump_clock: trio.testing.MockClock) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await trio.sleep(100)
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, _, _):
        slow = await client.request(request(b"GET", b"/slow"))
        fast = await client.request(request(b"GET", b"/fast"))
        response = await client.response(fast)
        assert response.body == b"GET /fast\n"
        assert trio.current_time() < 1
        assert not client.finished(slow)
        assert (await client.response(slow)).status == 200
        assert trio.current_time() >= 100


async def test_crashed_app_gets_500_on_its_stream_and_the_connection_lives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/crash":
            raise RuntimeError("boom")
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, _, _):
        crashed = await client.get(request(b"GET", b"/crash"))
        fine = await client.get(request(b"GET", b"/fine"))
    assert crashed.status == 500
    assert (fine.status, fine.body) == (200, b"GET /fine\n")


async def test_app_error_mid_response_resets_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A half-sent response must not pass for a whole one: RST_STREAM INTERNAL_ERROR."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/half":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            raise RuntimeError("boom")
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, _, _):
        half = await client.get(request(b"GET", b"/half"))
        fine = await client.get()
    assert (half.status, half.body, half.reset) == (200, b"part", INTERNAL_ERROR)
    assert fine.status == 200


@pytest.mark.parametrize("cancel_on_disconnect", [False, True])
async def test_client_reset_is_a_disconnect_for_the_app(
    cancel_on_disconnect: bool, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/wait":
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        seen.append("disconnect")
                        return
            except trio.Cancelled:
                seen.append("cancelled")
                raise
        await hello_app(scope, receive, send)

    config = Config(access_log=False, cancel_on_disconnect=cancel_on_disconnect)
    async with h2_connection(app, config) as (client, _, _):
        waiting = await client.request(request(b"GET", b"/wait"))
        await trio.sleep(1)
        client.conn.reset_stream(waiting, CANCEL)
        await client.flush()
        await trio.sleep(1)
        assert (await client.get()).status == 200
    assert seen == ["disconnect"]  # the app's own receive() is what notices, either way


async def test_cancel_on_disconnect_cancels_an_app_that_is_not_receiving(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await trio.sleep(1000)
        except trio.Cancelled:
            seen.append("cancelled")
            raise

    config = Config(access_log=False, cancel_on_disconnect=True)
    async with h2_connection(app, config) as (client, _, _):
        stream_id = await client.request()
        await trio.sleep(1)
        client.conn.reset_stream(stream_id, CANCEL)
        await client.flush()
        await trio.sleep(1)
        assert seen == ["cancelled"]
        assert trio.current_time() < 10


# -- request body backpressure (RFC 9113 section 5.2, issue 10 item 3) --------------------------


async def test_an_app_that_does_not_read_its_body_stalls_only_its_own_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/lazy":
            await release.wait()
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, _, _):
        lazy = await client.request(request(b"POST", b"/lazy"), end=False)
        await send_body(client, lazy, b"x" * 65_535, end=False)  # the whole stream window
        # The connection window is credited as the data arrives (in 32 KiB steps).
        await client.wait_for(lambda: client.conn.outbound_flow_control_window >= 32_768)
        other = await client.get(request(b"POST", b"/other"), b"small body")
        assert (other.status, other.body) == (200, b"POST /other\nsmall body")
        assert window_updates(client, lazy) == []  # no credit: the app has not read
        assert client.conn.local_flow_control_window(lazy) == 0
        release.set()
        await client.wait_for(lambda: sum(window_updates(client, lazy)) >= 65_535)
        await send_body(client, lazy, b"y", end=True)
        response = await client.response(lazy)
    assert response.body == b"POST /lazy\n" + b"x" * 65_535 + b"y"


# -- response backpressure ---------------------------------------------------------------------


async def test_send_waits_while_the_client_keeps_its_window_shut_then_the_stream_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/empty":
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})
            return
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        sent.append(trio.current_time())
        await send({"type": "http.response.body", "body": b"y"})

    config = Config(access_log=False, write_timeout=7)
    async with h2_connection(app, config, settings={"INITIAL_WINDOW_SIZE": 0}) as (client, _, _):
        shut = await client.get(request(b"GET", b"/big"))
        assert shut.reset == INTERNAL_ERROR
        assert shut.body == b""
        assert trio.current_time() == pytest.approx(7, abs=0.1)
        assert sent == []  # the first send() never returned
        alive = await client.get(request(b"GET", b"/empty"))
    assert alive.status == 204


async def test_response_goes_out_as_the_client_opens_its_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(hello_app, auto_ack_data=False) as (client, _, _):
        body = b"z" * 200_000  # three times the windows
        stream_id = await client.request(request(b"POST"), body=None, end=False)
        # The request body is small; the echo is what fills the windows.
        await send_body(client, stream_id, body[:60_000], end=True)
        received = 0
        while not client.finished(stream_id):
            events = await client.receive()
            for event in events:
                if isinstance(event, h2.events.DataReceived):
                    received += len(event.data or b"")
                    await client.ack(stream_id, event.flow_controlled_length or 0)
        response = await client.response(stream_id)
    assert response.body == b"POST /\n" + body[:60_000]


async def test_pathsend_of_a_file_larger_than_the_windows(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    content = bytes(range(256)) * 1200  # 307,200 bytes: several windows' worth
    (tmp_path / "big.bin").write_bytes(content)
    async with h2_connection(StaticFiles(tmp_path)) as (client, _, _):
        response = await client.get(request(b"GET", b"/big.bin"))
        head = await client.get(request(b"HEAD", b"/big.bin"))
    assert response.status == 200
    assert response.body == content
    assert response.header(b"content-length") == b"307200"
    assert (head.status, head.body, head.header(b"content-length")) == (200, b"", b"307200")


# -- GOAWAY: idle timeout and graceful shutdown (RFC 9113 section 6.8) ---------------------------


@pytest.mark.parametrize("idle_timer", [True, False], ids=["server-timer", "own-deadline"])
async def test_idle_connection_gets_goaway_then_close(
    autojump_clock: trio.testing.MockClock, idle_timer: bool
) -> None:
    config = Config(access_log=False, keep_alive_timeout=5)
    async with h2_connection(hello_app, config, idle_timer=idle_timer) as (client, _, state):
        if idle_timer:
            await trio.testing.wait_all_tasks_blocked()
            assert state.idle_timer.running
        await client.get()
        served_at = trio.current_time()
        await client.read_until_eof()
        goaway = client.goaway()
        assert goaway is not None
        assert (goaway.error_code, goaway.last_stream_id) == (0, 1)
        assert trio.current_time() - served_at == pytest.approx(5, abs=0.1)


async def test_graceful_shutdown_sends_goaway_at_once_and_lets_the_stream_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello_app(scope, receive, send)

    async with h2_connection(app) as (client, conn, _):
        in_flight = await client.request(request(b"GET", b"/in-flight"))
        await trio.sleep(1)
        conn.stop_idle()
        await client.wait_for(lambda: client.goaway() is not None)
        goaway = client.goaway()
        assert goaway is not None
        assert (goaway.error_code, goaway.last_stream_id) == (0, in_flight)
        assert not client.finished(in_flight)
        release.set()
        response = await client.response(in_flight)
        assert response.body == b"GET /in-flight\n"
        await client.read_until_eof()


# -- defences at the connection level ----------------------------------------------------------


async def test_rapid_reset_ends_the_connection_with_enhance_your_calm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep(1000)

    async with h2_connection(app) as (client, _, _):
        raw = RawClient()
        raw.encoder = client.conn.encoder
        frames = b""
        for stream_id in range(1, 2 * 250, 2):
            frames += raw.headers(stream_id, end_stream=False) + raw.rst(stream_id)
        await client.send_raw(frames)
        await client.read_until_eof()
        goaway = client.goaway()
        assert goaway is not None
        assert goaway.error_code == ENHANCE_YOUR_CALM
        assert trio.current_time() < 1


async def test_a_client_that_never_reads_stops_being_read_and_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server writes its answers before reading more: a client that reads nothing can push
    at most what one read takes, then its own writes stall, and past write_timeout it is gone."""
    config = Config(access_log=False, write_timeout=5)
    async with h2_connection(hello_app, config, lockstep=True) as (client, _, _):
        await client.stream.receive_some(65536)  # the server's SETTINGS, then nothing more
        pings = RawClient().preface() + RawClient.ping() * 500
        with pytest.raises(trio.BrokenResourceError):
            for _ in range(100):
                await client.send_raw(pings)
        assert trio.current_time() == pytest.approx(5, abs=0.1)


async def test_streams_in_flight_are_cancelled_when_a_flood_ends_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rapid Reset: the reset streams' apps stop with the connection, they do not run on."""
    cancelled: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await trio.sleep(1000)
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise

    async with h2_connection(app) as (client, _, _):
        raw = RawClient()
        raw.encoder = client.conn.encoder
        for first in (1, 301):  # 150 resets (under the budget of 200), then 150 more
            frames = [
                raw.headers(i, end_stream=False) + raw.rst(i) for i in range(first, first + 300, 2)
            ]
            await client.send_raw(b"".join(frames))
            await trio.sleep(1)
        await client.read_until_eof()
        goaway = client.goaway()
        assert goaway is not None
        assert goaway.error_code == ENHANCE_YOUR_CALM
        assert trio.current_time() < 3
        assert len(cancelled) == 150  # the first batch's apps, all stopped at once


async def test_streams_in_flight_are_cancelled_after_a_protocol_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await trio.sleep(1000)
        except trio.Cancelled:
            cancelled.append(scope["path"])
            raise

    async with h2_connection(app) as (client, _, _):
        await client.request(request(b"GET", b"/in-flight"))
        await trio.sleep(1)
        await client.send_raw(RawClient.raw(6, 0, 0, b"short"))  # a PING of 5 bytes
        await client.read_until_eof()
        goaway = client.goaway()
        assert goaway is not None
        assert goaway.error_code == 0x6  # FRAME_SIZE_ERROR
    assert cancelled == ["/in-flight"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_client_eof_is_a_disconnect_for_every_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, float]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        seen.append(((await receive())["type"], trio.current_time()))

    async with h2_connection(app) as (client, _, _):
        await client.request()
        await client.request()
        await trio.sleep(1)
        await client.stream.aclose()
        await trio.sleep(10)
    assert seen == [("http.disconnect", 1.0)] * 2
