"""The ASGI lifespan protocol as the server runs it: startup before listening, shutdown after."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioserve
from trioserve import Config
from trioserve._lifespan import LifespanFailure

from ._helpers import get


def lifespan_app(events: list[str], *, fail: str | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    events.append("startup")
                    if fail == "startup":
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    scope["state"]["greeting"] = "hello from startup"
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            events.append("request")
            body = scope["state"]["greeting"].encode()
            scope["state"]["mutated"] = True  # a request's copy must not leak to others
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    return app


async def test_startup_runs_before_listening_and_state_reaches_requests() -> None:
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            trioserve.serve, lifespan_app(events), Config(port=0, access_log=False)
        )
        assert events == ["startup"]
        assert (await get(address)).text == "hello from startup"
        assert (await get(address)).text == "hello from startup"
        nursery.cancel_scope.cancel()
    assert events == ["startup", "request", "request", "shutdown"]


async def test_shutdown_runs_after_in_flight_requests() -> None:
    events: list[str] = []
    inner = lifespan_app(events)
    started = trio.Event()
    release = trio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            events.append("slow request starts")
            started.set()
            await release.wait()
        await inner(scope, receive, send)

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            lambda task_status: trioserve.serve(
                app,
                Config(port=0, access_log=False),
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        )
        nursery.start_soon(get, address)
        with trio.fail_after(5):
            await started.wait()
        stop.set()
        # Everything the server does on its own after the trigger is done once every task
        # here waits (the client waits for its answer, the app for `release`).
        await trio.testing.wait_all_tasks_blocked()
        assert "shutdown" not in events
        release.set()
    assert events[-2:] == ["request", "shutdown"]


async def test_startup_failure_raises_and_nothing_listens() -> None:
    events: list[str] = []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LifespanFailure, match="no database"):
        await trioserve.serve(lifespan_app(events, fail="startup"), Config(port=port))
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(("127.0.0.1", port))


async def no_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "this app does not do lifespan"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body"})


async def test_auto_serves_an_app_without_lifespan_support() -> None:
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            trioserve.serve, no_lifespan_app, Config(port=0, access_log=False)
        )
        assert (await get(address)).status_code == 204
        nursery.cancel_scope.cancel()


async def test_on_requires_lifespan_support() -> None:
    with pytest.raises(LifespanFailure, match="does not support lifespan"):
        await trioserve.serve(no_lifespan_app, Config(port=0, lifespan="on"))


async def test_off_never_calls_the_app_with_a_lifespan_scope() -> None:
    events: list[str] = []
    app = lifespan_app(events)

    async def strict(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] != "lifespan"
        scope["state"]["greeting"] = "no startup"
        await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(
            trioserve.serve, strict, Config(port=0, lifespan="off", access_log=False)
        )
        assert (await get(address)).text == "no startup"
        nursery.cancel_scope.cancel()
    assert events == ["request"]


async def test_startup_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def hangs(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep_forever()

    with pytest.raises(LifespanFailure, match="within 5 s"):
        await trioserve.serve(hangs, Config(port=0, lifespan_startup_timeout=5))


def test_cli_exits_3_when_startup_fails(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                if scope["type"] == "lifespan":
                    await receive()
                    await send({"type": "lifespan.startup.failed", "message": "cannot reach db"})
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "trioserve", "failing:app", "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "trioserve: error: lifespan startup failed: cannot reach db"
    )
    assert "serving" not in result.stderr


async def test_cancelling_serve_during_startup_returns_promptly() -> None:
    async def slow_startup(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await trio.sleep(100)

    with trio.fail_after(2), trio.move_on_after(0.2):
        await trioserve.serve(slow_startup, Config(port=0))


async def test_auto_mode_fails_on_an_app_that_crashes_in_its_startup() -> None:
    async def crashes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise ConnectionError("database unreachable")

    with pytest.raises(LifespanFailure, match="database unreachable"):
        await trioserve.serve(crashes, Config(port=0))


async def test_listener_failure_after_startup_still_shuts_the_app_down() -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await trioserve.serve(lifespan_app(events), Config(port=port))
    assert events == ["startup", "shutdown"]
