"""Helpers for the tests that run a real server: clients over loopback, servers in this process
(`serving`) or in another one (`ServerProcess`: ``python -m trioserve``), and bounded waits.

Every wait here is bounded and waits for something observable (a log line, a process state),
so a regression fails with a message instead of hanging or passing by luck.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio
import trio.testing

import trioserve
from trioserve import Config
from trioserve._readiness import Readiness

T = TypeVar("T")

# How long a test waits for a server process to do something before failing. Generous: the
# test machines are shared and slow (a worker process takes ~0.5 s to start there).
PROCESS_TIMEOUT = 20.0


# -- the server's keep-alive epoll ----------------------------------------------------------------


@asynccontextmanager
async def running_readiness() -> AsyncIterator[Readiness]:
    """A :class:`Readiness` whose task runs for the block (stopped, and checked, after it)."""
    readiness = Readiness()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(readiness.run)
        await trio.testing.wait_all_tasks_blocked()
        assert readiness.running
        yield readiness
        nursery.cancel_scope.cancel()
    assert not readiness.running


# -- clients --------------------------------------------------------------------------------------


def http_url(address: tuple[str, int], path: str = "/", scheme: str = "http") -> str:
    """``http://host:port/path`` for a bound address (brackets around an IPv6 host)."""
    host, port = address
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


async def get(
    where: str | tuple[str, int],
    path: str = "",
    *,
    method: str = "GET",
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
    **kwargs: Any,
) -> httpx.Response:
    """One request with httpx's async client, which runs on trio itself (no thread needed).

    ``where`` is a bound address (``path`` defaults to ``/``) or a URL (``path`` is appended);
    ``kwargs`` go to ``AsyncClient.request`` (``headers=``, ``content=``...).
    """
    url = http_url(where, path or "/") if isinstance(where, tuple) else where + path
    async with httpx.AsyncClient(timeout=10, transport=transport, verify=verify) as client:
        return await client.request(method, url, **kwargs)


async def receive_once_blocked(
    stream: trio.abc.ReceiveStream, size: int, received: bytearray
) -> None:
    """Read ``size`` bytes from ``stream`` into ``received``, starting only once every other task
    waits: a writer that has to wait for room must then go on after its partial writes."""
    await trio.testing.wait_all_tasks_blocked()
    while len(received) < size:
        received.extend(await stream.receive_some(1 << 20))


async def run_in_scope(scope: trio.CancelScope, run: Callable[[], Any]) -> None:
    """``await run()`` inside ``scope`` (to start a background task that can be cancelled alone,
    such as the server's IdleTimer next to a connection under test)."""
    with scope:
        await run()


async def in_thread(function: Callable[[], T]) -> T:
    """Run a blocking client (httpx's sync client, the websockets library) in a worker thread,
    so that the server keeps running in this one."""
    return await trio.to_thread.run_sync(function)


@asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[tuple[trioserve.Server, str]]:
    """Serve ``app`` on 127.0.0.1, port 0, for the block; yield the server and ``host:port``.

    (``harness.open_server`` puts a stub in front of the app and takes no ``Config`` options,
    which these tests need.)
    """
    server = trioserve.Server(app, Config(port=0, access_log=False, **config))
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)
        yield server, f"{host}:{port}"
        nursery.cancel_scope.cancel()


# -- server processes -----------------------------------------------------------------------------


class ServerProcess:
    """A server process whose stderr is read line by line in a thread, so a test can wait for a
    log line (bounded) and the pipe never fills up however much the server logs."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        **popen: Any,
    ) -> None:
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        self.lines: list[str] = []
        self.url = ""
        self._eof = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, **popen: Any
    ) -> ServerProcess:
        """``python -m trioserve --port 0 ARGS``, once it announced its URL (``self.url``)."""
        server = cls(
            [sys.executable, "-m", "trioserve", "--port", "0", *args], cwd=cwd, env=env, **popen
        )
        try:
            server.wait_for_announce()
        except BaseException:
            server.kill()
            raise
        return server

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for line in self.process.stderr:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for_line(
        self, pattern: str, *, count: int = 1, timeout: float = PROCESS_TIMEOUT
    ) -> re.Match[str]:
        """The ``count``-th stderr line matching ``pattern`` (a regex, searched), waiting at most
        ``timeout`` s for it. Fails if the process closes its stderr (exits) first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else f"did not log it within {timeout:g} s"
                    raise AssertionError(
                        f"waited for {count} x {pattern!r} on stderr; the server {why}:\n"
                        + "".join(self.lines)
                    )
                self._changed.wait(left)

    def wait_for_announce(self) -> str:
        """Wait for the "serving ... on URL (Ctrl-C to stop)" line; return (and keep) its URL."""
        match = self.wait_for_line(r"serving .* on (\S+?)(?:,| \(Ctrl-C)")
        self.url = match.group(1)
        return self.url

    def stop(self, *signals: int, timeout: float = 30.0) -> tuple[int, str]:
        """Send ``signals`` (default none), wait for the exit; return the status and all stderr."""
        for signum in signals:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout)
        return status, self.stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)


def children(pid: int) -> set[int]:
    """The pids of a process's children."""
    result = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return {int(line) for line in result.stdout.split()}


def wait_for(predicate: Callable[[], object], timeout: float = PROCESS_TIMEOUT) -> None:
    """Poll ``predicate`` (every 50 ms, for at most ``timeout`` s) for a process-level state
    that no log line reports (which processes exist, a file appearing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
