"""How the TLS stream reads: the socket first, waits first after a wait, OpenSSL's own buffer,
the end of the stream, and a client's KeyUpdate, over real TLS on loopback sockets."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from trioserve import Config
from trioserve._server import Server
from trioserve._tls import TLSConfig
from trioserve._tls_stream import TLSStream
from trioserve._transport import Transport

from ._helpers import running_readiness
from .conftest import hello_app
from .test_tls_stream import contexts, read_exactly, tls_pair

# Every wait below ends promptly when the code is right; this bounds a broken one.
_PATIENCE = 10


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_a_record_read_in_small_pieces_needs_no_more_bytes_from_the_socket(
    ca: trustme.CA,
) -> None:
    # The rest of a decrypted record is inside OpenSSL, not in the incoming BIO or the socket:
    # a read that looked only at those would wait for bytes that never come.
    async with tls_pair(ca) as (server, client):
        await client.send_all(bytes(range(100)))  # one record
        with trio.fail_after(5):
            pieces = [await server.receive_some(10) for _ in range(10)]
        assert b"".join(pieces) == bytes(range(100))


async def test_records_that_arrived_together_are_each_read_without_waiting(
    ca: trustme.CA,
) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"first")
        await client.send_all(b"second")  # a second record, in the kernel with the first
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            assert await server.receive_some() == b"first"  # one record per read
            assert await server.receive_some() == b"second"  # from the BIO: the client is done


async def test_a_read_after_a_wait_gets_what_came_meanwhile_and_is_a_checkpoint(
    ca: trustme.CA,
) -> None:
    async with tls_pair(ca) as (server, client):
        async with trio.open_nursery() as nursery:
            received: list[bytes] = []

            async def read_one() -> None:
                received.append(await server.receive_some())

            nursery.start_soon(read_one)
            await trio.testing.wait_all_tasks_blocked()  # the socket is empty: it waits
            await client.send_all(b"request 1")
        assert received == [b"request 1"]
        # The next read waits for readability first: bytes already there must end that wait.
        await client.send_all(b"request 2")
        await trio.testing.wait_all_tasks_blocked()
        with trio.testing.assert_checkpoints(), trio.fail_after(5):
            assert await server.receive_some() == b"request 2"


async def test_receive_nowait_says_none_while_the_socket_is_empty_and_never_waits(
    ca: trustme.CA,
) -> None:
    async with tls_pair(ca) as (server, client):
        assert server.receive_nowait() is None  # nothing sent yet
        assert server.wait_first  # the socket was empty: the next read should wait first
        await client.send_all(b"hello")
        await trio.testing.wait_all_tasks_blocked()
        assert server.receive_nowait() == b"hello"
        assert server.wait_first  # drained, nothing left undecrypted
        assert server.receive_nowait() is None


async def test_a_read_of_one_record_leaves_the_next_to_read_without_waiting(
    ca: trustme.CA,
) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"first")
        await client.send_all(b"second")
        await trio.testing.wait_all_tasks_blocked()
        assert server.receive_nowait() == b"first"
        assert not server.wait_first  # the second record is in the BIO
        assert server.receive_nowait() == b"second"
        assert server.wait_first


async def test_an_upload_after_waited_reads_arrives_whole(ca: trustme.CA) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many full socket reads
    async with tls_pair(ca) as (server, client):
        for index in range(3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"%d" % index)
                assert await read_exactly(server, 1) == b"%d" % index
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, body)
            assert await read_exactly(server, len(body)) == body


async def test_a_read_cancelled_while_it_waits_loses_nothing(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"one")
        assert await read_exactly(server, 3) == b"one"
        waiting = trio.CancelScope()

        async def cancel_once_blocked() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the read waits: nothing comes
            waiting.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_once_blocked)
            with waiting:
                await server.receive_some()
        assert waiting.cancelled_caught
        await client.send_all(b"two")
        with trio.fail_after(5):
            assert await server.receive_some() == b"two"


async def test_every_read_after_close_notify_is_the_end_of_the_stream(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"last words")
        await client.aclose()
        with trio.fail_after(5):
            assert await read_exactly(server, 10) == b"last words"
            for _ in range(3):
                with trio.testing.assert_checkpoints():
                    assert await server.receive_some() == b""


async def test_after_close_notify_a_closed_stream_still_says_closed(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.aclose()
        with trio.fail_after(5):
            assert await server.receive_some() == b""
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.receive_some()


async def test_a_watched_stream_keeps_answering_the_end_after_close_notify(
    ca: trustme.CA,
) -> None:
    # Edge-triggered: the close_notify's event is used up by the read that finds it, so a later
    # read must not wait for another one.
    async with running_readiness() as readiness, tls_pair(ca) as (server, client):
        assert server.watch(readiness)
        await client.send_all(b"a")
        with trio.fail_after(_PATIENCE):
            assert await server.receive_some() == b"a"
        await client.aclose()
        with trio.fail_after(_PATIENCE):
            assert await server.receive_some() == b""
            assert await server.receive_some() == b""


async def test_a_read_after_close_is_refused_without_waiting(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"a")
        with trio.fail_after(_PATIENCE):
            assert await server.receive_some() == b"a"
        assert server.wait_first
        await server.aclose()
        with trio.fail_after(_PATIENCE), pytest.raises(trio.ClosedResourceError):
            await server.receive_some()


async def test_a_read_of_zero_bytes_is_refused(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        with pytest.raises(ValueError, match="max_bytes"):
            await server.receive_some(0)
        await client.send_all(b"still here")
        with trio.fail_after(_PATIENCE):
            assert await read_exactly(server, 10) == b"still here"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_a_client_key_update_is_answered_and_data_flows_after_it(
    ca: trustme.CA, tmp_path: Path
) -> None:
    # Python's ssl cannot send a KeyUpdate; `openssl s_client` does on a line "K" (and asks
    # for ours). Its -msg trace shows the KeyUpdate it receives from us.
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_context, _ = contexts(ca)
    server_context.set_alpn_protocols(["http/1.1"])
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3"]
    command += ["-CAfile", str(ca_file), "-msg"]
    output = bytearray()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                lambda task_status: trio.run_process(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                    task_status=task_status,
                )
            )

            async def until(seen: bytes) -> None:
                while seen not in output:
                    data = await process.stdout.receive_some()
                    assert data, f"s_client ended before {seen!r}: {bytes(output)!r}"
                    output.extend(data)

            server = TLSStream(await listeners[0].accept(), server_context)
            await server.do_handshake()

            async def echo() -> None:
                while data := await server.receive_some():
                    await server.send_all(b"echo:" + data)

            nursery.start_soon(echo)
            await process.stdin.send_all(b"one\n")
            await until(b"echo:one\n")
            await process.stdin.send_all(b"K\n")
            await until(b"KEYUPDATE")
            await process.stdin.send_all(b"two\n")
            await until(b"echo:two\n")
            assert b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate" in output
            await process.stdin.aclose()  # s_client sends close_notify and leaves
            await process.wait()
    await server.aclose()
    await listeners[0].aclose()


# -- waits in the server's Readiness (one edge-triggered epoll) --------------------------------


async def test_a_watched_stream_waits_in_the_readiness_and_wakes_on_a_record(
    ca: trustme.CA,
) -> None:
    async with running_readiness() as readiness, tls_pair(ca) as (server, client):
        assert server.watch(readiness)
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def read_one() -> None:
                received.append(await server.receive_some())

            nursery.start_soon(read_one)
            await trio.testing.wait_all_tasks_blocked()
            # Waiting in the watch, not in trio: a second wait there is refused.
            with pytest.raises(trio.BusyResourceError):
                await readiness.wait(server.fd)
            await client.send_all(b"next request")
        assert received == [b"next request"]


async def test_a_watched_stream_reads_past_a_full_socket_read(ca: trustme.CA) -> None:
    # More ciphertext than one socket read takes, all sent before the server reads: no new
    # event comes for what the first read leaves, yet all of it is read (a full read makes
    # the next one try the socket before it waits).
    body = bytes(range(256)) * 600  # about 150 KiB
    async with running_readiness() as readiness, tls_pair(ca) as (server, client):
        assert server.watch(readiness)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, b"first")
            assert await read_exactly(server, 5) == b"first"  # a waited read: waits first next
        await client.send_all(body)  # the socket buffers hold all of it
        await trio.testing.wait_all_tasks_blocked()
        assert await read_exactly(server, len(body)) == body


async def test_closing_a_watched_stream_fails_its_waiter_and_forgets_the_socket(
    ca: trustme.CA,
) -> None:
    async with running_readiness() as readiness, tls_pair(ca) as (server, _client):
        assert server.watch(readiness)
        fd = server.fd
        failed: list[BaseException] = []

        async def read_one() -> None:
            try:
                await server.receive_some()
            except trio.ClosedResourceError as exc:
                failed.append(exc)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_one)
                await trio.testing.wait_all_tasks_blocked()
                await server.aclose()
        assert len(failed) == 1
        # The number is free for a new socket, which starts with no mark and a fresh
        # registration.
        new, peer = socket.socketpair()
        with new, peer:
            assert new.fileno() == fd
            peer.send(b"x")
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(5):
                assert readiness.watch(fd)
                await readiness.wait(fd)


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_watched_tls_transport_closed_while_it_reads_ends_the_read(
    ca: trustme.CA, how: str
) -> None:
    async with running_readiness() as readiness, tls_pair(ca) as (server, _client):
        transport = Transport(server, 5.0, readiness)
        assert transport.watch()
        received: list[bytes | bytearray] = []

        async def read_one() -> None:
            received.append(await transport.receive())

        with trio.fail_after(_PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_one)
                await trio.testing.wait_all_tasks_blocked()
                await (transport.close() if how == "close" else transport.reset())
        assert received == [b""]
        assert not transport.watched
        assert not readiness._waiters


async def bio_handshake(
    tcp: trio.SocketStream, client: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
) -> None:
    """Run a memory-BIO client's TLS handshake over ``tcp`` (bounded)."""
    with trio.fail_after(_PATIENCE):
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                await tcp.send_all(outgoing.read())
                incoming.write(await tcp.receive_some(65536))


