"""The keep-alive timeout of every idle HTTP/1.1 connection, kept by one task per server.

Why not a deadline on each connection's cancel scope: moving a trio deadline costs a context
manager and a heap operation (about 3-5 us), and a keep-alive connection moved its deadline
twice per request (set when it went idle, cleared when the next request arrived): a measurable
part of a small request. Here going idle is a dict insert (moving the connection's entry to the
end), and leaving idleness costs nothing: an HTTP/1.1 connection leaves its entry in place until
it goes idle again or closes (:meth:`IdleTimer.done`), and if its deadline comes first, the timer
ends the wait of a connection that is no longer idle, which its ``idle_expired`` ignores.

Every idle wait has the same timeout (``keep_alive_timeout``), so the dict's insertion order is
deadline order: the task sleeps until the oldest deadline, ends the waits that are due, and
sleeps again. With nothing waiting it sleeps a whole timeout (nothing added meanwhile can be due
sooner), so adding never has to wake it. (The first request's wait has its own timeout,
``header_timeout``, and stays on the connection's cancel scope: once per connection.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

__all__ = ["IdleTimer", "Sleeper"]

# Expired waits ended in a row before the task lets others run (a burst of expiries after a
# flood of idle connections must not hold the event loop).
_BATCH = 100


class Sleeper(Protocol):
    """A connection whose idle wait the timer can end."""

    def idle_expired(self) -> None:
        """The keep-alive timeout passed since it went idle: close quietly if it still is
        (a sleeper that leaves its entry while busy must check)."""


class IdleTimer:
    """Ends idle keep-alive waits once ``timeout`` seconds have passed (see the module)."""

    __slots__ = ("_timeout", "_waiting", "now", "running")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._waiting: dict[Sleeper, float] = {}
        #: Whether :meth:`run` is running; without it, connections keep their own deadlines.
        self.running = False
        #: trio's clock (``trio.current_time()``): while :meth:`run` runs, the run's clock's own
        #: method, one call where ``trio.current_time()`` is three (read once per keep-alive
        #: request).
        self.now: Callable[[], float] = trio.current_time

    def wait(self, sleeper: Sleeper, since: float) -> None:
        """``sleeper`` went idle at ``since``; it is told when its timeout has passed.

        (:meth:`arm` repeats these three lines rather than call this: it runs once per
        keep-alive request. Change both together.)"""
        waiting = self._waiting
        # Re-inserted at the end (a dict keeps a re-assigned key where it was).
        waiting.pop(sleeper, None)
        waiting[sleeper] = since + self._timeout

    def arm(self, sleeper: Sleeper, since: float, fallback: trio.CancelScope) -> bool:
        """``sleeper`` went idle at ``since``: time its wait here while :meth:`run` runs
        (``True``), else on ``fallback``'s deadline (``False``: a connection served without a
        running server, as in tests; the caller clears that deadline itself)."""
        if self.running:
            # wait(), inlined (once per request).
            waiting = self._waiting
            waiting.pop(sleeper, None)
            waiting[sleeper] = since + self._timeout
            return True
        fallback.deadline = since + self._timeout
        return False

    def done(self, sleeper: Sleeper) -> None:
        """``sleeper`` is no longer idle (HTTP/2: a frame came; HTTP/1.1 calls it only when it
        closes, see the module)."""
        self._waiting.pop(sleeper, None)

    async def run(self) -> None:
        """End due waits until cancelled (the server runs this for as long as it serves)."""
        waiting = self._waiting
        if self._timeout <= 0:
            # Fixed (review): keep_alive_timeout=0 (valid: no keep-alive wait at all) made the
            # empty timer sleep(0) in a loop, a core spent spinning. Nothing to time then: the
            # connections keep their own (immediate) deadlines, as without a timer.
            await trio.sleep_forever()
        self.running = True
        self.now = trio.lowlevel.current_clock().current_time
        try:
            while True:
                now = trio.current_time()
                ended = 0
                while waiting and ended < _BATCH:
                    sleeper, deadline = next(iter(waiting.items()))
                    if deadline > now:
                        break
                    del waiting[sleeper]
                    sleeper.idle_expired()
                    ended += 1
                if ended == _BATCH:
                    await trio.lowlevel.checkpoint()
                elif waiting:
                    await trio.sleep_until(next(iter(waiting.values())))
                else:
                    await trio.sleep(self._timeout)
        finally:
            self.running = False
            self.now = trio.current_time
