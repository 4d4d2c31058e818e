"""HTTP/2 end to end: real clients (httpx, curl, nghttp, headless Chromium) over loopback sockets.

One trustme CA per module; servers run in this process on 127.0.0.1 port 0, with the access log
as JSON lines collected by a handler, so a test can tell which protocol served each request.
External clients run as subprocesses through ``trio.run_process``, so the server keeps running.
A client binary that is missing is a failure, not a skip: ``scripts/test-deps.sh`` installs
them (Debian packages curl, nghttp2-client and chromium).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import ssl
import struct
import subprocess
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trioserve import Config, Server, StaticFiles, TLSConfig
from trioserve._h2._connection import H2Connection

# The HTTP/2 client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Far bigger than the flow-control windows of httpx (h2's default, 65,535) and of nghttp with
# `-w 16 -W 16` (64 KiB), so a byte-exact copy proves the server waited for WINDOW_UPDATEs
# instead of overrunning or stalling; not a round size, so the last DATA frame is a short one.
BIG_FILE_SIZE = 4 * 1024 * 1024 + 12345
# The page Chromium loads: this many assets of each kind (40 in all).
PAGE_CSS, PAGE_JS, PAGE_IMAGES = 12, 12, 16
# A subprocess client gets this long before the test fails (generous: 2 shared cores).
CLIENT_TIMEOUT = 60.0


# -- fixtures: CA, certificate, the site ----------------------------------------------------------


@dataclass(frozen=True)
class Site:
    root: Path
    certfile: Path
    cafile: Path
    spki_hash: str  # base64 SHA-256 of the leaf's public key, for Chromium's pin
    big: bytes


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _png(rgb: tuple[int, int, int], size: int = 8) -> bytes:
    """A solid ``size`` x ``size`` RGB PNG (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _page() -> str:
    """index.html: PAGE_CSS stylesheets, PAGE_JS scripts and PAGE_IMAGES images; on load, a
    script writes what it saw arrive into ``#result`` (so the dumped DOM proves it rendered)."""
    css = "".join(f'<link rel="stylesheet" href="/css/s{i}.css">' for i in range(PAGE_CSS))
    divs = "".join(f'<div class="c{i}"></div>' for i in range(PAGE_CSS))
    images = "".join(f'<img src="/img/i{i}.png" alt="">' for i in range(PAGE_IMAGES))
    scripts = "".join(f'<script src="/js/j{i}.js"></script>' for i in range(PAGE_JS))
    check = (
        "window.addEventListener('load', () => {"
        " const css = [...document.querySelectorAll('div[class^=c]')]"
        "   .filter((d, i) => getComputedStyle(d).width === (i + 1) + 'px').length;"
        " const img = [...document.images].filter(i => i.complete && i.naturalWidth === 8).length;"
        " document.getElementById('result').textContent ="
        "   `css=${css} js=${window.scriptsRun} img=${img}`;"
        "});"
    )
    return (
        f"<!doctype html><html><head><title>h2</title>{css}</head><body>"
        f'<p id="result">not loaded</p>{divs}{images}{scripts}<script>{check}</script>'
        "</body></html>"
    )


@pytest.fixture(scope="module")
def site(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Site:
    directory = tmp_path_factory.mktemp("h2site")
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    certfile = directory / "server.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cafile = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    root = directory / "root"
    for sub in ("css", "js", "img"):
        (root / sub).mkdir(parents=True)
    (root / "index.html").write_text(_page())
    (root / "favicon.ico").write_bytes(_png((0, 0, 0)))
    for i in range(PAGE_CSS):
        (root / "css" / f"s{i}.css").write_text(f".c{i} {{ width: {i + 1}px; height: 1px }}\n")
    for i in range(PAGE_JS):
        (root / "js" / f"j{i}.js").write_text("window.scriptsRun = (window.scriptsRun || 0) + 1;\n")
    for i in range(PAGE_IMAGES):
        (root / "img" / f"i{i}.png").write_bytes(_png((i * 15, 255 - i * 15, 128)))
    big = os.urandom(BIG_FILE_SIZE)
    (root / "big.bin").write_bytes(big)
    return Site(
        root=root,
        certfile=certfile,
        cafile=cafile,
        spki_hash=base64.b64encode(hashlib.sha256(spki).digest()).decode(),
        big=big,
    )


# -- the server and its access log ----------------------------------------------------------------


class AccessLines(logging.Handler):
    """Collects the JSON access-log records of the server under test.

    A stream logs its line after its last byte is sent, so a client can have its answer before
    the line exists: a test waits for the lines it expects (:meth:`wait_for`) before it stops
    the server, or the cancellation could beat the line.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        # Called in trio's thread: the server under test runs in this process.
        self.records.append(json.loads(record.getMessage()))
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait (bounded) until at least ``count`` lines are logged."""
        with trio.fail_after(timeout):
            while len(self.records) < count:
                self._changed = trio.Event()
                await self._changed.wait()

    def versions(self) -> dict[str, str]:
        """Path -> http_version of every request logged (one line per path expected)."""
        return {r["path"]: r["http_version"] for r in self.records}


@pytest.fixture
def access() -> Iterator[AccessLines]:
    logger = logging.getLogger("trioserve.access")
    handler = AccessLines()
    level, logger_disabled = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = logger_disabled


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers with what the request looked like: protocol, scheme, body length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps(
        {"http_version": scope["http_version"], "scheme": scope["scheme"], "body": size}
    ).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def site_app(root: Path) -> Any:
    """``/echo`` goes to :func:`echo_app`, every other path to StaticFiles on ``root``."""
    static = StaticFiles(root)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/echo":
            await echo_app(scope, receive, send)
        else:
            await static(scope, receive, send)

    return app


@asynccontextmanager
async def running(site: Site, *, tls: bool = True, **config: Any) -> AsyncIterator[int]:
    """Serve the site on 127.0.0.1, port 0 (TLS with the module's certificate unless ``tls`` is
    false), JSON access log on; yield the port."""
    settings = TLSConfig(certfile=str(site.certfile), keyfile=str(site.certfile)) if tls else None
    server = Server(
        site_app(site.root),
        Config(
            host="127.0.0.1", port=0, access_log=True, access_log_json=True, tls=settings, **config
        ),
    )
    async with trio.open_nursery() as nursery:
        [(_, port)] = await nursery.start(server.serve)
        yield port
        nursery.cancel_scope.cancel()


def client_context(site: Site, *alpn: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(site.cafile))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def need(program: str) -> str:
    """The path of a client program; fails (does not skip) when it is missing."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: run scripts/test-deps.sh (as root)")
    return path


async def run(*argv: str, timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run a client program to completion (bounded); fail with its output if it fails."""
    with trio.fail_after(timeout):
        result = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-2000:])
    return result


