"""Prometheus metrics (--metrics-bind): the exposition format, one server's figures over real
sockets, and the figures summed over --workers across a rolling restart."""

from __future__ import annotations

import math
import re
import signal
import socket
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme

import trioserve
from trioserve import Config, ConfigError
from trioserve._metrics import (
    BUCKETS,
    Metrics,
    decode_samples,
    encode_samples,
    is_cumulative,
    render,
    sum_samples,
)
from trioserve._tls import TLSConfig

from ._helpers import ServerProcess, children, wait_for

# -- the exposition format ------------------------------------------------------------------------


class _State:
    """What Metrics reads of the server's shared state."""

    def __init__(self) -> None:
        self.connections: set[object] = {"a", "b", 3}
        self.tls_handshakes = {"ok": 4, "failed": 1}
        self.websockets = 2
        self.refusals = {"per-ip": 3}
        self.evictions: dict[str, int] = {}


def metrics() -> Metrics:
    return Metrics(_State(), lambda c: "HTTP/1.1" if isinstance(c, str) else "HTTP/2")  # type: ignore[arg-type]


def scope(method: str = "GET", version: str = "1.1") -> dict[str, Any]:
    return {"method": method, "http_version": version}


def lines_of(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_render_prints_help_and_type_once_per_family_then_its_samples() -> None:
    m = metrics()
    m.record(scope(), 200, 5, 0.001)
    m.record(scope(), 204, 0, 0.001)
    m.record(scope("POST", "2"), 503, 7, 0.001)
    text = render(m.samples())
    assert text.endswith("\n")
    assert lines_of(text, "trioserve_requests_total") == [
        'trioserve_requests_total{method="GET",status="2xx",protocol="HTTP/1.1"} 2',
        'trioserve_requests_total{method="POST",status="5xx",protocol="HTTP/2"} 1',
    ]
    assert text.startswith(
        "# HELP trioserve_requests_total HTTP requests answered, by method, status class and "
        "protocol\n# TYPE trioserve_requests_total counter\n"
    )
    assert "# TYPE trioserve_request_duration_seconds histogram\n" in text
    assert text.count("# TYPE ") == text.count("# HELP ") == 9
    assert "trioserve_response_body_bytes_total 12\n" in text
    assert lines_of(text, "trioserve_connections_open") == [
        'trioserve_connections_open{protocol="HTTP/1.1"} 2',
        'trioserve_connections_open{protocol="HTTP/2"} 1',
        'trioserve_connections_open{protocol="setup"} 0',
    ]
    assert lines_of(text, "trioserve_tls_handshakes_total") == [
        'trioserve_tls_handshakes_total{result="failed"} 1',
        'trioserve_tls_handshakes_total{result="ok"} 4',
    ]
    assert "trioserve_websockets_open 2\n" in text
    assert 'trioserve_connections_refused_total{reason="per-ip"} 3\n' in text


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    m = metrics()
    for duration in (0.001, 0.005, 0.02, 3.0, 60.0):
        m.record(scope(), 200, 0, duration)
    text = render(m.samples())
    buckets = lines_of(text, "trioserve_request_duration_seconds_bucket")
    assert len(buckets) == len(BUCKETS) + 1
    assert buckets[0] == 'trioserve_request_duration_seconds_bucket{le="0.005"} 2'  # le: <=
    assert 'trioserve_request_duration_seconds_bucket{le="0.025"} 3' in buckets
    assert 'trioserve_request_duration_seconds_bucket{le="5.0"} 4' in buckets
    assert buckets[-1] == 'trioserve_request_duration_seconds_bucket{le="+Inf"} 5'
    assert "trioserve_request_duration_seconds_count 5\n" in text
    [total] = lines_of(text, "trioserve_request_duration_seconds_sum")
    assert math.isclose(float(total.split()[1]), 63.026)


def test_made_up_methods_are_counted_together_as_other() -> None:
    m = metrics()
    for method in ("BREW", "WHEN", "PROPFIND"):
        m.record(scope(method), 405, 0, 0.001)
    assert lines_of(render(m.samples()), "trioserve_requests_total") == [
        'trioserve_requests_total{method="other",status="4xx",protocol="HTTP/1.1"} 3'
    ]


def test_label_values_and_help_are_escaped() -> None:
    sample = ("trioserve_connections_refused_total", (("reason", 'a"b\\c\nd'),), 1)
    text = render([sample])
    assert 'trioserve_connections_refused_total{reason="a\\"b\\\\c\\nd"} 1\n' in text


def test_samples_sum_across_workers_and_only_counters_outlive_a_worker() -> None:
    one, two = metrics(), metrics()
    one.record(scope(), 200, 10, 0.001)
    two.record(scope(), 200, 5, 0.001)
    two.record(scope("POST"), 200, 5, 0.001)
    total = render(sum_samples(one.samples(), two.samples()))
    assert lines_of(total, "trioserve_requests_total") == [
        'trioserve_requests_total{method="GET",status="2xx",protocol="HTTP/1.1"} 2',
        'trioserve_requests_total{method="POST",status="2xx",protocol="HTTP/1.1"} 1',
    ]
    assert "trioserve_response_body_bytes_total 20\n" in total
    assert "trioserve_websockets_open 4\n" in total  # gauges of live workers add up too
    assert is_cumulative("trioserve_requests_total")
    assert is_cumulative("trioserve_request_duration_seconds_bucket")
    assert not is_cumulative("trioserve_requests_in_flight")
    assert not is_cumulative("trioserve_connections_open")


def test_snapshots_cross_processes_as_json_unchanged() -> None:
    m = metrics()
    m.record(scope("PUT", "2"), 201, 3, 0.2)
    samples = m.samples()
    assert decode_samples(encode_samples(samples)) == samples
    with pytest.raises(ValueError, match="not a metrics snapshot"):
        decode_samples(b'[["no_such_metric", [], 1]]')
    with pytest.raises(ValueError, match="Expecting value"):
        decode_samples(b"<html>")


def test_metrics_bind_is_checked() -> None:
    with pytest.raises(ConfigError, match="metrics_bind"):
        Config(metrics_bind="9100")
    assert Config(metrics_bind="unix:/run/m.sock").metrics_bind == "unix:/run/m.sock"


# -- one server -----------------------------------------------------------------------------------


async def counting_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/fail":
        raise RuntimeError("boom (on purpose)")
    status = 200 if scope["path"] in ("/", "/metrics") else 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"app:" + scope["path"].encode()})


