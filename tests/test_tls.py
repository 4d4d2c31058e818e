"""TLS: handshakes, verification failures, mTLS, reload, dev certificates, bad certificate files.

One trustme CA per module; servers on 127.0.0.1 port 0; clients are trio's SSLStream with a real
h11 client, httpx, and (for the CLI) a subprocess.
"""

from __future__ import annotations

import json
import signal
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization

import trioserve
from trioserve import Config, ConfigError
from trioserve._cli import main
from trioserve._server import Server
from trioserve._tls import TLSConfig

from ._helpers import ServerProcess, get


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


def write_leaf(
    directory: Path, ca: trustme.CA, *hosts: str, name: str = "server"
) -> tuple[str, str]:
    leaf = ca.issue_cert(*(hosts or ("localhost", "127.0.0.1", "::1")))
    cert = directory / f"{name}.pem"
    key = directory / f"{name}-key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return str(cert), str(key)


def client_context(*cas: trustme.CA, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for authority in cas:
        authority.configure_trust(context)
    if maximum is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1, on purpose
            context.maximum_version = maximum
    return context


async def tls_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    body = json.dumps(
        {"scheme": scope["scheme"], "tls": scope["extensions"].get("tls")}, default=str
    ).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def running(tls: TLSConfig, app: Any = tls_app) -> AsyncIterator[tuple[Server, Any]]:
    server = Server(app, Config(port=0, access_log=False, tls=tls))
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        yield server, address
        nursery.cancel_scope.cancel()


class Client:
    """One HTTPS connection: trio's SSLStream and an h11 client."""

    def __init__(self, stream: trio.SSLStream[Any]) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        request = h11.Request(method="GET", target=path, headers=[("Host", "localhost")])
        await self.stream.send_all(self.h11.send(request) + self.h11.send(h11.EndOfMessage()))
        status, body = 0, b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.h11.start_next_cycle()
                return status, body
            else:
                raise AssertionError(event)


async def connect(
    address: tuple[str, int], context: ssl.SSLContext, hostname: str = "localhost"
) -> Client:
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, context, server_hostname=hostname)
    try:
        await stream.do_handshake()
    except BaseException:
        await tcp.aclose()
        raise
    return Client(stream)


def peer_issuer(client: Client) -> str:
    cert = client.stream.getpeercert()
    assert cert is not None
    return repr(cert["issuer"])


async def test_verified_handshake_gives_https_scope_with_tls_extension(
    tmp_path: Path, ca: trustme.CA
) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        client = await connect(address, client_context(ca))
        status, body = await client.get()
        assert status == 200
        seen = json.loads(body)
        assert seen["scheme"] == "https"
        tls = seen["tls"]
        assert tls["tls_version"] in (0x0303, 0x0304)
        assert isinstance(tls["cipher_suite"], int)
        assert tls["client_cert_chain"] == []
        assert tls["client_cert_name"] is None
        # Keep-alive over TLS.
        assert (await client.get())[0] == 200
        await client.stream.aclose()


async def test_httpx_trusts_the_server_with_the_ca(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        url = f"https://localhost:{address[1]}/"
        response = await get(url, verify=client_context(ca))
        assert response.status_code == 200
        assert response.json()["scheme"] == "https"


async def test_client_with_another_ca_refuses_the_server(
    tmp_path: Path, ca: trustme.CA, other_ca: trustme.CA
) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        with pytest.raises(trio.BrokenResourceError) as info:
            await connect(address, client_context(other_ca))
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


async def test_wrong_hostname_is_refused_by_the_client(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca, "example.org")
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        with pytest.raises(trio.BrokenResourceError) as info:
            await connect(address, client_context(ca), hostname="localhost")
        assert "hostname" in str(info.value.__cause__).lower() or "match" in str(
            info.value.__cause__
        )


async def test_minimum_version_refuses_older_clients(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        # Minimum 1.2 (the default): a TLS 1.1 client is refused, a TLS 1.2 client is served.
        with pytest.raises(trio.BrokenResourceError):
            await connect(address, client_context(ca, maximum=ssl.TLSVersion.TLSv1_1))
        client = await connect(address, client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))
        assert (await client.get())[0] == 200
        await client.stream.aclose()
    tls = TLSConfig(certfile=certfile, keyfile=keyfile, min_version="1.3")
    async with running(tls) as (_, address):
        with pytest.raises(trio.BrokenResourceError):
            await connect(address, client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))
        client = await connect(address, client_context(ca))
        assert (await client.get())[0] == 200
        await client.stream.aclose()