# -- httpx -----------------------------------------------------------------------------------------


async def test_httpx_negotiates_h2_by_alpn_and_the_app_sees_http_version_2(
    site: Site, access: AccessLines
) -> None:
    async with (
        running(site) as port,
        httpx.AsyncClient(http2=True, verify=client_context(site)) as client,
    ):
        response = await client.post(f"https://localhost:{port}/echo", content=b"x" * 300_000)
        await access.wait_for(1)
    assert response.http_version == "HTTP/2"
    # A request body bigger than the 65,535-byte initial window arrives whole.
    assert response.json() == {"http_version": "2", "scheme": "https", "body": 300_000}
    assert access.versions() == {"/echo": "2"}


async def test_an_h2_connection_over_tls_reads_through_the_servers_keep_alive_epoll(
    site: Site,
) -> None:
    # Found in review: an ALPN-h2 connection's transport was made without the server's
    # Readiness, so its reads stayed with trio's one-shot wait (an epoll_ctl per read).
    server = Server(
        site_app(site.root),
        Config(
            host="127.0.0.1",
            port=0,
            access_log=False,
            tls=TLSConfig(certfile=str(site.certfile), keyfile=str(site.certfile)),
        ),
    )
    async with trio.open_nursery() as nursery:
        [(_, port)] = await nursery.start(server.serve)
        async with httpx.AsyncClient(http2=True, verify=client_context(site)) as client:
            for _ in range(3):
                response = await client.post(f"https://localhost:{port}/echo", content=b"x")
                assert response.http_version == "HTTP/2"
                assert response.json()["body"] == 1
            # One connection, its socket in the server's epoll (from its first frame on).
            [connection] = server.state.connections
            assert isinstance(connection, H2Connection)
            assert connection._transport.watched
            assert server.state.readiness.running
        nursery.cancel_scope.cancel()


