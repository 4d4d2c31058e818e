"""A real deployment: nginx (TLS, loopback) in front of trioserve --workers 2 over a unix socket.

Checks what operators rely on: the app sees the real client and scheme through nginx, a SIGHUP
rolling restart under load loses no request, and SIGTERM drains in-flight requests. nginx comes
from Debian's package (.ci/run installs it when missing).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from ._helpers import PROCESS_TIMEOUT, ServerProcess, children, wait_for

# Every test here starts nginx and two workers: about 2 s each.
pytestmark = pytest.mark.slow

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

APP = textwrap.dedent(
    """
    import json, os
    import trio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            open("slow-started", "w").close()  # the test waits for this before signalling
            await trio.sleep(1.5)
        body = json.dumps({
            "client": scope["client"], "scheme": scope["scheme"], "pid": os.getpid(),
            "host": dict(scope["headers"]).get(b"host", b"").decode(),
        }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    """
)

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream trioserve {{ server unix:{socket}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        location / {{
            proxy_pass http://trioserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, ssl.SSLContext]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    (tmp_path / "deployedapp.py").write_text(APP)
    sock = tmp_path / "trioserve.sock"
    server = ServerProcess(
        [
            *(sys.executable, "-m", "trioserve", "deployedapp:app", "--workers", "2"),
            *("--uds", str(sock), "--proxy-headers", "--forwarded-allow-ips", "unix"),
            *("--graceful-timeout", "10", "--no-access-log"),
        ],
        cwd=tmp_path,
    )
    port = free_port()
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp_path, socket=sock, port=port))
    nginx = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://localhost:{port}"
    try:
        assert server.wait_for_announce() == f"http+unix:{sock}"
        wait_for(lambda: len(children(server.pid)) == 2)

        def answering() -> bool:
            try:
                return httpx.get(url + "/", verify=context, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answering)
        yield server, url, context
    finally:
        nginx.terminate()
        nginx.wait(10)
        if server.process.poll() is None:
            server.stop(signal.SIGTERM)


def test_app_sees_the_real_client_and_scheme(
    deployment: tuple[ServerProcess, str, ssl.SSLContext],
) -> None:
    _, url, context = deployment
    seen = httpx.get(url + "/who", verify=context, timeout=10).json()
    assert seen["client"][0] == "127.0.0.1"  # not None, as a unix-socket peer would be
    assert seen["scheme"] == "https"
    assert re.fullmatch(r"localhost(:\d+)?", seen["host"])


def test_rolling_restart_under_load_loses_no_request(
    deployment: tuple[ServerProcess, str, ssl.SSLContext],
) -> None:
    server, url, context = deployment
    old = children(server.pid)
    failures: list[str] = []
    pids: set[int] = set()
    done = 0
    busy = threading.Event()
    rolled = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        # Never retries. Runs through the whole restart, then on until the new workers have
        # answered too: at least 500 requests per client, at most 5,000 or 60 s.
        nonlocal done
        transport = httpx.HTTPTransport(verify=context, retries=0)
        deadline = time.monotonic() + 60
        with httpx.Client(verify=context, timeout=10, transport=transport) as http:
            for count in range(5000):
                with lock:
                    if count >= 500 and rolled.is_set() and pids - old:
                        break
                if time.monotonic() > deadline:
                    break
                try:
                    response = http.get(url + "/")
                    response.raise_for_status()
                    with lock:
                        pids.add(response.json()["pid"])
                        done += 1
                        if done >= 40:
                            busy.set()
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(4)]  # 2,000 requests at least
    for thread in threads:
        thread.start()
    assert busy.wait(PROCESS_TIMEOUT)  # the restart begins under load
    server.process.send_signal(signal.SIGHUP)
    server.wait_for_line("Rolling restart complete", timeout=60)
    wait_for(lambda: not (children(server.pid) & old), timeout=60)
    rolled.set()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert done >= 2000
    assert pids & old  # the old workers served before the restart...
    assert pids - old  # ...and the new ones after it


def test_sigterm_drains_in_flight_requests(
    deployment: tuple[ServerProcess, str, ssl.SSLContext], tmp_path: Path
) -> None:
    server, url, context = deployment
    results: list[int] = []
    thread = threading.Thread(
        target=lambda: results.append(
            httpx.get(url + "/slow", verify=context, timeout=10).status_code
        )
    )
    thread.start()
    # Signal only once the request is in a worker's hands.
    wait_for(lambda: (tmp_path / "slow-started").exists())
    status, err = server.stop(signal.SIGTERM)
    thread.join(20)
    assert results == [200]
    assert status == 0
    assert "All workers stopped" in err