async def test_mtls_required_refuses_clients_without_a_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    ca_file = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = TLSConfig(
        certfile=certfile, keyfile=keyfile, ca_certs=str(ca_file), client_cert="required"
    )
    async with running(tls) as (_, address):
        # Without a certificate: the server aborts the handshake (with TLS 1.3 the client learns
        # it on its first read), so no HTTP response ever arrives.
        got_response = False
        try:
            client = await connect(address, client_context(ca))
        except trio.BrokenResourceError:
            pass  # TLS 1.2: refused during the handshake itself
        else:
            try:
                await client.get()
                got_response = True
            except trio.BrokenResourceError:
                pass
            await client.stream.transport_stream.aclose()
        assert not got_response

        # With one: served, and the app sees it.
        leaf = ca.issue_cert("alice@example.org", common_name="alice")
        context = client_context(ca)
        leaf.configure_cert(context)
        client = await connect(address, context)
        status, body = await client.get()
        assert status == 200
        tls_info = json.loads(body)["tls"]
        assert tls_info["client_cert_chain"][0] == leaf.cert_chain_pems[0].bytes().decode()
        assert "CN=alice" in tls_info["client_cert_name"]
        await client.stream.aclose()


def test_client_certificates_without_ca_certs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs --ca-certs"):
        TLSConfig(certfile="c.pem", client_cert="optional")


