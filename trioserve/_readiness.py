"""Readiness of idle keep-alive sockets, watched by one epoll of the server's own.

Why not ``trio.lowlevel.wait_readable``: trio registers a socket with ``EPOLLONESHOT``, so every
wait re-arms it with an ``epoll_ctl`` system call and a round of trio's bookkeeping, and a
keep-alive connection waits once per request. Measured on a bare trio loop (read, parse with
httptools, write), that re-arming was about a quarter of the CPU per hello request (15.5 against
11.8 us).

Here a connection's socket is registered once, edge-triggered (``EPOLLET``), in an epoll of our
own, the first time it waits for a next request. One task per server (:meth:`Readiness.run`)
waits for that epoll to become readable (through trio, as for any descriptor), collects the
ready sockets in one ``epoll_wait`` and wakes the tasks that wait for them. A socket that became
readable while its task was busy is marked, and its next wait returns at once.

A task can also wait for a socket's next bytes *and* have the round read them
(:meth:`Readiness.read`): the round reads the socket and hands the bytes to the caller's
function (an HTTP/1.1 connection parses its next request head there) before it wakes the task.
On TLS the read is the caller's too (``take``: the transport's, which reads the socket into
its TLS stream and decrypts), so an HTTPS connection's next request is decrypted and parsed in
the round as well.
So a round of a busy server reads and parses every request that arrived in it, one after the
other in the watcher's task, before any app runs, and the responses then go out back to back:
the batching uvicorn gets from parsing in asyncio's read callback, without a second schedule of
each connection's task (see docs/architecture.md, "Reading a round before answering it").

Edge-triggered means an event comes when new bytes arrive, not while unread bytes remain: so a
read that fills its whole buffer (more may be waiting) marks the socket ready itself
(:meth:`Readiness.mark`, done by the transport and by a round's own read for :meth:`read`; the
TLS stream instead reads its socket before waiting after a full read), and a wake-up with
nothing to read is harmless (the reader gets ``EAGAIN`` and waits again). An HTTP/1.1
connection is watched from its first wait for a next request on, an HTTP/2 one from its first
frame read; from then on its reads wait here (``Transport.receive`` too, and on TLS the TLS
stream's reads of its socket); its writes stay with trio.

A watched socket must be forgotten (:meth:`Readiness.forget`) before it is closed, so that a
descriptor number reused by a new connection never inherits a mark or a registration: the
transport's ``close`` and ``reset`` do it (on TLS, the TLS stream's ``aclose``). A task waiting
here when that happens gets ``trio.ClosedResourceError``, as from trio's own wait, also when it
was at the schedule point of a wait that found its mark (each registration is numbered, so a
socket forgotten and its number watched again meanwhile is told apart).

A mark is taken only by a wait that returns: a wait cancelled at its schedule point leaves it
for the next one (else the next wait would sleep on bytes already in the socket, since edge
triggering reports them only once). A registration the kernel refuses (``ENOSPC`` at
``fs.epoll.max_user_watches``, ``ENOMEM``) leaves the connection with trio's wait.

Where epoll does not exist (trio's other I/O managers), :meth:`Readiness.run` never starts
serving and every connection keeps trio's wait.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
from collections.abc import Callable
from typing import Final, TypeVar

import outcome
import trio

from ._errors import GONE_ERRNOS

__all__ = ["READ_SIZE", "Readiness", "read_now"]

T = TypeVar("T")

#: Bytes asked for by one read of a connection's socket. 64 KiB: one read is enough for any
#: ordinary request head and keeps per-read overhead low on bodies.
READ_SIZE: Final = 64 * 1024

# trio's low-level calls made for every request, bound once: ``trio.lowlevel.x`` is two attribute
# reads at each use, the first through a module that has a ``__getattr__`` (about 30 ns against 7
# for a global).
_current_task: Final = trio.lowlevel.current_task
_wait_task_rescheduled: Final = trio.lowlevel.wait_task_rescheduled
_reschedule: Final = trio.lowlevel.reschedule
_ABORTED: Final = trio.lowlevel.Abort.SUCCEEDED

# Events taken from the kernel per epoll_wait: the ready sockets of one trio scheduling round on
# a busy server; any more stay queued in the kernel and are taken on the next round.
_BATCH: Final = 256
_WATCH: Final = (
    select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET if hasattr(select, "epoll") else 0
)
# Events that say the client closed (or reset) the connection. Edge triggering reports a close
# that comes with the last bytes in the same event as the bytes: the read that takes them cannot
# tell, so such an event also marks the socket, and the next wait finds the end at once (rather
# than after the keep-alive timeout).
_CLOSED: Final = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR if _WATCH else 0


def read_now(fd: int, max_bytes: int = READ_SIZE) -> bytes | None:
    """Read the socket ``fd`` without waiting: ``None`` if nothing is there, ``b""`` if the
    client closed or reset the connection."""
    try:
        return os.read(fd, max_bytes)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno not in GONE_ERRNOS:
            raise
        return b""


class Readiness:
    """Wakes the tasks whose watched sockets became readable (see the module)."""

    __slots__ = (
        "_aborts",
        "_arrivals",
        "_epoll",
        "_ready",
        "_registrations",
        "_serials",
        "_waiters",
        "running",
    )

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        # The task waiting for each socket, and the sockets that became readable while no task
        # waited (their next wait returns at once).
        self._waiters: dict[int, trio.lowlevel.Task] = {}
        # For a waiter in read(): the function its round reads with, and the one it hands the
        # bytes to.
        self._arrivals: dict[int, tuple[Callable[[int], bytes | None], Callable[[bytes], object]]]
        self._arrivals = {}
        self._ready: set[int] = set()
        # Each watched socket's registration number (see wait()); one entry per watched
        # connection, dropped by forget().
        self._registrations: dict[int, int] = {}
        # Each watched socket's abort function for trio (see _abort_for), made when it is first
        # needed and kept until forget(): a closure made for every wait cost about 175 ns.
        self._aborts: dict[int, Callable[[object], trio.lowlevel.Abort]] = {}
        self._serials = itertools.count()
        #: Whether :meth:`run` serves waits (else connections use trio's own wait).
        self.running = False

    def watch(self, fd: int) -> bool:
        """Register the socket ``fd`` for :meth:`wait`; whether it is watched (``False``: use
        trio's wait)."""
        epoll = self._epoll
        if epoll is None:
            return False
        try:
            try:
                epoll.register(fd, _WATCH)
            except FileExistsError:
                # A registration left over from a closed socket with the same number (a close
                # that bypassed forget()): take it over.
                epoll.modify(fd, _WATCH)
        except OSError:
            # The kernel's limit on watched descriptors (ENOSPC) or memory (ENOMEM): this
            # connection keeps trio's wait, as if the server had no epoll of its own.
            return False
        self._ready.discard(fd)
        self._registrations[fd] = next(self._serials)
        return True

    def mark(self, fd: int) -> None:
        """The socket ``fd`` may have more to read than the last read took (no event will say
        so): its next wait returns at once."""
        self._ready.add(fd)

    async def wait(self, fd: int) -> int:
        """Wait until the watched socket ``fd`` is readable (a schedule point, like trio's).

        Returns:
            How many wait()s the round that woke this one ended (1 for a socket that was
            marked ready already; the read()s a round serves have read already): more than one
            means other connections are about to read too (``H11Connection`` lets them, before
            it answers; see ``_h11._keepalive``).

        Raises:
            trio.ClosedResourceError: the socket was forgotten (closed) meanwhile.
            trio.BusyResourceError: another task waits for this socket's next event already.
                (Two tasks that both find the socket marked both return, and the one that
                reads second finds nothing and waits again: harmless.)
        """
        ready = self._ready
        if fd in ready:
            registration = self._registrations.get(fd)
            # Cancelled here, the mark stays for the next wait: it is taken only below.
            await trio.lowlevel.checkpoint()
            if self._registrations.get(fd) != registration:
                # Forgotten (closed) by another task meanwhile, and maybe watched again for a
                # new connection: not this connection's mark any more.
                raise trio.ClosedResourceError("the connection was closed while it waited")
            ready.discard(fd)
            return 1
        waiters = self._waiters
        if fd in waiters:
            # As trio's own wait: one waiter per socket (a second would strand the first).
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        waiters[fd] = _current_task()
        woken: int = await _wait_task_rescheduled(self._aborts.get(fd) or self._abort_for(fd))
        return woken

    async def read(
        self,
        fd: int,
        arrived: Callable[[bytes], T],
        take: Callable[[int], bytes | None] = read_now,
    ) -> tuple[bytes, T]:
        """Wait until the watched socket ``fd`` has bytes, read them (at most
        :data:`READ_SIZE`) and return them with what ``arrived(data)`` made of them.

        The read and ``arrived`` happen in the round that finds the socket readable (in the
        watcher's task, before the waiting task runs again), or in the caller's task for a
        socket marked ready already. ``data`` is ``b""`` when the client closed or reset the
        connection. ``arrived`` must not block, and should be quick: a round calls it for each
        of its sockets in turn.

        ``take(fd)`` is the read: by default :func:`read_now` of the socket; a TLS connection
        passes one that reads the socket into its TLS stream and returns the plaintext. It
        must not block, must return ``None`` only once the socket is drained (edge triggering
        says nothing of bytes left behind), ``b""`` for a client gone, and raise nothing but a
        bug: its bytes are the caller's as soon as it returns.

        Raises:
            Whatever ``arrived`` raises (the bytes it was given are consumed).
            trio.ClosedResourceError: the socket was forgotten (closed) meanwhile.
            trio.BusyResourceError: another task waits for this socket already.
            OSError: the read failed otherwise than by a client gone (a bug).
        """
        if fd in self._ready:
            await self.wait(fd)  # the mark (a schedule point, like trio's)
            data = take(fd)
            if data is not None:
                if take is read_now and len(data) == READ_SIZE:
                    self._ready.add(fd)
                return data, arrived(data)
            # A mark with nothing behind it: wait for the next event as below, in trio if the
            # watch stopped meanwhile (no round would wake us).
            if not self.running:
                return await _read_in_trio(fd, arrived, take)
        waiters = self._waiters
        if fd in waiters:
            raise trio.BusyResourceError("another task is already waiting to read this socket")
        waiters[fd] = _current_task()
        self._arrivals[fd] = (take, arrived)
        try:
            got: tuple[bytes, T] = await _wait_task_rescheduled(
                self._aborts.get(fd) or self._abort_for(fd)
            )
        except _Stopped:
            # The watch stopped (the server is stopping): wait in trio, read here.
            return await _read_in_trio(fd, arrived, take)
        return got

    def _abort_for(self, fd: int) -> Callable[[object], trio.lowlevel.Abort]:
        """The function trio calls when a wait for ``fd`` is cancelled (kept for the socket's
        next waits; forget() drops it)."""
        waiters = self._waiters
        arrivals = self._arrivals

        def abort(_: object) -> trio.lowlevel.Abort:
            # trio aborts only a task that still waits, and a socket has one waiter at a time:
            # the entries are the cancelled wait's (a round takes a waiter's entries and
            # reschedules it before any other task runs; forget() does both at once). Popped,
            # not deleted: a round interrupted between the two (KeyboardInterrupt) leaves a
            # waiter with no entry, and an abort must not raise inside trio's cancellation.
            waiters.pop(fd, None)
            arrivals.pop(fd, None)
            return _ABORTED

        self._aborts[fd] = abort
        return abort

    def forget(self, fd: int) -> None:
        """The socket ``fd`` is about to be closed: unregister it and fail its waiter."""
        self._ready.discard(fd)
        self._registrations.pop(fd, None)
        self._aborts.pop(fd, None)
        self._arrivals.pop(fd, None)
        task = self._waiters.pop(fd, None)
        if task is not None:
            error = trio.ClosedResourceError("the connection was closed while it waited")
            _reschedule(task, outcome.Error(error))
        if self._epoll is not None:
            # Already gone from the kernel's set if the socket was closed elsewhere.
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    async def run(self) -> None:
        """Wake waiting tasks as their sockets become readable, until cancelled."""
        if not _WATCH:
            await trio.sleep_forever()  # pragma: no cover - not Linux
        epoll = self._epoll = select.epoll()
        waiters = self._waiters
        arrivals = self._arrivals
        self.running = True
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                # The tasks this round wakes, each with what its read() returns (None: a
                # wait(), which returns how many wait()s the round woke: the tasks that still
                # have to read, see wait()). Woken in `finally`: a task taken off `waiters`
                # must not be stranded by an exception mid-round (KeyboardInterrupt).
                woken: list[tuple[trio.lowlevel.Task, outcome.Outcome[object] | None]] = []
                count = 0
                try:
                    count = self._round(epoll.poll(0, _BATCH), woken)
                finally:
                    for task, got in woken:
                        _reschedule(task, outcome.Value(count) if got is None else got)
        finally:
            self.running = False
            self._epoll = None
            # Whoever still waits (the server is stopping) goes on with trio's own wait: a
            # wait() returns as if woken, a read() reads in its own task (or waits in trio).
            for fd, task in waiters.items():
                reading = arrivals.get(fd)
                if reading is None:
                    trio.lowlevel.reschedule(task, outcome.Value(1))
                else:
                    trio.lowlevel.reschedule(task, outcome.Error(_Stopped()))
            waiters.clear()
            arrivals.clear()
            self._aborts.clear()
            self._ready.clear()
            epoll.close()

    def _round(
        self,
        events: list[tuple[int, int]],
        woken: list[tuple[trio.lowlevel.Task, outcome.Outcome[object] | None]],
    ) -> int:
        """One round of :meth:`run`: take the waiters of the ready sockets into ``woken``, with
        what each read() returns (read and handed to its function here); mark the sockets
        nobody waits for. Returns how many wait()s it took."""
        waiters = self._waiters
        arrivals = self._arrivals
        ready = self._ready
        waits = 0
        for fd, events_of_fd in events:
            task = waiters.pop(fd, None)
            if task is None:
                ready.add(fd)
                continue
            reading = arrivals.pop(fd, None)
            if reading is None:
                waits += 1
                woken.append((task, None))
                continue
            if events_of_fd & _CLOSED:
                # Only for a read() (the keep-alive wait): a wait() during a request (its body,
                # a disconnect watch) is left as before, so that a client that half-closes
                # after its request still gets its response.
                ready.add(fd)
            result: outcome.Outcome[object]
            take, arrived = reading
            try:
                data = take(fd)
                if data is None:
                    # Woken with nothing to read (harmless), or on TLS only part of a record:
                    # wait for the next event.
                    waiters[fd] = task
                    arrivals[fd] = reading
                    continue
                if take is read_now and len(data) == READ_SIZE:
                    ready.add(fd)  # more may wait: see mark()
                result = outcome.Value((data, arrived(data)))
            except Exception as exc:
                result = outcome.Error(exc)
            except BaseException:
                # (KeyboardInterrupt mid-read.) Back among the waiters: run()'s stop sends it
                # on to trio's wait, which reads again (what this read took is lost).
                waiters[fd] = task
                arrivals[fd] = reading
                raise
            woken.append((task, result))
        return waits


class _Stopped(Exception):
    """The watch stopped while a :meth:`Readiness.read` waited (never escapes ``read``)."""


async def _read_in_trio(
    fd: int, arrived: Callable[[bytes], T], take: Callable[[int], bytes | None]
) -> tuple[bytes, T]:
    """:meth:`Readiness.read` once the watch has stopped: wait in trio, read in this task."""
    while (data := take(fd)) is None:
        await trio.lowlevel.wait_readable(fd)
    return data, arrived(data)