def http11_tls_server(ca: trustme.CA) -> tuple[Server, ssl.SSLContext]:
    """A hello server over TLS that speaks HTTP/1.1 only (ALPN), and a client context for it."""
    server_context, client_context = contexts(ca)
    server_context.set_alpn_protocols(["http/1.1"])
    client_context.set_alpn_protocols(["http/1.1"])
    config = Config(port=0, access_log=False, lifespan="off", tls=TLSConfig(context=server_context))
    return Server(hello_app, config), client_context


async def test_a_keep_alive_https_connection_is_served_across_a_full_buffer_of_pipelined_requests(
    ca: trustme.CA,
) -> None:
    """End to end: after a first request (the connection is then watched), more pipelined
    requests than one socket read takes, then one more at a time: every one is answered."""
    server, client_context = http11_tls_server(ca)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        assert server.state.readiness.running
        tcp = await trio.open_tcp_stream(*address)
        stream = trio.SSLStream(tcp, client_context, server_hostname="localhost")
        one = b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: "
        one += b"a" * (64 - len(one) - 4) + b"\r\n\r\n"
        async with stream:
            received = b""

            async def answers(count: int) -> None:
                nonlocal received
                with trio.fail_after(_PATIENCE):
                    while received.count(b"HTTP/1.1 200 ") < count:
                        chunk = await stream.receive_some(65536)
                        assert chunk, "the server closed before answering every request"
                        received += chunk

            await stream.send_all(one)
            await answers(1)
            await stream.send_all(one * 1100)  # 70 KiB: more than one read of the socket
            await answers(1101)
            for count in range(1102, 1105):
                await stream.send_all(one)
                await answers(count)
        server.begin_shutdown()


