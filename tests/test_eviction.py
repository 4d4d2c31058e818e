"""The eviction policy (a pure function of snapshots), the Evictor that applies it, and the
HTTP/1.1 connection's hooks over in-memory streams (``autojump_clock``: virtual time)."""

from __future__ import annotations

import logging
import math

import h2.config
import h2.connection
import h2.events
import pytest
import trio
import trio.testing

from trioserve import Config
from trioserve._eviction import Evictor, Kind, Reason, Snapshot, choose, next_candidate_at

from .conftest import connection, hello_app

RATE = 500.0
AFTER = 0.25
NOW = 100.0


def chosen(connections: dict[str, Snapshot], count: int | None = None) -> list[tuple[str, str]]:
    victims = choose(
        connections.items(),
        now=NOW,
        count=count,
        min_head_rate=RATE,
        min_head_rate_after=AFTER,
    )
    return [(name, reason.value) for name, reason in victims]


# -- the policy ----------------------------------------------------------------------------------


def test_idle_connections_go_first_longest_idle_first_then_slow_heads_slowest_first() -> None:
    connections = {
        "slow-2-bytes": Snapshot(Kind.HEAD, NOW - 2, 2),
        "idle-1s": Snapshot(Kind.IDLE, NOW - 1),
        "silent": Snapshot(Kind.HEAD, NOW - 1, 0),
        "idle-3s": Snapshot(Kind.IDLE, NOW - 3),
    }
    assert chosen(connections, count=10) == [
        ("idle-3s", "idle"),
        ("idle-1s", "idle"),
        ("silent", "slow-head"),
        ("slow-2-bytes", "slow-head"),
    ]


def test_busy_connections_and_websockets_are_never_chosen() -> None:
    connections = {
        "busy": Snapshot(Kind.BUSY, NOW - 60),
        "websocket": Snapshot(Kind.WEBSOCKET, NOW - 3600),
    }
    assert chosen(connections, count=10) == []


@pytest.mark.parametrize(
    ("age", "received", "evicted"),
    [
        (0.1, 0, False),  # too young to judge, even with nothing sent
        (AFTER, 0, True),  # judged at exactly min_head_rate_after
        (1.0, 400, True),  # 400 bytes/s < 500
        (1.0, 600, False),  # 600 bytes/s: slow, but fast enough
        (10.0, 4000, True),  # 400 bytes/s over a longer time
        (0.5, 200, True),  # 400 bytes/s
    ],
)
def test_a_head_is_evicted_once_judged_and_below_the_minimum_rate(
    age: float, received: int, evicted: bool
) -> None:
    connections = {"head": Snapshot(Kind.HEAD, NOW - age, received)}
    assert chosen(connections, count=1) == ([("head", "slow-head")] if evicted else [])


def test_a_minimum_rate_of_zero_never_evicts_heads() -> None:
    victims = choose(
        [("silent", Snapshot(Kind.HEAD, NOW - 60, 0))],
        now=NOW,
        min_head_rate=0,
        min_head_rate_after=AFTER,
    )
    assert victims == []


@pytest.mark.parametrize(("candidates", "batch"), [(1, 1), (7, 1), (16, 2), (80, 10), (1000, 32)])
def test_one_call_evicts_an_eighth_of_the_candidates_between_1_and_32(
    candidates: int, batch: int
) -> None:
    connections = {f"idle-{n}": Snapshot(Kind.IDLE, NOW - n) for n in range(candidates)}
    assert len(chosen(connections)) == batch


def test_next_candidate_is_when_the_first_head_becomes_too_slow() -> None:
    snapshots = [
        Snapshot(Kind.HEAD, NOW, 0),  # judged at NOW + 0.25
        Snapshot(Kind.HEAD, NOW - 0.1, 100),  # 100 bytes take 0.2 s at 500 bytes/s: NOW + 0.15
        Snapshot(Kind.BUSY, NOW - 10),
    ]
    at = next_candidate_at(snapshots, min_head_rate=RATE, min_head_rate_after=AFTER)
    assert at == pytest.approx(NOW + 0.15)
    assert next_candidate_at(
        [Snapshot(Kind.IDLE, NOW)], min_head_rate=RATE, min_head_rate_after=AFTER
    ) == (math.inf)


# -- the evictor -----------------------------------------------------------------------------------


class FakeConnection:
    def __init__(self, name: str, snapshot: Snapshot) -> None:
        self.name = name
        self.state: Snapshot | None = snapshot
        self.evicted: list[Reason] = []

    def snapshot(self) -> Snapshot | None:
        return self.state

    def evict(self, reason: Reason) -> None:
        self.evicted.append(reason)
        self.state = None  # closing: no candidate any more

    def describe(self) -> str:
        return self.name


