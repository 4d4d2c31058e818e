"""Defects found by the review of the connection split and HTTP/2 round (one test per defect)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trioserve import Config
from trioserve._h11._connection import H11Connection
from trioserve._http._state import ServerState

from .conftest import hello_app

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def test_h2c_client_that_stops_reading_is_no_unexpected_error(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    # Prior-knowledge h2c: HTTP/1.1 hands the connection over to HTTP/2. A client that sends
    # the preface and never reads times the server's first write out: a client that left, not
    # an "Unexpected error" with a traceback (the disconnect comes out of the HTTP/2
    # connection's nursery in an exception group).
    caplog.set_level(logging.DEBUG, logger="trioserve")
    client, server = trio.testing.lockstep_stream_pair()
    state = ServerState(hello_app, Config(access_log=False, http2=True, write_timeout=5))
    conn = H11Connection(server, state, client=("127.0.0.1", 5000), server=("127.0.0.1", 8000))
    closed: list[bool] = []

    async def on_run() -> None:
        await conn.run()
        closed.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_run)
        await client.send_all(PREFACE)
        with trio.fail_after(30):
            while not closed:
                await trio.sleep(1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert conn not in state.connections