def parse(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of an exposition."""
    figures = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            figures[series] = float(value)
    return figures


def requests_of(figures: dict[str, float], method: str, status: str, protocol: str) -> float:
    key = f'trioserve_requests_total{{method="{method}",status="{status}",protocol="{protocol}"}}'
    return figures.get(key, 0)


async def scrape(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def serve_with_metrics(nursery: trio.Nursery, **config: Any) -> tuple[str, str]:
    """A server with metrics on 127.0.0.1 port 0: (the app's URL, the metrics URL)."""
    server = trioserve.Server(
        counting_app, Config(port=0, access_log=False, metrics_bind="127.0.0.1:0", **config)
    )
    [(host, port)] = await nursery.start(server.serve)
    assert isinstance(server.metrics_bound, tuple)
    metrics_host, metrics_port = server.metrics_bound
    assert metrics_port != port
    return f"http://{host}:{port}", f"http://{metrics_host}:{metrics_port}/metrics"


async def test_requests_are_counted_by_method_status_class_and_protocol() -> None:
    async with trio.open_nursery() as nursery:
        app, metrics_url = await serve_with_metrics(nursery)
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(3):
                assert (await client.get(app + "/")).status_code == 200
            assert (await client.post(app + "/missing", content=b"x")).status_code == 404
            assert (await client.get(app + "/fail")).status_code == 500
        async with httpx.AsyncClient(timeout=10, http1=False, http2=True) as h2:
            for _ in range(2):
                response = await h2.get(app + "/")
                assert response.http_version == "HTTP/2"
            figures = await scrape(metrics_url)
            # The HTTP/2 client's connection is still open (handed over from HTTP/1.1: h2c).
            assert figures['trioserve_connections_open{protocol="HTTP/2"}'] == 1
        assert requests_of(figures, "GET", "2xx", "HTTP/1.1") == 3
        assert requests_of(figures, "POST", "4xx", "HTTP/1.1") == 1
        assert requests_of(figures, "GET", "5xx", "HTTP/1.1") == 1  # the server's own 500
        assert requests_of(figures, "GET", "2xx", "HTTP/2") == 2
        assert figures["trioserve_request_duration_seconds_count"] == 7
        assert figures['trioserve_request_duration_seconds_bucket{le="+Inf"}'] == 7
        # Bodies the app sent: "app:/" five times, "app:/missing" once.
        assert figures["trioserve_response_body_bytes_total"] == 5 * 5 + 12
        assert figures["trioserve_requests_in_flight"] == 0
        # Scrapes are not requests of the app.
        again = await scrape(metrics_url)
        assert requests_of(again, "GET", "2xx", "HTTP/1.1") == 3
        assert again["trioserve_request_duration_seconds_count"] == 7
        nursery.cancel_scope.cancel()


async def test_metrics_have_their_own_listener_and_the_app_keeps_its_paths() -> None:
    async with trio.open_nursery() as nursery:
        app, metrics_url = await serve_with_metrics(nursery)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(app + "/metrics")).text == "app:/metrics"
            assert (await client.get(metrics_url.replace("/metrics", "/"))).status_code == 404
            assert (await client.post(metrics_url)).status_code == 405
        nursery.cancel_scope.cancel()


async def test_requests_in_flight_are_a_gauge() -> None:
    entered, release = trio.Event(), trio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = trioserve.Server(slow, Config(port=0, access_log=False, metrics_bind="127.0.0.1:0"))
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)
        assert isinstance(server.metrics_bound, tuple)
        metrics_url = "http://{}:{}/metrics".format(*server.metrics_bound)

        async def request() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"http://{host}:{port}/")

        nursery.start_soon(request)
        await entered.wait()
        assert (await scrape(metrics_url))["trioserve_requests_in_flight"] == 1
        release.set()
        nursery.cancel_scope.cancel()


