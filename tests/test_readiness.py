"""The server's watch on idle keep-alive sockets (trioserve._readiness): one epoll, one task."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

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


@asynccontextmanager
async def watched_pair() -> AsyncIterator[tuple[Readiness, socket.socket, socket.socket]]:
    """A running watch, and a socket pair whose first socket (the server's side) it watches."""
    async with watched_pairs(1) as (readiness, [(ours, theirs)]):
        yield readiness, ours, theirs


@asynccontextmanager
async def watched_pairs(
    count: int,
) -> AsyncIterator[tuple[Readiness, list[tuple[socket.socket, socket.socket]]]]:
    """A running watch, and ``count`` socket pairs whose first sockets it watches."""
    pairs = [socket_pair() for _ in range(count)]
    try:
        async with running_readiness() as readiness:
            for ours, _ in pairs:
                assert readiness.watch(ours.fileno())
            yield readiness, pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


async def send_once_blocked(sock: socket.socket, data: bytes, *, close: bool = False) -> None:
    """Send ``data`` (and close ``sock`` if asked) once every task waits: the reader is in the
    watch by then, so the bytes come as an event of a round, not as a mark."""
    await trio.testing.wait_all_tasks_blocked()
    sock.sendall(data)
    if close:
        sock.close()


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


async def test_a_wait_says_how_many_tasks_its_round_woke() -> None:
    async with watched_pairs(3) as (readiness, pairs):
        fds = [ours.fileno() for ours, _ in pairs]
        counts: dict[int, int] = {}

        async def waiter(fd: int) -> None:
            counts[fd] = await readiness.wait(fd)

        async with trio.open_nursery() as nursery:
            for fd in fds[:2]:
                nursery.start_soon(waiter, fd)
            await trio.testing.wait_all_tasks_blocked()
            for _, theirs in pairs[:2]:
                theirs.send(b"x")  # both arrive before the watcher's next round
        assert counts == {fds[0]: 2, fds[1]: 2}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, fds[2])
            await trio.testing.wait_all_tasks_blocked()
            pairs[2][1].send(b"x")
        assert counts[fds[2]] == 1  # woken alone
        pairs[0][1].send(b"y")
        await trio.testing.wait_all_tasks_blocked()  # marked: nobody waited
        with trio.fail_after(_PATIENCE):
            assert await readiness.wait(fds[0]) == 1


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


async def test_a_round_reads_and_hands_over_every_request_before_any_reader_runs() -> None:
    # What an HTTP/1.1 connection relies on (its head is parsed in the round): both sockets'
    # bytes are read, and given to their arrived(), before either waiting task runs again.
    log: list[str] = []
    async with watched_pairs(2) as (readiness, pairs):

        def arrived(data: bytes) -> str:
            log.append(f"arrived {data.decode()}")
            return data.decode().upper()

        async def reader(fd: int) -> None:
            data, made = await readiness.read(fd, arrived)
            log.append(f"{data.decode()} -> {made}")

        async with trio.open_nursery() as nursery:
            for ours, _ in pairs:
                nursery.start_soon(reader, ours.fileno())
            await trio.testing.wait_all_tasks_blocked()
            assert log == []
            pairs[0][1].send(b"a")
            pairs[1][1].send(b"b")  # both before the watcher's next round
        assert sorted(log[:2]) == ["arrived a", "arrived b"]
        assert sorted(log[2:]) == ["a -> A", "b -> B"]


async def test_a_read_of_a_marked_socket_reads_in_the_callers_task() -> None:
    async with watched_pair() as (readiness, ours, theirs):
        theirs.send(b"early")
        await trio.testing.wait_all_tasks_blocked()  # a mark: nobody waited
        with trio.fail_after(_PATIENCE):
            assert await readiness.read(ours.fileno(), len) == (b"early", 5)
            # A mark with nothing behind it (a full read marks too): the read waits on.
            readiness.mark(ours.fileno())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_once_blocked, theirs, b"late")
                assert await readiness.read(ours.fileno(), len) == (b"late", 4)


