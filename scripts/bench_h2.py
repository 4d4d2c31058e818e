"""The HTTP/2 clients of ``scripts/bench.py``: ``h2load`` (run and parsed) and idle h2c connections.

``h2load`` (Debian package nghttp2-client) is to HTTP/2 what wrk is to HTTP/1.1: ``-c`` client
connections, ``-m`` concurrent streams on each, ``-D`` seconds. It negotiates h2 by ALPN on an
``https://`` URL and speaks cleartext h2 with prior knowledge on an ``http://`` one. It reports
the mean time per request (min, max, mean, sd), not percentiles.

The idle connections are opened with the ``h2`` library (a dependency of trioserve): preface and
SETTINGS, one GET answered in full (so the server has set up everything a connection keeps),
SETTINGS acknowledged, then nothing: what a browser's connection looks like between pages.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["H2BenchError", "H2LoadStats", "open_idle_h2", "parse_h2load", "run_h2load"]

H2LOAD_GRACE = 30.0  # seconds h2load may run beyond its -D before it is killed
IDLE_SOCKET_TIMEOUT = 5.0  # seconds for one idle connection's request to be answered

_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class H2BenchError(Exception):
    """h2load failed or its output could not be read; an idle connection was not answered."""


@dataclass
class H2LoadStats:
    requests: int  # completed requests (done)
    succeeded: int
    failed: int  # failed + errored + timeout
    non_2xx_3xx: int
    duration_s: float
    requests_per_sec: float
    transfer_bytes_per_sec: float
    mean_ms: float  # mean time for request
    protocol: str  # "Application protocol:" (h2 or h2c)


def parse_h2load(output: str) -> H2LoadStats:
    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise H2BenchError(f"could not find {pattern!r} in h2load output:\n{output}")
        return match

    finished = need(r"^finished in ([\d.]+)s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s")
    counts = need(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed,"
        r" (\d+) errored, (\d+) timeout"
    )
    codes = need(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
    mean = need(r"^time for request:\s+[\d.]+(?:us|ms|s)\s+[\d.]+(?:us|ms|s)\s+([\d.]+)(us|ms|s)")
    protocol = need(r"^Application protocol: (\S+)")
    return H2LoadStats(
        requests=int(counts.group(3)),
        succeeded=int(counts.group(4)),
        failed=int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7)),
        non_2xx_3xx=int(codes.group(3)) + int(codes.group(4)),
        duration_s=float(finished.group(1)),
        requests_per_sec=float(finished.group(2)),
        transfer_bytes_per_sec=float(finished.group(3)) * _SIZE_UNITS[finished.group(4)],
        mean_ms=float(mean.group(1)) * _TIME_UNITS_MS[mean.group(2)],
        protocol=protocol.group(1),
    )


def run_h2load(
    url: str, clients: int, streams: int, duration: int, prefix: Sequence[str] = ()
) -> H2LoadStats:
    """``h2load -c CLIENTS -m STREAMS -D DURATION URL`` (after ``prefix``, e.g. a taskset)."""
    cmd = [*prefix, "h2load", f"-c{clients}", f"-m{streams}", f"-D{duration}", url]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration + H2LOAD_GRACE,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise H2BenchError(f"h2load did not finish within {duration + H2LOAD_GRACE:.0f} s") from exc
    except FileNotFoundError as exc:
        raise H2BenchError("h2load not found (apt-get install nghttp2-client)") from exc
    if done.returncode != 0:
        raise H2BenchError(f"h2load exited with {done.returncode}: {done.stderr.strip()}")
    return parse_h2load(done.stdout)


def _answered(sock: socket.socket, port: int, host: str) -> None:
    """Send the preface and one GET on ``sock``; return once the response ended."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", f"{host}:{port}")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    status = None
    while True:
        data = sock.recv(65536)
        if not data:
            raise H2BenchError("server closed an idle-test h2 connection before answering")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                sock.sendall(conn.data_to_send())  # the SETTINGS ack among them
                if status != b"200":
                    raise H2BenchError(f"idle-test h2 request answered {status!r}")
                return
            elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                raise H2BenchError(f"idle-test h2 request failed: {event}")
        sock.sendall(conn.data_to_send())


def open_idle_h2(host: str, port: int, count: int) -> list[socket.socket]:
    """Open ``count`` cleartext h2 connections, one answered GET each, one after the other."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=IDLE_SOCKET_TIMEOUT)
            socks.append(sock)
            _answered(sock, port, host)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