async def test_a_small_response_goes_out_as_one_tls_record(ca: trustme.CA) -> None:
    """A response's head and small body are one record (one encryption, one write): what a
    client receives for the second request on a connection (the first one's bytes carry the
    session tickets too) is a single application-data record."""
    server, client_context = http11_tls_server(ca)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        tcp = await trio.open_tcp_stream(*address)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")

        async def exchange(request: bytes) -> tuple[bytes, bytes]:
            """The plaintext response to ``request``, and the raw bytes it came in."""
            client.write(request)
            await tcp.send_all(outgoing.read())
            raw, plain = b"", b""
            with trio.fail_after(_PATIENCE):
                while not plain.endswith(b"GET /\n"):
                    data = await tcp.receive_some(65536)
                    assert data, "the server closed the connection"
                    raw += data
                    incoming.write(data)
                    with contextlib.suppress(ssl.SSLWantReadError):
                        while chunk := client.read(65536):
                            plain += chunk
            return plain, raw

        await bio_handshake(tcp, client, incoming, outgoing)
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        async with tcp:
            await exchange(request)
            plain, raw = await exchange(request)
        assert plain.startswith(b"HTTP/1.1 200 ")
        records = []
        while raw:
            assert len(raw) >= 5
            size = int.from_bytes(raw[3:5], "big")
            records.append(raw[0])
            raw = raw[5 + size :]
        assert records == [23]  # one application_data record
        server.begin_shutdown()


async def test_a_keep_alive_request_whose_record_arrives_in_pieces_is_answered_once_whole(
    ca: trustme.CA,
) -> None:
    """The keep-alive wait of a watched TLS connection reads in the server's Readiness round
    (``Transport.take_tls``): a round that finds only part of the request's record decrypts
    nothing and waits on, the piece kept; the rest completes the request. Then the client's
    close_notify ends the connection quietly."""
    server, client_context = http11_tls_server(ca)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        tcp = await trio.open_tcp_stream(*address)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")

        async def response() -> bytes:
            plain = b""
            with trio.fail_after(_PATIENCE):
                while not plain.endswith(b"GET /\n"):
                    data = await tcp.receive_some(65536)
                    assert data, "the server closed the connection"
                    incoming.write(data)
                    with contextlib.suppress(ssl.SSLWantReadError):
                        while chunk := client.read(65536):
                            plain += chunk
            return plain

        await bio_handshake(tcp, client, incoming, outgoing)
        request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
        async with tcp:
            client.write(request)
            await tcp.send_all(outgoing.read())
            assert (await response()).startswith(b"HTTP/1.1 200 ")  # now watched, idle
            for split in (3, 20):  # inside the record's header, then inside its payload
                client.write(request)
                record = outgoing.read()
                await tcp.send_all(record[:split])
                await trio.testing.wait_all_tasks_blocked()  # a round took the piece
                await tcp.send_all(record[split:])
                answer = await response()
                assert answer.startswith(b"HTTP/1.1 200 ")
                assert answer.count(b"HTTP/1.1") == 1
            # The client's close_notify, read by a round as the end: the server closes.
            with contextlib.suppress(ssl.SSLWantReadError):
                client.unwrap()
            await tcp.send_all(outgoing.read())
            with trio.fail_after(_PATIENCE):
                while await tcp.receive_some(65536):
                    pass
            await trio.testing.wait_all_tasks_blocked()
            assert not server.state.connections
        server.begin_shutdown()
