"""The server's watch on idle keep-alive sockets (trioserve._readiness): one epoll, one task."""

from __future__ import annotations

import errno
import select
import socket

import pytest
import trio
import trio.testing

from trioserve import Config
from trioserve._readiness import Readiness
from trioserve._server import Server
from trioserve._transport import READ_SIZE, Transport

from ._helpers import running_readiness
from .conftest import hello_app

# Every wait below ends promptly when the code is right; this bounds a broken one.
_PATIENCE = 10


def socket_pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


async def test_a_wait_ends_when_bytes_arrive_and_not_before() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            assert readiness.watch(ours.fileno())
            woke = trio.Event()

            async def waiter() -> None:
                await readiness.wait(ours.fileno())
                woke.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert not woke.is_set()
                theirs.send(b"next request")
                with trio.fail_after(_PATIENCE):
                    await woke.wait()
            assert ours.recv(100) == b"next request"


async def test_bytes_that_came_while_nobody_waited_end_the_next_wait_at_once() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            readiness.watch(ours.fileno())
            theirs.send(b"early")
            await trio.testing.wait_all_tasks_blocked()  # the watcher saw it; nobody waited
            with trio.fail_after(_PATIENCE):
                await readiness.wait(ours.fileno())
            assert ours.recv(100) == b"early"


async def test_a_full_read_marks_the_socket_so_that_what_is_left_is_not_stranded() -> None:
    # Edge-triggered: no new event comes for bytes already there. A read that filled its
    # buffer marks the socket, so the next wait does not sleep on bytes that wait already.
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            transport = Transport(
                trio.SocketStream(trio.socket.from_stdlib_socket(ours)), 5.0, readiness
            )
            assert transport.watch()
            theirs.sendall(b"x" * (READ_SIZE + 100))
            with trio.fail_after(_PATIENCE):
                await readiness.wait(transport.fd)
                assert transport.read_nowait() == b"x" * READ_SIZE
                await readiness.wait(transport.fd)  # nothing new was sent: only the mark
                assert transport.read_nowait() == b"x" * 100


async def test_closing_a_watched_transport_fails_its_waiter_and_forgets_the_socket() -> None:
    ours, theirs = socket_pair()
    with theirs:
        async with running_readiness() as readiness:
            transport = Transport(
                trio.SocketStream(trio.socket.from_stdlib_socket(ours)), 5.0, readiness
            )
            transport.watch()
            fd = transport.fd
            failed: list[BaseException] = []

            async def waiter() -> None:
                try:
                    await readiness.wait(fd)
                except trio.ClosedResourceError as exc:
                    failed.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await transport.close()
            assert len(failed) == 1
            assert not transport.watched
            # The number is free for a new socket, which starts with no mark and a fresh
            # registration.
            new, peer = socket_pair()
            with new, peer:
                assert readiness.watch(new.fileno())


async def test_a_cancelled_wait_leaves_no_waiter_behind() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            readiness.watch(ours.fileno())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(readiness.wait, ours.fileno())
                await trio.testing.wait_all_tasks_blocked()  # waiting, as a waiter
                nursery.cancel_scope.cancel()
            theirs.send(b"later")
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(_PATIENCE):
                # Not refused as a second waiter, and the event was kept as a mark.
                await readiness.wait(ours.fileno())


async def test_a_wait_cancelled_at_its_mark_leaves_the_mark_for_the_next_wait() -> None:
    # Found in review: the mark was taken before the wait's schedule point, so a wait cancelled
    # there (HTTP/2's reader at a graceful shutdown, cancel_on_disconnect's watcher) lost it,
    # and the next wait slept on bytes already in the socket (edge triggering says it once).
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            assert readiness.watch(ours.fileno())
            theirs.send(b"next request")  # arrives while nobody waits: a mark
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await readiness.wait(ours.fileno())
            assert cancelled.cancelled_caught
            with trio.fail_after(_PATIENCE):
                await readiness.wait(ours.fileno())
            assert ours.recv(100) == b"next request"


