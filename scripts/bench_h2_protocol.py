"""Micro-benchmark of the HTTP/2 sans-IO protocol (``H2Protocol``), in CPU time of the server side.

    python scripts/bench_h2_protocol.py [REQUESTS]

An ``h2`` client connection plays h2load: batches of 10 concurrent GETs (``-m10``) with
h2load's headers; the server side (timed) reads them, answers each with a small response (the
head, then the 13-byte body with END_STREAM, as ``H2Stream`` does) and serialises its frames.
The client reads the answers and credits its windows (not timed). The second figure is a
10 MiB body sent in 256 KiB pieces (``H2Stream.send_file``'s) to a client with 1 GiB windows,
as h2load's. Prints requests (and MB) per CPU-second of the server side, best of 5, so that
other load on the machine counts less.
"""

from __future__ import annotations

import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from trioserve._h2._protocol import H2Protocol, StreamOpened

REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":scheme", b"https"),
    (b":authority", b"127.0.0.1:8443"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]
RESPONSE_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
EXTRA = [(b"date", b"Fri, 04 Dec 2026 16:00:00 GMT"), (b"server", b"trioserve")]
BODY = b"Hello, world!"
BIG = 10 * 1024 * 1024
PIECE = 256 * 1024
FILE_HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"%d" % BIG)]
BATCH = 10


def _pair() -> tuple[h2.connection.H2Connection, H2Protocol]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 30) - 1})
    client.increment_flow_control_window((1 << 30) - 65_536)
    server = H2Protocol(clock=time.monotonic)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, server


def _client_reads(client: h2.connection.H2Connection, data: bytes) -> int:
    ended = 0
    for event in client.receive_data(data):
        if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
            client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            ended += 1
    return ended


def hello(requests: int) -> float:
    client, server = _pair()
    spent = 0.0
    stream_id = 1
    for _ in range(requests // BATCH):
        for _ in range(BATCH):
            client.send_headers(stream_id, REQUEST, end_stream=True)
            stream_id += 2
        data = client.data_to_send()
        start = time.process_time()
        for event in server.receive_data(data):
            assert type(event) is StreamOpened
            server.send_headers(
                event.stream_id, 200, RESPONSE_HEADERS, end_stream=False, extra=EXTRA
            )
            server.send_data(event.stream_id, BODY, end_stream=True)
        out = server.data_to_send()
        spent += time.process_time() - start
        if _client_reads(client, out) != BATCH:
            raise SystemExit("responses missing")
    return spent


def big_file(count: int) -> float:
    client, server = _pair()
    spent = 0.0
    payload = b"x" * PIECE
    for n in range(count):
        stream_id = 1 + 2 * n
        client.send_headers(stream_id, REQUEST, end_stream=True)
        data = client.data_to_send()
        start = time.process_time()
        server.receive_data(data)
        server.send_headers(stream_id, 200, FILE_HEADERS, end_stream=False, extra=EXTRA)
        out = [server.data_to_send()]
        sent = 0
        while sent < BIG:
            piece = memoryview(payload)[: min(PIECE, BIG - sent)]
            queued = server.send_data(stream_id, piece, end_stream=sent + len(piece) >= BIG)
            assert queued == len(piece)
            sent += queued
            out.append(server.data_to_send())
        spent += time.process_time() - start
        if _client_reads(client, b"".join(out)) != 1:
            raise SystemExit("the file's stream did not end")
        client.receive_data(server.data_to_send())
    return spent


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    best = min(hello(requests) for _ in range(5))
    print(f"  hello (-m10): {requests} requests in {best:.3f} CPU s ({requests / best:,.0f}/s)")
    files = 10
    best = min(big_file(files) for _ in range(5))
    rate = files * BIG / best / 1e6
    print(f"10 MiB bodies: {files} in {best:.3f} CPU s ({rate:,.0f} MB/s)")


if __name__ == "__main__":
    main()