async def test_a_marked_read_with_nothing_to_read_waits_in_trio_without_a_watch() -> None:
    # The watch stopped while a read took its mark (the schedule point), and the mark had
    # nothing behind it: no round will come, so the read waits in trio (it must not hang).
    ours, theirs = socket_pair()
    with ours, theirs:
        readiness = Readiness()  # not running, as after a stop
        readiness.mark(ours.fileno())
        got: list[tuple[bytes, int]] = []

        async def reader() -> None:
            got.append(await readiness.read(ours.fileno(), len))

        with trio.fail_after(_PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                assert got == []
                theirs.send(b"after")
        assert got == [(b"after", 5)]


def line_taker(sock: socket.socket) -> tuple[list[int], Callable[[int], bytes | None]]:
    """A ``take`` for :meth:`Readiness.read` that, as a TLS stream's does with records, keeps
    what it reads until it has a whole line (``None`` meanwhile, once the socket is drained);
    and the descriptors it was called with."""
    kept = bytearray()
    calls: list[int] = []

    def take(fd: int) -> bytes | None:
        calls.append(fd)
        while True:
            try:
                chunk = sock.recv(4)
            except BlockingIOError:
                return None
            if not chunk:
                return b""
            kept.extend(chunk)
            if kept.endswith(b"\n"):
                line = bytes(kept)
                kept.clear()
                return line

    return calls, take


async def test_a_round_reads_with_the_readers_take_and_waits_on_while_it_gives_nothing() -> None:
    async with watched_pair() as (readiness, ours, theirs):
        calls, take = line_taker(ours)
        fd = ours.fileno()

        async def client() -> None:
            await send_once_blocked(theirs, b"hal")
            while not calls:  # until a round has taken "hal" (and found no whole line)
                await trio.testing.wait_all_tasks_blocked()
            await send_once_blocked(theirs, b"f line\n")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(fd, bytes.upper, take) == (
                    b"half line\n",
                    b"HALF LINE\n",
                )
        assert calls == [fd, fd]  # two rounds: the piece, then the rest
        # The client goes: the take's b"" is the read's.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(send_once_blocked, theirs, b"", close=True))
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(fd, len, take) == (b"", 0)


async def test_a_marked_read_and_a_read_after_the_watch_stopped_use_the_readers_take() -> None:
    async with watched_pair() as (readiness, ours, theirs):
        calls, take = line_taker(ours)
        theirs.sendall(b"early\n")
        await trio.testing.wait_all_tasks_blocked()  # a mark: nobody waited
        with trio.fail_after(_PATIENCE):
            assert await readiness.read(ours.fileno(), len, take) == (b"early\n", 6)
        assert calls == [ours.fileno()]
    ours, theirs = socket_pair()
    with ours, theirs:
        readiness = Readiness()  # not running, as after a stop: the read waits in trio
        calls, take = line_taker(ours)
        readiness.mark(ours.fileno())
        got: list[tuple[bytes, int]] = []

        async def reader() -> None:
            got.append(await readiness.read(ours.fileno(), len, take))

        with trio.fail_after(_PATIENCE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                theirs.sendall(b"par")
                await trio.testing.wait_all_tasks_blocked()
                assert got == []
                theirs.sendall(b"t\n")
        assert got == [(b"part\n", 5)]


async def test_what_arrived_raises_is_raised_by_the_read() -> None:
    async with watched_pair() as (readiness, ours, theirs):

        def refuse(data: bytes) -> None:
            raise ValueError(f"refused {data!r}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_once_blocked, theirs, b"bad")
            with trio.fail_after(_PATIENCE), pytest.raises(ValueError, match="b'bad'"):
                await readiness.read(ours.fileno(), refuse)
        # The watch goes on serving.
        theirs.send(b"good")
        with trio.fail_after(_PATIENCE):
            assert await readiness.read(ours.fileno(), bytes.upper) == (b"good", b"GOOD")


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_read_gives_empty_bytes_when_the_client_goes(how: str) -> None:
    async with watched_pair() as (readiness, ours, theirs):
        if how == "reset":
            ours.send(b"unread")  # theirs closed with this unread: a reset (ECONNRESET)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(send_once_blocked, theirs, b"", close=True))
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(ours.fileno(), len) == (b"", 0)


async def test_a_close_that_comes_with_the_last_bytes_ends_the_next_read() -> None:
    # Edge-triggered: the bytes and the close come as one event. The read that takes the
    # bytes cannot tell that the close is behind them, so the event marks the socket: the
    # next read finds the end at once, not after the keep-alive timeout.
    async with watched_pair() as (readiness, ours, theirs):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(send_once_blocked, theirs, b"last request", close=True))
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(ours.fileno(), len) == (b"last request", 12)
        with trio.fail_after(_PATIENCE):
            assert await readiness.read(ours.fileno(), len) == (b"", 0)


async def test_a_full_read_in_a_round_marks_the_socket() -> None:
    async with watched_pair() as (readiness, ours, theirs):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_once_blocked, theirs, b"x" * (READ_SIZE + 100))
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(ours.fileno(), len) == (b"x" * READ_SIZE, READ_SIZE)
        with trio.fail_after(_PATIENCE):  # nothing new was sent: only the mark
            assert await readiness.read(ours.fileno(), len) == (b"x" * 100, 100)


async def test_a_read_of_a_forgotten_socket_fails_and_a_cancelled_one_leaves_nothing() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        async with running_readiness() as readiness:
            fd = ours.fileno()
            assert readiness.watch(fd)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(readiness.read, fd, len)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await readiness.wait(fd)  # one waiter per socket, whichever the kind
                nursery.cancel_scope.cancel()
            theirs.send(b"x")  # nobody reads: a mark, and no arrived() is called
            await trio.testing.wait_all_tasks_blocked()
            with trio.fail_after(_PATIENCE):
                assert await readiness.read(fd, len) == (b"x", 1)
            failed: list[BaseException] = []

            async def reader() -> None:
                try:
                    await readiness.read(fd, len)
                except trio.ClosedResourceError as exc:
                    failed.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                readiness.forget(fd)
            assert len(failed) == 1


async def test_a_read_waiting_when_the_watch_stops_goes_on_in_trio() -> None:
    ours, theirs = socket_pair()
    with ours, theirs:
        readiness = Readiness()
        got: list[tuple[bytes, int]] = []
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as watch:
                watch.start_soon(readiness.run)
                await trio.testing.wait_all_tasks_blocked()
                assert readiness.watch(ours.fileno())

                async def reader() -> None:
                    got.append(await readiness.read(ours.fileno(), len))

                outer.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                watch.cancel_scope.cancel()  # the server stops its watch
            assert not readiness.running
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            theirs.send(b"after")
        assert got == [(b"after", 5)]


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


async def test_cancelled_waits_and_reads_leave_nothing_also_on_a_reused_socket_number() -> None:
    # A socket's abort function is kept from one wait to the next, and dropped with the socket:
    # cancel waits and reads in turn, then close the socket and watch a new one that gets the
    # same descriptor number; each is served as if it were the first.
    async with running_readiness() as readiness:
        for _socket in range(2):
            ours, theirs = socket_pair()
            with ours, theirs:
                fd = ours.fileno()
                assert readiness.watch(fd)
                for waiting in (readiness.wait, partial(readiness.read, arrived=len)) * 2:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(waiting, fd)
                        await trio.testing.wait_all_tasks_blocked()
                        nursery.cancel_scope.cancel()
                theirs.send(b"now")
                await trio.testing.wait_all_tasks_blocked()
                with trio.fail_after(_PATIENCE):
                    assert await readiness.read(fd, len) == (b"now", 3)
                readiness.forget(fd)
                # Nothing is kept for a forgotten socket (a server forgets thousands).
                assert fd not in readiness._aborts
                assert fd not in readiness._waiters
                assert fd not in readiness._arrivals


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


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
async def test_requests_that_arrive_together_are_all_read_before_any_app_runs(
    secure: bool, tmp_path: object
) -> None:
    """Two keep-alive connections whose next requests arrive in the same round: the first app
    to run finds the other connection busy (its request read already), not still idle; both
    are answered."""
    import ssl

    import trustme

    from trioserve._eviction import Kind
    from trioserve._tls import TLSConfig

    idle_seen: list[int] = []
    server: Server

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["path"] == "/together":
            snapshots = [connection.snapshot() for connection in server.state.connections]
            idle_seen.append(sum(1 for s in snapshots if s is not None and s.kind is Kind.IDLE))
        await hello_app(scope, receive, send)

    client_context: ssl.SSLContext | None = None
    tls = None
    if secure:
        ca = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_context)
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        tls = TLSConfig(context=server_context)
    server = Server(app, Config(port=0, access_log=False, lifespan="off", tls=tls))

    def connect(address: tuple[str, int]) -> socket.socket:
        raw = socket.create_connection(address, timeout=_PATIENCE)
        if client_context is None:
            return raw
        return client_context.wrap_socket(raw, server_hostname="localhost")

    def answer(client: socket.socket) -> bytes:
        received = b""
        while not received.endswith(b"\n"):  # hello_app's body ends with a newline
            chunk = client.recv(65536)
            assert chunk, "the server closed before answering"
            received += chunk
        return received

    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        clients = [await trio.to_thread.run_sync(connect, address) for _ in range(2)]
        try:
            for client in clients:  # a first request each: from then on they are watched
                client.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await trio.to_thread.run_sync(answer, client)).startswith(b"HTTP/1.1 200")
            await trio.testing.wait_all_tasks_blocked()  # both idle in the server's watch
            for client in clients:  # no await between: one round of the watch sees both
                client.sendall(b"GET /together HTTP/1.1\r\nHost: x\r\n\r\n")
            with trio.fail_after(_PATIENCE):
                for client in clients:
                    response = await trio.to_thread.run_sync(answer, client)
                    assert response.startswith(b"HTTP/1.1 200")
                    assert response.endswith(b"GET /together\n")
        finally:
            for client in clients:
                client.close()
        server.begin_shutdown()
    # (The second app may find the first connection idle again: its response is done.)
    assert len(idle_seen) == 2
    assert idle_seen[0] == 0


