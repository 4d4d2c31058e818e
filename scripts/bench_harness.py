#!/usr/bin/env python3
"""Start-and-stop cost of a function-scoped test server: harness against pytest-httpserver.

Each round starts a server, makes one request to it (so it is really up), and stops it; the
figure is the wall time of the whole round. Run: ``python scripts/bench_harness.py [--rounds N]``.
Needs pytest-httpserver (``pip install pytest-httpserver``) for its rows.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import time
from collections.abc import Callable

import trio

import harness


def harness_threaded() -> None:
    with harness.serving() as srv:
        srv.expect("GET", "/").respond(200)
        request(srv.host, srv.port)


def harness_trio() -> None:
    # Includes trio.run's own start-up, which a pytest-trio test pays anyway.
    async def main() -> None:
        async with harness.open_server() as srv:
            srv.expect("GET", "/").respond(200)
            await trio.to_thread.run_sync(request, srv.host, srv.port)

    trio.run(main)


def request(host: str, port: int) -> None:
    """One GET over a plain socket (an HTTP client library's own start-up cost stays out)."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass


def httpserver_round() -> None:
    from pytest_httpserver import HTTPServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request

    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/").respond_with_data("ok")
    server.start()
    try:
        request(server.host, server.port)
    finally:
        server.clear()
        if server.is_running():
            server.stop()


def measure(function: Callable[[], None], rounds: int) -> list[float]:
    function()  # warm up imports and the session CA
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    rows: list[tuple[str, Callable[[], None]]] = [
        ("harness.serving (thread)", harness_threaded),
        ("harness.open_server (trio)", harness_trio),
    ]
    try:
        import pytest_httpserver  # noqa: F401
    except ImportError:
        print("pytest-httpserver is not installed: its row is left out")
    else:
        rows.append(("pytest-httpserver", httpserver_round))
    print(f"{'server':<28} {'median ms':>10} {'p90 ms':>8}   (start + 1 request + stop)")
    for name, function in rows:
        times = sorted(measure(function, args.rounds))
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"{name:<28} {statistics.median(times):>10.1f} {p90:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