async def test_a_client_that_never_handshakes_delays_no_one(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    tls = TLSConfig(certfile=certfile, keyfile=keyfile, handshake_timeout=0.5)
    async with running(tls) as (_, address):
        silent = await trio.open_tcp_stream(*address)
        half = await trio.open_tcp_stream(*address)
        await half.send_all(b"\x16\x03\x01\x00\x10")  # the start of a ClientHello, then nothing
        with trio.fail_after(2):
            client = await connect(address, client_context(ca))
            assert (await client.get())[0] == 200
        with trio.fail_after(3):
            assert await silent.receive_some(100) == b""
            assert await half.receive_some(100) == b""
        await client.stream.aclose()
        await silent.aclose()
        await half.aclose()


async def test_plain_http_to_the_tls_port_gets_a_plain_400(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        stream = await trio.open_tcp_stream(*address)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        await stream.aclose()
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert received.endswith(b"This port speaks HTTPS: use an https:// URL.\n")


async def test_reload_swaps_the_certificate_for_new_connections_only(
    tmp_path: Path, ca: trustme.CA, other_ca: trustme.CA
) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    both = client_context(ca, other_ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (server, address):
        before = await connect(address, both)
        assert (await before.get())[0] == 200
        first_issuer = peer_issuer(before)

        write_leaf(tmp_path, other_ca)  # overwrite the files with a certificate from another CA
        assert server.reload_tls()

        after = await connect(address, both)
        assert (await after.get())[0] == 200
        assert peer_issuer(after) != first_issuer
        # The connection opened before the reload goes on undisturbed.
        assert (await before.get())[0] == 200
        assert peer_issuer(before) == first_issuer
        await before.stream.aclose()
        await after.stream.aclose()


async def test_a_broken_certificate_on_reload_keeps_the_old_one(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (server, address):
        Path(certfile).write_text("not a certificate\n")
        assert not server.reload_tls()
        client = await connect(address, client_context(ca))
        assert (await client.get())[0] == 200
        await client.stream.aclose()
    assert "TLS reload failed, keeping the current certificate" in caplog.text


async def test_dev_certificate_is_trusted_with_its_ca_and_the_ca_survives_restarts(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    async with running(TLSConfig(state_dir=str(state))) as (server, address):
        assert server.dev_certificate is not None
        ca_path = server.dev_certificate.ca_path
        assert ca_path == state / "ca.pem"
        assert (state / "ca-key.pem").stat().st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cafile=str(ca_path))
        for hostname in ("localhost", "127.0.0.1"):
            client = await connect(address, context, hostname=hostname)
            assert (await client.get())[0] == 200
            await client.stream.aclose()
    first_ca = ca_path.read_bytes()
    async with running(TLSConfig(state_dir=str(state))) as (server, address):
        assert ca_path.read_bytes() == first_ca
        client = await connect(address, ssl.create_default_context(cafile=str(ca_path)))
        assert (await client.get())[0] == 200
        await client.stream.aclose()


# -- bad certificate files: one line, exit 2 ------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA, other_ca: trustme.CA) -> dict[str, str]:
    certfile, keyfile = write_leaf(tmp_path, ca)
    _, other_key = write_leaf(tmp_path, other_ca, name="other")
    key = serialization.load_pem_private_key(Path(keyfile).read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    (tmp_path / "right-password").write_text("s3cret\n")
    (tmp_path / "wrong-password").write_text("guess\n")
    return {
        "cert": certfile,
        "key": keyfile,
        "other_key": other_key,
        "encrypted": str(encrypted),
        "right": str(tmp_path / "right-password"),
        "wrong": str(tmp_path / "wrong-password"),
        "dir": str(tmp_path),
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--certfile", "{dir}/missing.pem"], "--certfile {dir}/missing.pem: no such file"),
        (
            ["--certfile", "{cert}", "--keyfile", "{dir}/nokey.pem"],
            "--keyfile {dir}/nokey.pem: no such file",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{other_key}"],
            "--keyfile {other_key} does not match the certificate in {cert}",
        ),
        (
            ["--certfile", "{cert}", "--keyfile", "{encrypted}"],
            "--keyfile {encrypted} is encrypted: give --keyfile-password-file",
        ),
        (
            [
                "--certfile",
                "{cert}",
                "--keyfile",
                "{encrypted}",
                "--keyfile-password-file",
                "{wrong}",
            ],
            "--keyfile {encrypted}: wrong password",
        ),
        (["--certfile", "{key}", "--keyfile", "{key}"], "not a PEM certificate and key"),
        (["--tls", "--client-cert", "required"], "--client-cert required needs --ca-certs FILE"),
        (["--client-cert", "optional"], "--client-cert needs --tls or --certfile"),
        (["--keyfile", "{key}"], "--keyfile needs --tls or --certfile"),
        (
            ["--certfile", "{cert}", "--keyfile", "{key}", "--ca-certs", "{dir}/none.pem"],
            "--ca-certs {dir}/none.pem: no such file",
        ),
        (["--tls", "--ciphers", "NO-SUCH-CIPHER"], "selects no usable cipher"),
    ],
)
def test_bad_certificate_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], argv: list[str], message: str
) -> None:
    argv = [arg.format(**files) for arg in argv]
    status = main([*argv, "--port", "0", "--tls-state-dir", files["dir"] + "/state"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1, err
    assert message.format(**files) in err
    assert "Traceback" not in err


async def test_encrypted_key_with_the_right_password_file_works(
    files: dict[str, str], ca: trustme.CA
) -> None:
    tls = TLSConfig(
        certfile=files["cert"], keyfile=files["encrypted"], keyfile_password_file=files["right"]
    )
    async with running(tls) as (_, address):
        client = await connect(address, client_context(ca))
        assert (await client.get())[0] == 200
        await client.stream.aclose()


async def test_a_ready_ssl_context_is_used_as_given(tmp_path: Path, ca: trustme.CA) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    async with running(TLSConfig(context=context)) as (server, address):
        client = await connect(address, client_context(ca))
        assert (await client.get())[0] == 200
        await client.stream.aclose()
        assert not server.reload_tls()


def test_tls_alone_from_the_command_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (tmp_path / "hello.txt").write_text("over https\n")

    def get_hello(host: str, port: str, ca_path: str) -> httpx.Response:
        verify = ssl.create_default_context(cafile=ca_path)
        return httpx.get(f"https://{host}:{port}/hello.txt", verify=verify, timeout=10)

    def start() -> ServerProcess:
        return ServerProcess.start(
            *("--tls", "--tls-state-dir", str(state), "--root", str(tmp_path))
        )

    server = start()
    url = server.url
    try:
        ca_path = server.wait_for_line(r"its CA is (\S+)$").group(1)
        curl = server.wait_for_line(r"curl --cacert .*").group(0)
        assert ca_path == str(state / "ca.pem")
        assert f"curl --cacert {ca_path} https://localhost:" in curl
        port = url.rsplit(":", 1)[1]
        response = get_hello("localhost", port, ca_path)
        assert response.text == "over https\n"
        server.process.send_signal(signal.SIGHUP)  # reload: the server keeps serving
        server.wait_for_line("TLS certificate reloaded")
        response = get_hello("127.0.0.1", port, ca_path)
        assert response.status_code == 200
    finally:
        status, _ = server.stop(signal.SIGINT)
    assert status == 0
    first_ca = (state / "ca.pem").read_bytes()

    server = start()
    url = server.url
    try:
        port = url.rsplit(":", 1)[1]
        response = get_hello("localhost", port, ca_path)
        assert response.status_code == 200
    finally:
        status, _ = server.stop(signal.SIGINT)
    assert status == 0
    assert (state / "ca.pem").read_bytes() == first_ca


def test_public_api_takes_tls_config() -> None:
    assert trioserve.Config(tls=TLSConfig(certfile="x.pem")).scheme == "https"
    assert trioserve.Config().scheme == "http"


async def test_closing_sends_close_notify(tmp_path: Path, ca: trustme.CA) -> None:
    certfile, keyfile = write_leaf(tmp_path, ca)
    async with running(TLSConfig(certfile=certfile, keyfile=keyfile)) as (_, address):
        tcp = await trio.open_tcp_stream(*address)
        # https_compatible=False on the client: a missing close_notify would raise here.
        stream = trio.SSLStream(tcp, client_context(ca), server_hostname="localhost")
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK")
        await stream.aclose()