async def test_a_round_counts_only_the_waits_it_ends_not_the_reads_it_served() -> None:
    # A wait() woken with others is told so (a TLS connection then lets them read first); a
    # read() the round served has read already, so it does not count.
    async with watched_pairs(3) as (readiness, pairs):
        fds = [ours.fileno() for ours, _ in pairs]
        counts: list[int] = []

        async def waiter(fd: int) -> None:
            counts.append(await readiness.wait(fd))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, fds[0])
            nursery.start_soon(readiness.read, fds[1], len)
            nursery.start_soon(readiness.read, fds[2], len)
            await trio.testing.wait_all_tasks_blocked()
            for _, theirs in pairs:
                theirs.send(b"x")  # all three before the watcher's next round
        assert counts == [1]


async def test_a_next_request_the_round_refuses_is_answered_400_and_the_connection_closes() -> None:
    # The keep-alive wait's round parses the next head (H11Connection._arrived); a refusal
    # raised there reaches the connection's task and is answered like any other.
    server = Server(hello_app, Config(port=0, access_log=False, lifespan="off"))

    def exchange(client: socket.socket, request: bytes) -> bytes:
        client.sendall(request)
        received = b""
        while not received.endswith(b"\n"):  # each response body here ends with a newline
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        return received

    def until_closed(client: socket.socket) -> bytes:
        rest = b""
        while chunk := client.recv(65536):
            rest += chunk
        return rest

    async with trio.open_nursery() as nursery:
        [address] = await nursery.start(server.serve)
        client = await trio.to_thread.run_sync(
            lambda: socket.create_connection(address, timeout=_PATIENCE)
        )
        with client:
            first = await trio.to_thread.run_sync(
                exchange, client, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert first.startswith(b"HTTP/1.1 200")
            await trio.testing.wait_all_tasks_blocked()
            [connection] = server.state.connections
            snapshot = connection.snapshot()
            assert snapshot is not None
            assert snapshot.kind.name == "IDLE"  # in the watch
            with trio.fail_after(_PATIENCE):
                refused = await trio.to_thread.run_sync(
                    exchange, client, b"GET /second HTTP/1.1\r\nHost: x\r\nBad\x01: y\r\n\r\n"
                )
                refused += await trio.to_thread.run_sync(until_closed, client)
        server.begin_shutdown()
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nconnection: close" in head.lower()
    assert body  # the reason, for the client


async def test_a_reader_whose_round_is_interrupted_goes_on_in_trio() -> None:
    # A KeyboardInterrupt raised while a round serves a read (here: by what the read hands the
    # bytes to) stops the watch; the reader is not stranded, it reads on in trio.
    ours, theirs = socket_pair()
    with ours, theirs:
        readiness = Readiness()
        calls: list[bytes] = []

        def arrived(data: bytes) -> int:
            calls.append(data)
            if len(calls) == 1:
                raise KeyboardInterrupt
            return len(data)

        got: list[tuple[bytes, int]] = []

        async def reader() -> None:
            got.append(await readiness.read(ours.fileno(), arrived))

        with trio.fail_after(_PATIENCE):
            async with trio.open_nursery() as outer:
                with pytest.RaisesGroup(KeyboardInterrupt):
                    async with trio.open_nursery() as watch:
                        watch.start_soon(readiness.run)
                        await trio.testing.wait_all_tasks_blocked()
                        assert readiness.watch(ours.fileno())
                        outer.start_soon(reader)
                        await trio.testing.wait_all_tasks_blocked()
                        theirs.send(b"first")
                assert not readiness.running
                await trio.testing.wait_all_tasks_blocked()
                assert got == []  # what the interrupted round read is lost
                theirs.send(b"second")
        assert calls == [b"first", b"second"]
        assert got == [(b"second", 6)]
