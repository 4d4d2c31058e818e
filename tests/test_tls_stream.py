"""trioserve's own server-side TLS stream, against trio's client-side SSLStream on real sockets."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trustme

from trioserve._tls_stream import TLSStream
from trioserve._transport import Transport

from ._helpers import receive_once_blocked


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2"])
    return server, client


@asynccontextmanager
async def tls_pair(
    ca: trustme.CA,
) -> AsyncIterator[tuple[TLSStream, trio.SSLStream[trio.SocketStream]]]:
    """A connected (server, client) pair over loopback TCP, handshake done."""
    server_context, client_context = contexts(ca)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    raw_client = await trio.open_tcp_stream("127.0.0.1", port)
    raw_server = await listeners[0].accept()
    server = TLSStream(raw_server, server_context)
    client = trio.SSLStream(raw_client, client_context, server_hostname="localhost")
    try:
        async with trio.open_nursery() as handshakes:
            handshakes.start_soon(server.do_handshake)
            handshakes.start_soon(client.do_handshake)
        yield server, client
    finally:
        await server.aclose()
        # The client side may be closed or broken by the test already.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await client.aclose()
        await raw_client.aclose()
        await listeners[0].aclose()


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = bytearray()
    with trio.fail_after(20):
        while len(data) < size:
            chunk = await stream.receive_some(65536)
            assert chunk, f"EOF after {len(data)} of {size} bytes"
            data += chunk
    return bytes(data)


async def test_data_goes_both_ways_and_alpn_is_agreed(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        assert server.selected_alpn_protocol() == "h2"
        assert server.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
        await client.send_all(b"GET / HTTP/1.1\r\n\r\n")
        assert await read_exactly(server, 18) == b"GET / HTTP/1.1\r\n\r\n"
        await server.send_all(b"HTTP/1.1 200 OK\r\n\r\n")
        assert await read_exactly(client, 19) == b"HTTP/1.1 200 OK\r\n\r\n"


async def test_a_large_body_to_a_slow_reader_arrives_whole(ca: trustme.CA) -> None:
    body = bytes(range(256)) * 65536  # 16 MiB, far more than the socket buffers hold
    async with tls_pair(ca) as (server, client), trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, body)
        # The client reads only once the server waits for room on the socket.
        await trio.testing.wait_all_tasks_blocked()
        assert server._send_lock.locked()
        assert await read_exactly(client, len(body)) == body


async def test_writers_take_turns_without_corrupting_records(ca: trustme.CA) -> None:
    # Two tasks write at once while the socket is full: records must not interleave (the
    # client's TLS layer would fail on a corrupt record), and every byte arrives.
    pieces = 400
    async with tls_pair(ca) as (server, client):

        async def writer(mark: bytes) -> None:
            for _ in range(pieces):
                await server.send_all(mark * 16384)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer, b"a")
            nursery.start_soon(writer, b"b")
            await trio.testing.wait_all_tasks_blocked()  # both wait: the socket is full
            received = await read_exactly(client, 2 * pieces * 16384)
    assert received.count(b"a") == received.count(b"b") == pieces * 16384


async def test_close_notify_from_the_client_is_the_end_of_the_stream(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.aclose()
        with trio.fail_after(5):
            assert await server.receive_some() == b""


async def test_tcp_close_without_close_notify_is_a_broken_stream(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.transport_stream.aclose()
        with trio.fail_after(5), pytest.raises(trio.BrokenResourceError):
            await server.receive_some()


async def test_closing_sends_close_notify(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await server.aclose()
        with trio.fail_after(5):
            assert await client.receive_some() == b""  # clean EOF, not a broken stream
        with pytest.raises(trio.ClosedResourceError):
            await server.send_all(b"late")


async def test_a_failed_handshake_is_a_broken_stream_with_the_ssl_error_as_cause(
    ca: trustme.CA,
) -> None:
    server_context, _ = contexts(ca)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # does not trust our CA: it aborts the handshake
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    raw_client = await trio.open_tcp_stream("127.0.0.1", port)
    raw_server = await listeners[0].accept()
    server = TLSStream(raw_server, server_context)
    client = trio.SSLStream(raw_client, stranger, server_hostname="localhost")
    failures: list[BaseException] = []

    async def client_side() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()
        await client.transport_stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        try:
            with trio.fail_after(5):
                await server.do_handshake()
        except trio.BrokenResourceError as exc:
            failures.append(exc)
    assert failures
    assert isinstance(failures[0].__cause__, ssl.SSLError | OSError)
    await server.aclose()
    await listeners[0].aclose()


async def test_a_send_cancelled_half_way_leaves_the_stream_broken(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, _client):
        with trio.CancelScope() as scope:

            async def cancel_once_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_once_blocked)
                await server.send_all(b"x" * (32 << 20))  # the client never reads: it blocks
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"more")


async def test_a_read_the_kernel_answers_at_once_still_lets_other_tasks_run(
    ca: trustme.CA,
) -> None:
    # A client that uploads faster than we decrypt keeps the socket readable: a read that
    # need not wait must still be a schedule point, or one upload starves every other
    # connection (and is never cancelled).
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"x" * 10_000)  # one record, small enough for any socket buffer
        await trio.testing.wait_all_tasks_blocked()  # it is in the kernel's buffer now
        with trio.testing.assert_checkpoints(), trio.fail_after(5):
            assert await server.receive_some(65536) == b"x" * 10_000


async def test_a_cancelled_read_loses_no_bytes(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        await client.send_all(b"hello")
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await server.receive_some()  # reads the record, then the checkpoint cancels
        assert scope.cancelled_caught
        with trio.fail_after(5):
            assert await server.receive_some() == b"hello"


async def test_a_write_the_socket_takes_at_once_is_a_checkpoint(ca: trustme.CA) -> None:
    async with tls_pair(ca) as (server, client):
        with trio.testing.assert_checkpoints():
            await server.send_all(b"small")
        assert await read_exactly(client, 5) == b"small"


async def test_a_writer_waiting_behind_a_cancelled_one_writes_nothing(ca: trustme.CA) -> None:
    # The first writer is cancelled half-way through a record: whatever the next one wrote
    # after it would be garbage to the client, so it fails instead.
    async with tls_pair(ca) as (server, _client):
        outcome: list[str] = []
        first_scope = trio.CancelScope()

        async def first() -> None:
            with first_scope:
                await server.send_all(b"x" * (32 << 20))  # blocks: the client never reads

        async def second() -> None:
            try:
                await server.send_all(b"after")
                outcome.append("written")
            except trio.BrokenResourceError:
                outcome.append("broken")

        with trio.fail_after(10), trio.CancelScope() as everything:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()  # first holds the write lock
                nursery.start_soon(second)
                await trio.testing.wait_all_tasks_blocked()  # second waits for it
                first_scope.cancel()
                # Without the check, second would write behind the torn record and block on
                # the full socket: end it so that the assertion below reports the failure.
                await trio.testing.wait_all_tasks_blocked()
                everything.cancel()
        assert outcome == ["broken"]


async def test_a_transports_tls_writes_that_the_socket_cannot_take_now_are_flushed_in_order(
    ca: trustme.CA,
) -> None:
    # Transport.write_now encrypts a response of up to one write piece at once: what the
    # socket does not take waits in the TLS stream, and send_rest() flushes it, in order with
    # what follows; larger data is left whole for send_rest.
    async with tls_pair(ca) as (server, client):
        transport = Transport(server, write_timeout=30)
        assert transport.write_now(b"small") == b""  # the common case: out at once
        pieces = [bytes([i]) * (60 * 1024) for i in range(64)]  # ~4 MiB, beyond the buffers
        big = b"z" * (1 << 20)
        expected = b"small" + b"".join(pieces) + big
        received = bytearray()
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                # Read only once the writer waits: every rest must be flushed after a wait.
                nursery.start_soon(receive_once_blocked, client, len(expected), received)
                queued = 0
                for piece in pieces:
                    rest = transport.write_now(piece)
                    if rest:
                        queued += 1
                        await transport.send_rest(rest)
                assert queued > 0  # some did not fit the socket and were flushed
                assert transport.write_now(big) is big  # more than one piece: left whole
                await transport.send(big)
        assert bytes(received) == expected