async def test_httpx_prior_knowledge_h2c_on_a_cleartext_port(
    site: Site, access: AccessLines
) -> None:
    async with (
        running(site, tls=False) as port,
        httpx.AsyncClient(http1=False, http2=True) as client,
    ):
        response = await client.get(f"http://127.0.0.1:{port}/echo")
        await access.wait_for(1)
    assert response.http_version == "HTTP/2"
    assert response.json() == {"http_version": "2", "scheme": "http", "body": 0}
    assert access.versions() == {"/echo": "2"}


async def test_httpx_multiplexes_concurrent_requests_on_one_connection(
    site: Site, access: AccessLines
) -> None:
    paths = [f"/img/i{i}.png" for i in range(PAGE_IMAGES)]
    bodies: dict[str, bytes] = {}
    async with (
        running(site) as port,
        httpx.AsyncClient(http2=True, verify=client_context(site)) as client,
    ):

        async def fetch(path: str) -> None:
            response = await client.get(f"https://localhost:{port}{path}")
            assert response.status_code == 200
            assert response.http_version == "HTTP/2"
            bodies[path] = response.content

        async with trio.open_nursery() as nursery:
            for path in paths:
                nursery.start_soon(fetch, path)
        await access.wait_for(len(paths))
    assert bodies == {p: (site.root / p[1:]).read_bytes() for p in paths}
    assert {r["http_version"] for r in access.records} == {"2"}
    # One connection: every line comes from the same client address.
    assert len({r["client"] for r in access.records}) == 1
    assert len(access.records) == len(paths)


async def test_static_file_bigger_than_the_windows_arrives_byte_exact_over_h2(
    site: Site, access: AccessLines
) -> None:
    async with (
        running(site) as port,
        httpx.AsyncClient(
            http2=True, verify=client_context(site), timeout=CLIENT_TIMEOUT
        ) as client,
    ):
        response = await client.get(f"https://localhost:{port}/big.bin")
        partial = await client.get(
            f"https://localhost:{port}/big.bin", headers={"range": "bytes=1000000-1999999"}
        )
        await access.wait_for(2)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.headers["content-length"] == str(BIG_FILE_SIZE)
    assert response.content == site.big
    assert partial.status_code == 206
    assert partial.content == site.big[1_000_000:2_000_000]
    assert [(r["status"], r["http_version"]) for r in access.records] == [(200, "2"), (206, "2")]


# -- curl and nghttp -------------------------------------------------------------------------------


async def test_curl_http2_over_tls(site: Site, access: AccessLines, tmp_path: Path) -> None:
    curl = need("curl")
    version = (await run(curl, "-V")).stdout.decode()
    assert "HTTP2" in version, version
    out = tmp_path / "big.bin"
    async with running(site) as port:
        result = await run(
            curl, "-sS", "--http2", "--cacert", str(site.cafile), "-o", str(out),
            "-w", "%{http_version} %{response_code}", f"https://localhost:{port}/big.bin",
        )  # fmt: skip
        await access.wait_for(1)
    assert result.stdout == b"2 200"
    assert out.read_bytes() == site.big
    assert access.versions() == {"/big.bin": "2"}


async def test_curl_http2_prior_knowledge_on_cleartext(site: Site, access: AccessLines) -> None:
    curl = need("curl")
    async with running(site, tls=False) as port:
        result = await run(
            curl, "-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{response_code}",
            "--data-binary", "hello", f"http://127.0.0.1:{port}/echo",
        )  # fmt: skip
        await access.wait_for(1)
    body, _, status = result.stdout.rpartition(b"\n")
    assert status == b"2 200"
    assert json.loads(body) == {"http_version": "2", "scheme": "http", "body": 5}
    assert access.versions() == {"/echo": "2"}


async def test_nghttp_fetches_many_streams_concurrently(site: Site, access: AccessLines) -> None:
    nghttp = need("nghttp")
    paths = [f"/css/s{i}.css" for i in range(PAGE_CSS)] + ["/big.bin"]
    async with running(site) as port:
        # -n: discard bodies; -s: per-stream statistics; -w/-W 16: 64 KiB windows, so the big
        # file needs many WINDOW_UPDATEs while the small streams go on beside it.
        result = await run(
            nghttp, "-ns", "-w", "16", "-W", "16",
            *(f"https://localhost:{port}{p}" for p in paths),
        )  # fmt: skip
        await access.wait_for(len(paths))
    # The statistics table: one row per stream, "id  responseEnd  requestStart  process  code
    # size  request path".
    rows = re.findall(
        r"^\s*(\d+)\s+\+\S+\s+\+\S+\s+\S+\s+(\d{3})\s+\S+\s+(\S+)$", result.stdout.decode(), re.M
    )
    assert sorted((path, code) for _, code, path in rows) == sorted((p, "200") for p in paths)
    assert len({stream for stream, _, _ in rows}) == len(paths)
    assert sorted(access.versions()) == sorted(paths)
    assert {(r["status"], r["http_version"]) for r in access.records} == {(200, "2")}
    assert len({r["client"] for r in access.records}) == 1  # all on one connection
    big = next(r for r in access.records if r["path"] == "/big.bin")
    assert big["bytes"] == BIG_FILE_SIZE


