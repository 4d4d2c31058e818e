"""How the TLS stream reads: the socket first, waits first after a wait, OpenSSL's own buffer,
the end of the stream, and a client's KeyUpdate, over real TLS on loopback sockets."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from trioserve._tls_stream import TLSStream

from .test_tls_stream import contexts, read_exactly, tls_pair


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