async def test_make_room_evicts_counts_and_logs_each_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trioserve.error")
    await trio.sleep(10)
    now = trio.current_time()
    idle = FakeConnection("10.0.0.1:1000", Snapshot(Kind.IDLE, now - 2))
    slow = FakeConnection("10.0.0.2:2000", Snapshot(Kind.HEAD, now - 3, 5))
    busy = FakeConnection("10.0.0.3:3000", Snapshot(Kind.BUSY, now - 3))
    counts: dict[str, int] = {}
    evictor = Evictor([idle, slow, busy], counts, min_head_rate=RATE, min_head_rate_after=AFTER)
    assert evictor.make_room() == 1.0  # evicted one: wait for its slot
    assert evictor.make_room() == 1.0
    assert idle.evicted == [Reason.IDLE]
    assert slow.evicted == [Reason.SLOW_HEAD]
    assert busy.evicted == []
    assert counts == {"idle": 1, "slow-head": 1}
    lines = [r.getMessage() for r in caplog.records if "Out of connection slots" in r.message]
    assert lines == [
        "Out of connection slots: closed the connection from 10.0.0.1:1000 (idle for 2.0 s) "
        "for a new client",
        "Out of connection slots: closed the connection from 10.0.0.2:2000 (request head "
        "incomplete after 3.0 s (5 bytes)) for a new client",
    ]
    # Nothing left to evict: look again soon (busy connections may turn idle).
    assert evictor.make_room() == 0.25


async def test_make_room_waits_until_a_young_head_can_be_judged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await trio.sleep(10)
    young = FakeConnection("young", Snapshot(Kind.HEAD, trio.current_time() - 0.2, 0))
    evictor = Evictor([young], {}, min_head_rate=RATE, min_head_rate_after=AFTER)
    assert evictor.make_room() == pytest.approx(0.05)
    assert young.evicted == []


# -- the HTTP/1.1 connection's hooks ---------------------------------------------------------------


async def test_a_silent_new_connection_is_a_head_of_0_bytes_and_eviction_closes_it_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection(hello_app, Config(access_log=False)) as (client, state):
        await trio.sleep(1)
        conn = state.connections.copy().pop()
        snapshot = conn.snapshot()
        assert snapshot is not None
        assert (snapshot.kind, snapshot.received) == (Kind.HEAD, 0)
        assert trio.current_time() - snapshot.since == pytest.approx(1)
        conn.evict(Reason.SLOW_HEAD)
        assert conn.snapshot() is None  # never chosen twice
        with trio.fail_after(1):
            assert await client.read_until_eof() == b""


async def test_an_evicted_slow_head_gets_408_and_the_connection_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection(hello_app, Config(access_log=False)) as (client, state):
        await client.send_raw(b"GET / HTTP/1.1\r\n")
        await trio.sleep(0.5)
        await client.send_raw(b"X-a: b\r\n")
        await trio.sleep(0.5)
        conn = state.connections.copy().pop()
        snapshot = conn.snapshot()
        assert snapshot is not None
        assert (snapshot.kind, snapshot.received) == (Kind.HEAD, 24)
        conn.evict(Reason.SLOW_HEAD)
        with trio.fail_after(1):
            answer = await client.read_until_eof()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b"The request head came too slowly.\n")


async def test_an_idle_keep_alive_connection_is_idle_since_its_response_and_eviction_closes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection(hello_app, Config(access_log=False)) as (client, state):
        await client.request()
        response, _ = await client.response()
        assert response.status_code == 200
        answered = trio.current_time()
        await trio.sleep(2)
        conn = state.connections.copy().pop()
        snapshot = conn.snapshot()
        assert snapshot is not None
        assert snapshot.kind is Kind.IDLE
        assert snapshot.since == pytest.approx(answered, abs=0.01)
        conn.evict(Reason.IDLE)
        with trio.fail_after(1):
            assert await client.read_until_eof() == b""


async def test_a_connection_whose_request_is_in_the_app_is_busy() -> None:
    inside = trio.Event()
    release = trio.Event()

    async def app(scope: object, receive: object, send: object) -> None:
        inside.set()
        await release.wait()

    async with connection(app, Config(access_log=False)) as (client, state):
        await client.request()
        with trio.fail_after(5):
            await inside.wait()
        snapshot = state.connections.copy().pop().snapshot()
        assert snapshot is not None
        assert snapshot.kind is Kind.BUSY
        release.set()


async def test_an_idle_http2_connection_is_idle_and_eviction_sends_goaway_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    peer.initiate_connection()
    async with connection(hello_app, Config(access_log=False)) as (client, state):
        # Prior knowledge on a cleartext connection: HTTP/1.1 hands over to HTTP/2.
        await client.send_raw(peer.data_to_send())
        peer.receive_data(await client.stream.receive_some(65536))  # the server's SETTINGS
        await client.send_raw(peer.data_to_send())
        await trio.sleep(1)
        conn = state.connections.copy().pop()
        snapshot = conn.snapshot()
        assert snapshot is not None
        assert snapshot.kind is Kind.IDLE
        assert 0.5 <= trio.current_time() - snapshot.since <= 1.5
        conn.evict(Reason.IDLE)
        assert conn.snapshot() is None
        with trio.fail_after(1):
            events = peer.receive_data(await client.read_until_eof())
        assert any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