async def test_a_transport_closed_while_its_wait_takes_a_mark_reads_the_end_of_the_stream() -> None:
    # Found in review: a wait that found its mark returned normally although another task
    # closed the transport at its schedule point, and the read that followed hit descriptor
    # -1 (OSError EBADF, a traceback) instead of the end of the stream. Which task runs first
    # is trio's choice, so the race is run a number of times.
    outcomes: list[bytes | bytearray] = []
    async with running_readiness() as readiness:
        for _ in range(20):
            ours, theirs = socket_pair()
            with theirs:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
                transport = Transport(stream, 5.0, readiness)
                assert transport.watch()
                theirs.send(b"x")
                await trio.testing.wait_all_tasks_blocked()  # a mark: nobody waited

                async def read(transport: Transport = transport) -> None:
                    outcomes.append(await transport.receive())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    nursery.start_soon(transport.close)
    assert set(outcomes) <= {b"x", b""}
    assert len(outcomes) == 20


async def test_a_socket_the_kernel_refuses_to_watch_keeps_trios_wait() -> None:
    # ENOSPC (fs.epoll.max_user_watches) or ENOMEM from epoll_ctl: the connection is served
    # as without the server's epoll, not dropped with an error.
    class Refusing:
        def __init__(self, epoll: select.epoll) -> None:
            self._epoll = epoll
            self.attempts = 0

        def register(self, fd: int, mask: int) -> None:
            self.attempts += 1
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(self._epoll, name)

    ours, theirs = socket_pair()
    with theirs:
        async with running_readiness() as readiness:
            real = readiness._epoll
            assert real is not None
            refusing = Refusing(real)
            readiness._epoll = refusing  # type: ignore[assignment]
            try:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
                transport = Transport(stream, 5.0, readiness)
                assert not transport.watch()
                assert not transport.watch()  # not tried again on every wait
                assert refusing.attempts == 1
                theirs.send(b"request")
                with trio.fail_after(_PATIENCE):
                    assert await transport.receive() == b"request"
                await transport.close()
            finally:
                readiness._epoll = real


async def test_without_a_running_watch_nothing_is_watched() -> None:
    readiness = Readiness()
    ours, theirs = socket_pair()
    with ours, theirs:
        assert not readiness.watch(ours.fileno())


@pytest.mark.parametrize("parser", ["h11", "python"])
async def test_a_keep_alive_connection_is_served_across_a_full_buffer_of_pipelined_requests(
    parser: str,
) -> None:
    """End to end: after a first request (the connection is then watched), 64 KiB of pipelined
    requests exactly, then more: every one is answered, none waits for the keep-alive timeout."""
    config = Config(port=0, access_log=False, lifespan="off", http_parser=parser)
    server = Server(hello_app, config)
    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        assert server.state.readiness.running
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            first = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            await stream.send_all(first)
            with trio.fail_after(_PATIENCE):
                assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
            # 64-byte requests: 1024 of them are one full read, then 10 more.
            one = b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: "
            one += b"a" * (64 - len(one) - 4) + b"\r\n\r\n"
            assert len(one) * 1024 == READ_SIZE
            await stream.send_all(one * 1034)
            expected = (b"HTTP/1.1 200 ", 1034)
            received = b""
            with trio.fail_after(_PATIENCE):
                while received.count(expected[0]) < expected[1]:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "the server closed before answering every request"
                    received += chunk
        server.begin_shutdown()
    assert not server.state.readiness.running


async def test_a_second_waiter_for_the_same_socket_is_refused_as_trio_would() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            readiness.watch(ours.fileno())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(readiness.wait, ours.fileno())
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await readiness.wait(ours.fileno())
                theirs.send(b"x")  # the first waiter is still served


async def test_a_watched_transport_receives_through_the_watch() -> None:
    ours, theirs = socket_pair()
    with theirs:
        async with running_readiness() as readiness:
            transport = Transport(
                trio.SocketStream(trio.socket.from_stdlib_socket(ours)), 5.0, readiness
            )
            transport.watch()
            received: list[bytes] = []

            async def reader() -> None:
                received.append(await transport.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                # Waiting in the watch, not in trio: a second wait here is refused.
                with pytest.raises(trio.BusyResourceError):
                    await readiness.wait(transport.fd)
                theirs.send(b"body bytes")
            assert received == [b"body bytes"]
            await transport.close()