async def test_tls_handshakes_are_counted_by_result(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    tls = TLSConfig(certfile=str(cert), keyfile=str(key))
    async with trio.open_nursery() as nursery:
        app, metrics_url = await serve_with_metrics(nursery, tls=tls)
        port = int(app.rsplit(":", 1)[1])
        context = ssl.create_default_context()
        ca.configure_trust(context)
        async with httpx.AsyncClient(timeout=10, verify=context) as client:
            assert (await client.get(f"https://127.0.0.1:{port}/")).status_code == 200
        async with httpx.AsyncClient(timeout=10) as client:  # plain HTTP to the TLS port
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 400
        # A TLS record that is no handshake: the server gives up, counts, then closes.
        with trio.move_on_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"\x16\x03\x01\x00\x05hello")
                try:
                    while await stream.receive_some(1024):
                        pass
                except trio.BrokenResourceError:
                    pass  # reset: closed all the same
        figures = await scrape(metrics_url)
        assert figures['trioserve_tls_handshakes_total{result="ok"}'] == 1
        assert figures['trioserve_tls_handshakes_total{result="plain-http"}'] == 1
        assert figures['trioserve_tls_handshakes_total{result="failed"}'] == 1
        assert requests_of(figures, "GET", "2xx", "HTTP/1.1") == 1
        nursery.cancel_scope.cancel()


# -- workers --------------------------------------------------------------------------------------

WORKER_APP = textwrap.dedent(
    """
    import os

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
    """
)


def get_over_new_connection(url: str) -> int:
    """One GET on a fresh connection (so the kernel spreads them over the workers): the pid."""
    response = httpx.get(url + "/", headers={"Connection": "close"}, timeout=10)
    assert response.status_code == 200
    return int(response.text)


def scrape_sync(url: str) -> dict[str, float]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return parse(response.text)


@pytest.mark.slow
def test_workers_figures_are_summed_and_survive_a_rolling_restart(tmp_path: Path) -> None:
    (tmp_path / "metricsapp.py").write_text(WORKER_APP)
    server = ServerProcess.start(
        "metricsapp:app",
        "--no-access-log",
        "--workers",
        "2",
        "--metrics-bind",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    try:
        metrics_url = server.wait_for_line(r"Metrics at (\S+)").group(1)
        wait_for(lambda: len(children(server.pid)) == 2)
        old = children(server.pid)
        pids = set()
        sent = 0
        while pids != old or sent < 10:  # both workers serve some (bounded: the kernel spreads)
            pids.add(get_over_new_connection(server.url))
            sent += 1
            assert sent < 500
        with httpx.Client(timeout=10, http1=False, http2=True) as h2:
            for _ in range(3):
                assert h2.get(server.url + "/").http_version == "HTTP/2"
        figures = scrape_sync(metrics_url)
        assert requests_of(figures, "GET", "2xx", "HTTP/1.1") == sent
        assert requests_of(figures, "GET", "2xx", "HTTP/2") == 3
        assert figures["trioserve_request_duration_seconds_count"] == sent + 3

        # Requests no scrape has seen: once the old workers are gone, only their final
        # figures carry them.
        for _ in range(4):
            get_over_new_connection(server.url)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_line("Rolling restart complete")
        wait_for(lambda: len(children(server.pid)) == 2 and not children(server.pid) & old)
        after = scrape_sync(metrics_url)
        assert requests_of(after, "GET", "2xx", "HTTP/1.1") == sent + 4
        assert requests_of(after, "GET", "2xx", "HTTP/2") == 3
        assert after["trioserve_request_duration_seconds_count"] == sent + 7

        # Scraped all through a second roll: never backwards.
        old = children(server.pid)
        get_over_new_connection(server.url)
        server.process.send_signal(signal.SIGHUP)
        seen = [requests_of(after, "GET", "2xx", "HTTP/1.1")]
        while len(children(server.pid)) != 2 or children(server.pid) & old:
            seen.append(requests_of(scrape_sync(metrics_url), "GET", "2xx", "HTTP/1.1"))
            assert len(seen) < 2000
        server.wait_for_line("Rolling restart complete", count=2)
        seen.append(requests_of(scrape_sync(metrics_url), "GET", "2xx", "HTTP/1.1"))
        assert seen == sorted(seen)
        assert seen[-1] == sent + 5
    finally:
        status, log = server.stop(signal.SIGTERM)
    assert status == 0, log


def test_metrics_bind_in_use_fails_the_start(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    (tmp_path / "metricsapp.py").write_text(WORKER_APP)
    try:
        for workers in ("1", "2"):
            process = ServerProcess(
                [
                    *[sys.executable, "-m", "trioserve", "metricsapp:app", "--port", "0"],
                    *["--workers", workers, "--metrics-bind", f"127.0.0.1:{port}"],
                ],
                cwd=tmp_path,
            )
            status, log = process.stop(timeout=30)
            assert status != 0
            assert re.search(rf"127\.0\.0\.1:{port}", log), log
    finally:
        taken.close()
