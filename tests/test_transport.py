"""Transport: gathering writes (send_pieces) on real loopback sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioserve import ClientDisconnected
from trioserve._transport import Transport, _after

from ._helpers import receive_once_blocked


def test_after_drops_what_was_written_and_slices_the_rest() -> None:
    pieces: list[bytes | bytearray | memoryview] = [b"abc", b"defg", b"hi"]
    assert _after(pieces, 0) == [b"abc", b"defg", b"hi"]
    assert [bytes(p) for p in _after(pieces, 3)] == [b"defg", b"hi"]
    assert [bytes(p) for p in _after(pieces, 5)] == [b"fg", b"hi"]
    assert _after(pieces, 9) == []


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, client


async def test_pieces_larger_than_the_socket_buffers_arrive_whole_and_in_order() -> None:
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    # 16 MiB in 256 pieces of different sizes and contents, some of them views.
    pieces: list[bytes | bytearray | memoryview] = []
    for i in range(256):
        piece = bytes([i]) * (32 * 1024 + i * 256)
        pieces.append(memoryview(piece) if i % 2 else piece)
    expected = b"".join(bytes(p) for p in pieces)
    received = bytearray()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_once_blocked, client, len(expected), received)
            await transport.send_pieces(list(pieces))
    assert bytes(received) == expected
    await transport.close()
    await client.aclose()


async def test_write_now_writes_what_the_socket_takes_and_send_rest_the_rest() -> None:
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    assert transport.write_now(b"small") == b""  # the common case: all of it at once
    big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than the socket buffers take
    rest = transport.write_now(big)
    assert 0 < len(rest) < len(big)
    assert bytes(rest) == big[len(big) - len(rest) :]
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(b"small") + len(big):
            received.extend(await client.receive_some(1 << 20))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await transport.send_rest(rest)  # waits for room, then writes the rest
    assert bytes(received) == b"small" + big
    await transport.close()
    await client.aclose()
    # Closed: nothing is written now, and the send that follows says the client is gone.
    rest = transport.write_now(b"after the close")
    assert rest == b"after the close"
    with pytest.raises(ClientDisconnected):
        await transport.send_rest(rest)


async def test_a_small_total_is_joined_and_sent_like_send() -> None:
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    await transport.send_pieces([b"HTTP/1.1 ", memoryview(b"200 OK\r\n"), b"\r\n"])
    with trio.fail_after(5):
        data = b""
        while len(data) < 19:
            data += await client.receive_some(100)
    assert data == b"HTTP/1.1 200 OK\r\n\r\n"
    await transport.close()
    await client.aclose()


async def test_a_reader_that_stops_cuts_a_gathering_write_off_after_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    pieces: list[bytes | bytearray | memoryview] = [b"x" * (1 << 20)] * 64  # never read
    start = trio.current_time()
    with pytest.raises(ClientDisconnected, match="write timed out"):
        await transport.send_pieces(pieces)
    assert 30 <= trio.current_time() - start < 31
    await transport.close()
    await client.aclose()


async def test_a_gathering_write_cancelled_part_way_leaves_the_connection_unusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Bytes on the wire end at an unknown point (a torn HTTP/2 frame): nothing may follow them.
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    pieces: list[bytes | bytearray | memoryview] = [b"x" * (1 << 20)] * 64  # never read
    with trio.move_on_after(5):
        await transport.send_pieces(pieces)
    assert transport.gone
    with pytest.raises(ClientDisconnected, match="the client disconnected"):
        await transport.send_pieces([b"y" * (1 << 17)])
    await transport.close()
    await client.aclose()


async def test_a_write_cancelled_part_way_leaves_the_connection_unusable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    with trio.move_on_after(5):
        await transport.send(b"x" * (64 << 20))  # never read
    assert transport.gone
    with pytest.raises(ClientDisconnected, match="the client disconnected"):
        await transport.send(b"y")
    await transport.close()
    await client.aclose()


async def test_a_gathering_write_ends_as_a_disconnect_when_the_connection_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # close() with linger shuts our side first (the socket turns writable) and gives up the
    # descriptor: the waiting write must not reach the descriptor (EBADF, or another socket's).
    server, client = await tcp_pair()
    transport = Transport(server, write_timeout=30)
    pieces: list[bytes | bytearray | memoryview] = [b"x" * (1 << 20)] * 64  # never read
    failures: list[BaseException] = []

    async def write() -> None:
        try:
            await transport.send_pieces(pieces)
        except ClientDisconnected as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        await transport.close(linger=True)
    assert len(failures) == 1
    assert transport.gone
    await client.aclose()
