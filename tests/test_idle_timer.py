"""The server's keep-alive timer (trioserve._http._idle): one task ends every idle wait."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from trioserve._http._idle import IdleTimer


class Sleeper:
    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self._log = log

    def idle_expired(self) -> None:
        self._log.append((self.name, trio.current_time()))


async def test_waits_end_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    timer = IdleTimer(5.0)
    a, b, c = Sleeper("a", log), Sleeper("b", log), Sleeper("c", log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.sleep(0.5)
        start = trio.current_time()
        timer.wait(a, start)
        await trio.sleep(1)
        timer.wait(b, trio.current_time())
        timer.wait(c, trio.current_time())
        timer.done(c)  # a request came: c is no longer idle
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert log == [("a", start + 5), ("b", start + 6)]
    assert not timer.running


async def test_going_idle_again_moves_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, float]] = []
    timer = IdleTimer(5.0)
    a, b = Sleeper("a", log), Sleeper("b", log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        start = trio.current_time()
        timer.wait(a, start)
        timer.wait(b, start)
        await trio.sleep(3)
        timer.wait(a, trio.current_time())  # a served a request and went idle again
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert log == [("b", start + 5), ("a", start + 8)]


async def test_a_burst_of_expiries_is_ended_in_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    timer = IdleTimer(1.0)
    sleepers = [Sleeper(str(i), log) for i in range(1000)]
    seen: list[int] = []

    async def other() -> None:
        # Another task, runnable all along: it sees how many waits ended between its turns.
        await trio.sleep_until(start + 1)
        while len(log) < 1000:
            seen.append(len(log))
            await trio.lowlevel.checkpoint()
        seen.append(len(log))

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for sleeper in sleepers:
            timer.wait(sleeper, start)
        nursery.start_soon(timer.run)
        nursery.start_soon(other)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in log] == [str(i) for i in range(1000)]
    # At most one batch (100) per turn of each task; two in a row when trio runs the timer
    # last in one scheduling batch and first in the next.
    steps = [after - before for before, after in itertools.pairwise(seen)]
    assert len(seen) > 5
    assert max(steps) <= 200


async def test_a_zero_timeout_leaves_the_waits_to_the_connections_and_does_not_spin() -> None:
    # keep_alive_timeout=0 is valid; the timer must not spin on sleep(0) while nothing waits.
    timer = IdleTimer(0.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        # A spinning task is never blocked: this bound (real time) is only the failure case.
        with trio.move_on_after(5) as waiting:
            await trio.testing.wait_all_tasks_blocked()
        assert not waiting.cancelled_caught
        assert not timer.running  # connections use their own deadlines (closing at once)
        nursery.cancel_scope.cancel()


async def test_now_is_the_runs_clock_while_the_timer_runs_and_trios_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The head wait reads the time through IdleTimer.now (one call where trio.current_time()
    # is three): while run() runs, the run's own clock; before and after, trio.current_time.
    timer = IdleTimer(5.0)
    assert timer.now is trio.current_time
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        await trio.sleep(1.5)
        assert timer.now == autojump_clock.current_time  # the MockClock's own method
        assert timer.now() == trio.current_time()
        nursery.cancel_scope.cancel()
    assert timer.now is trio.current_time
    assert not timer.running