# -- http2 off, and both protocols side by side ----------------------------------------------------


async def alpn_choice(port: int, context: ssl.SSLContext) -> str | None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    try:
        await stream.do_handshake()
        return stream.selected_alpn_protocol()
    finally:
        await stream.aclose()


async def test_alpn_offers_h2_first_when_http2_is_on(site: Site) -> None:
    async with running(site) as port:
        assert await alpn_choice(port, client_context(site, "h2", "http/1.1")) == "h2"
        assert await alpn_choice(port, client_context(site, "http/1.1")) == "http/1.1"


async def test_http2_off_alpn_offers_only_http11(site: Site, access: AccessLines) -> None:
    async with running(site, http2=False) as port:
        assert await alpn_choice(port, client_context(site, "h2", "http/1.1")) == "http/1.1"
        async with httpx.AsyncClient(http2=True, verify=client_context(site)) as client:
            response = await client.get(f"https://localhost:{port}/echo")
        await access.wait_for(1)
    assert response.http_version == "HTTP/1.1"
    assert response.json()["http_version"] == "1.1"
    assert access.versions() == {"/echo": "1.1"}


async def test_http2_off_cleartext_preface_gets_400(site: Site) -> None:
    async with running(site, tls=False, http2=False) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(PREFACE)
            answer = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_http2_on_cleartext_preface_gets_server_settings(site: Site) -> None:
    async with running(site, tls=False) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            with trio.fail_after(10):
                first = await stream.receive_some(9)
    # The server's first frame is SETTINGS (type 4) on stream 0 (RFC 9113 section 3.4).
    assert first[3:4] == b"\x04", first
    assert first[5:9] == b"\x00\x00\x00\x00", first


async def test_h2_and_http11_clients_side_by_side_on_one_tls_port(
    site: Site, access: AccessLines
) -> None:
    seen: dict[str, str] = {}
    async with running(site) as port:

        async def fetch(name: str, http2: bool) -> None:
            async with httpx.AsyncClient(http2=http2, verify=client_context(site)) as client:
                for i in range(5):
                    response = await client.get(f"https://localhost:{port}/echo?{name}{i}")
                    assert response.status_code == 200
                    seen[f"{name}{i}"] = response.json()["http_version"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, "a", True)
            nursery.start_soon(fetch, "b", False)
            nursery.start_soon(fetch, "c", True)
        await access.wait_for(15)
    assert seen == {f"{n}{i}": ("1.1" if n == "b" else "2") for n in "abc" for i in range(5)}
    by_query = {r["query"]: r["http_version"] for r in access.records}
    assert by_query == seen


# -- headless Chromium -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_chromium_loads_a_page_of_40_assets_over_h2(
    site: Site, access: AccessLines, tmp_path: Path
) -> None:
    chromium = need("chromium")
    async with running(site) as port:
        result = await run(
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            # Trust exactly the test certificate's key, not every certificate.
            f"--ignore-certificate-errors-spki-list={site.spki_hash}",
            "--dump-dom", f"https://localhost:{port}/index.html",
        )  # fmt: skip
        await access.wait_for(1 + PAGE_CSS + PAGE_JS + PAGE_IMAGES)
    dom = result.stdout.decode()
    assert f"css={PAGE_CSS} js={PAGE_JS} img={PAGE_IMAGES}" in dom, (dom, result.stderr[-3000:])
    assets = (
        [f"/css/s{i}.css" for i in range(PAGE_CSS)]
        + [f"/js/j{i}.js" for i in range(PAGE_JS)]
        + [f"/img/i{i}.png" for i in range(PAGE_IMAGES)]
    )
    served = {r["path"]: (r["status"], r["http_version"]) for r in access.records}
    for path in ["/index.html", *assets]:
        assert served.get(path) == (200, "2"), (path, served)
    assert {version for _, version in served.values()} == {"2"}
