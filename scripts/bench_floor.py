"""The floor under trioserve's hello world: trio with nothing of ours but the keep-alive epoll.

Two servers for ``scripts/bench.py``'s hello-keepalive table (``trio-floor``,
``trio-protocol``), so that a run says how much of trioserve's time per request is trio's and
how much is trioserve's own Python:

- ``--mode loop``: one task per connection waits in trioserve's :class:`Readiness` (as
  trioserve's keep-alive wait does), reads, and writes a fixed 200 response. No parsing, no
  ASGI: trio's scheduler, the epoll and the two system calls per request.
- ``--mode protocol``: the same loop with trioserve's sans-IO HTTP/1.1 protocol (the default
  fast path) parsing each request and framing the response (status, headers, Date, Server),
  still without ASGI: what the protocol adds over the loop.

Neither is a server anyone should run: no limits, no timeouts, no errors answered, one
keep-alive GET at a time (a refused or bodied request closes the connection; pipelined requests
are not answered, as wrk never pipelines). Usage::

    python scripts/bench_floor.py --mode loop|protocol --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket

import trio

from trioserve._h11._fast import PythonProtocol
from trioserve._http._date import http_date
from trioserve._http._events import NEED_DATA, RequestHead
from trioserve._readiness import Readiness

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]
READ_SIZE = 65536


def _fixed_response() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 13\r\n"
        b"date: " + http_date() + b"\r\nserver: trioserve\r\n\r\n" + BODY
    )


async def _read(readiness: Readiness, fd: int) -> bytes:
    while True:
        await readiness.wait(fd)
        with contextlib.suppress(BlockingIOError):
            return os.read(fd, READ_SIZE)


async def serve_loop(sock: trio.socket.SocketType, readiness: Readiness) -> None:
    fd = sock.fileno()
    response = _fixed_response()  # a fixed Date: this mode measures the loop alone
    if not readiness.watch(fd):
        raise RuntimeError("the keep-alive epoll refused the socket")
    try:
        while data := await _read(readiness, fd):
            if data.endswith(b"\r\n\r\n"):
                os.write(fd, response)
    except OSError:
        pass
    finally:
        readiness.forget(fd)
        sock.close()


async def serve_protocol(sock: trio.socket.SocketType, readiness: Readiness) -> None:
    fd = sock.fileno()
    proto = PythonProtocol(max_header_size=16384, max_body_size=0, server_header=b"trioserve")
    if not readiness.watch(fd):
        raise RuntimeError("the keep-alive epoll refused the socket")
    try:
        while data := await _read(readiness, fd):
            proto.receive_data(data)
            event = proto.next_event()
            if event is NEED_DATA:
                continue
            if type(event) is not RequestHead or not proto.request_bodyless:
                break
            proto.next_event()  # the request's end
            out, _ = proto.send_whole_response(200, HEADERS, BODY)
            os.write(fd, out)
            if not proto.start_next_cycle():
                break
    except Exception:  # a refused request (or a client gone) ends the connection, nothing more
        pass
    finally:
        readiness.forget(fd)
        sock.close()


async def _accept(
    listener: trio.socket.SocketType, readiness: Readiness, nursery: trio.Nursery, mode: str
) -> None:
    serve = serve_loop if mode == "loop" else serve_protocol
    while True:
        sock, _ = await listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nursery.start_soon(serve, sock, readiness)


async def main(mode: str, host: str, port: int) -> None:
    readiness = Readiness()
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((host, port))
    listener.listen(1024)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readiness.run)
            nursery.start_soon(_accept, listener, readiness, nursery, mode)
            async for _ in signals:  # the bench stops its servers with SIGINT: end quietly
                nursery.cancel_scope.cancel()
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("loop", "protocol"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    trio.run(main, args.mode, args.host, args.port)
