"""Micro-benchmark of the HTTP/1.1 sans-IO protocol: parse a request, frame a response, repeat.

    python scripts/bench_protocol.py [CYCLES]

Times CYCLES keep-alive request/response cycles of ``ServerProtocol`` (h11) and of
``FastProtocol`` (httptools; the chunked POST takes its h11 fallback) (no I/O): one GET with
typical browser-ish headers, a small response with a known length, then ``start_next_cycle``.
Also one chunked POST body per cycle in the second figure. Prints cycles per second (best of
5, in CPU time of this process, so that other load on the machine counts less).
"""

from __future__ import annotations

import sys
import time

from trioserve._h11._fast import FastProtocol, PythonProtocol
from trioserve._h11._protocol import ServerProtocol
from trioserve._http._events import END_OF_BODY, NEED_DATA

GET = (
    b"GET /index.html?x=1 HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: bench/1.0\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n"
)
POST = (
    b"POST /upload HTTP/1.1\r\nHost: localhost:8000\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
)
HEADERS = [(b"content-type", b"text/plain")]
BODY = b"hello, world"


def run(request: bytes, cycles: int, parser: type[ServerProtocol]) -> float:
    proto = parser(max_header_size=16384, max_body_size=1 << 20, date=lambda: b"x")
    start = time.process_time()
    for _ in range(cycles):
        proto.receive_data(request)
        proto.next_event()
        if not proto.request_bodyless:
            while proto.next_event() not in (END_OF_BODY, NEED_DATA):
                pass
        out = proto.send_response(200, HEADERS, body_length=len(BODY))
        out += proto.send_data(BODY) + proto.send_end()
        if not proto.start_next_cycle():
            raise SystemExit("connection not kept alive")
    return time.process_time() - start


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for parser, cls in (
        ("h11", ServerProtocol),
        ("httptools", FastProtocol),
        ("python", PythonProtocol),
    ):
        for name, request in (("GET", GET), ("chunked POST", POST)):
            best = min(run(request, cycles, cls) for _ in range(5))
            label = f"{parser} {name}"
            print(f"{label:>22}: {cycles} cycles in {best:.3f} s ({cycles / best:,.0f}/s)")


if __name__ == "__main__":
    main()
