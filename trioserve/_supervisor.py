"""``--workers N``: a supervisor process and N worker processes sharing the listening sockets.

Theory of operation
-------------------
The supervisor opens every listener once, then starts each worker as ``python -m trioserve``
with the same command line plus the hidden ``--worker-fds`` (the inherited listening sockets,
which replace the worker's own binds) and ``--worker-ready-fd`` (a pipe the worker writes one
byte to once it accepts). The kernel spreads new connections over the workers that accept on a
shared socket.

* A worker that exits on its own is replaced: at once after a clean exit (``--max-requests``
  recycling), after a growing pause (0.5 s doubling to 30 s) after a crash; a worker that keeps
  failing before it is ready stops the supervisor with a clear message (no restart loop).
* SIGTERM/SIGINT: every worker gets SIGTERM and drains (in-flight requests finish within
  ``--graceful-timeout``; idle connections are answered or time out, see below); after the grace
  period and a margin, what is left is killed. A second signal kills at once.
* SIGTERM with ``--shutdown-delay S``: first SIGUSR2 to every worker (the health path answers
  503 from then on) and S seconds of serving on, then the drain above.
* SIGHUP: a rolling restart, one worker at a time: start the new one, wait until it accepts,
  then drain the old one. Workers drain *softly*: an idle keep-alive connection is not closed
  under a client that may be sending on it; its next request is answered with
  ``Connection: close`` (or it times out), so even a client that never retries loses nothing.
  Code and certificates are loaded afresh by the new workers.

The supervisor is plain blocking Python (subprocess, signals, a poll loop bounded by short
timeouts): it serves no traffic itself.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ._config import Config
from ._listeners import close_listener, open_listeners
from ._metrics_hub import MetricsHub
from ._notify import Notifier

__all__ = ["Supervisor", "inherited_listeners", "supervise"]

error_log = logging.getLogger("trioserve.error")

_FIRST_BACKOFF: Final = 0.5
_MAX_BACKOFF: Final = 30.0
# A worker that dies before it is ready this many times in a row means a broken deployment
# (an import error, a failing lifespan startup): stop instead of looping.
_MAX_EARLY_FAILURES: Final = 5
_READY_TIMEOUT: Final = 60.0
_KILL_MARGIN: Final = 5.0  # seconds after the grace period (and lifespan shutdown) before SIGKILL


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    ready_read: int
    started: float
    ready: bool = False
    retiring: bool = False
    metrics_bind: str | None = None


@dataclass
class _State:
    workers: list[_Worker] = field(default_factory=list)
    stopping: bool = False
    forced: bool = False
    rolling: bool = False
    early_failures: int = 0
    backoff: float = _FIRST_BACKOFF


class Supervisor:
    def __init__(self, config: Config, count: int, argv: Sequence[str]) -> None:
        self.config = config
        self.count = count
        self.argv = list(argv)
        self.listeners = open_listeners(config)
        #: With --metrics-bind: the figures of every worker, summed (see _metrics_hub).
        self.metrics = None if config.metrics_bind is None else MetricsHub(config.metrics_bind)
        self.state = _State()
        self.signals: list[int] = []
        self.restart_at: list[float] = []
        self.notifier = Notifier(None)
        self._announced_ready = False
        self._stop_signal: int = signal.SIGTERM

    def bound(self) -> list[tuple[Any, str]]:
        """The listeners' ``(address, scheme)``."""
        secure_scheme = "https" if self.config.tls is not None else "http"
        return [
            (_address(sock), secure_scheme if secure else "http") for sock, secure in self.listeners
        ]

    # -- workers ------------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        read_fd, write_fd = os.pipe()
        fds = ",".join(
            f"{sock.fileno()}:{'tls' if secure else 'plain'}" for sock, secure in self.listeners
        )
        metrics = [] if self.metrics is None else ["--metrics-bind", self.metrics.worker_bind()]
        command = [
            sys.executable,
            "-m",
            "trioserve",
            *self.argv,
            *metrics,
            "--worker-fds",
            fds,
            "--worker-ready-fd",
            str(write_fd),
        ]
        keep = (*(sock.fileno() for sock, _ in self.listeners), write_fd)
        # A session of its own: signals sent to the supervisor's process group (Ctrl-C,
        # systemd) reach the workers only through the supervisor, once.
        process = subprocess.Popen(command, pass_fds=keep, start_new_session=True)
        os.close(write_fd)
        return _Worker(
            process, read_fd, time.monotonic(), metrics_bind=metrics[-1] if metrics else None
        )

    def _check_ready(self, timeout: float) -> None:
        waiting = {w.ready_read: w for w in self.state.workers if not w.ready and w.ready_read >= 0}
        if not waiting:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            worker = waiting[fd]
            if os.read(fd, 1):
                worker.ready = True
                if self.metrics is not None and worker.metrics_bind is not None:
                    self.metrics.watch(worker.metrics_bind)
                self.state.early_failures = 0
                self.state.backoff = _FIRST_BACKOFF
            os.close(fd)
            worker.ready_read = -1

    def _kill_stuck(self) -> None:
        """A worker that is neither ready nor dead long after its start (a hang in an import,
        say) is killed; the reaper then counts it as a failure before readiness."""
        limit = _READY_TIMEOUT + self.config.lifespan_startup_timeout
        now = time.monotonic()
        for worker in self.state.workers:
            stuck = not worker.ready and not worker.retiring and now - worker.started > limit
            if stuck and worker.process.poll() is None:
                error_log.error(
                    "Worker %d was not ready after %g s: killing it", worker.process.pid, limit
                )
                worker.process.kill()

    def _reap(self) -> None:
        for worker in list(self.state.workers):
            code = worker.process.poll()
            if code is None:
                continue
            self.state.workers.remove(worker)
            if worker.ready_read >= 0:
                os.close(worker.ready_read)
            if self.state.stopping or worker.retiring:
                continue
            if not worker.ready:
                self.state.early_failures += 1
                error_log.error(
                    "Worker %d exited with status %s before it was ready (%d in a row)",
                    worker.process.pid,
                    code,
                    self.state.early_failures,
                )
            elif code != 0:
                error_log.error("Worker %d exited with status %s", worker.process.pid, code)
            if code == 0 and worker.ready:
                self.restart_at.append(time.monotonic())  # recycled: replace at once
            else:
                self.restart_at.append(time.monotonic() + self.state.backoff)
                self.state.backoff = min(self.state.backoff * 2, _MAX_BACKOFF)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        try:
            if self.metrics is not None:
                self.metrics.start()
            for _ in range(self.count):
                self.state.workers.append(self._spawn())
            while True:
                self._handle_signals()
                if self.state.stopping:
                    return self._stop()
                if self.state.early_failures >= _MAX_EARLY_FAILURES:
                    error_log.error(
                        "Workers keep failing at startup (%d times in a row): stopping; see "
                        "their errors above",
                        self.state.early_failures,
                    )
                    self.state.stopping = True
                    self._stop()
                    return 1
                now = time.monotonic()
                for due in [t for t in self.restart_at if t <= now]:
                    self.restart_at.remove(due)
                    self.state.workers.append(self._spawn())
                self._check_ready(0.1)
                if not self._announced_ready and sum(w.ready for w in self.state.workers) >= (
                    self.count
                ):
                    self._announced_ready = True
                    error_log.info("All %d workers are ready", self.count)
                    self.notifier.ready()
                self._kill_stuck()
                self._reap()
        finally:
            for sock, _ in self.listeners:
                close_listener(sock)
            if self.metrics is not None:
                self.metrics.stop()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGUSR1:
                for worker in self.state.workers:  # log rotation: the workers reopen
                    if worker.process.poll() is None:
                        worker.process.send_signal(signal.SIGUSR1)
            elif signum == signal.SIGHUP:
                if not self.state.stopping:
                    self.notifier.reloading()
                    self._rolling_restart()
                    self.notifier.ready()
            elif self.state.stopping:
                self.state.forced = True
            else:
                self.notifier.stopping()
                self._stop_signal = signum
                error_log.info(
                    "%s: draining %d workers", signal.Signals(signum).name, len(self.state.workers)
                )
                self.state.stopping = True

    def _rolling_restart(self) -> None:
        current = [w for w in self.state.workers if not w.retiring]
        error_log.info("SIGHUP: restarting %d workers one at a time", len(current))
        # Further SIGHUPs that arrived meanwhile are served by this very roll.
        self.signals = [s for s in self.signals if s != signal.SIGHUP]
        for old in current:
            new = self._spawn()
            self.state.workers.append(new)
            deadline = time.monotonic() + _READY_TIMEOUT
            while not new.ready and new.process.poll() is None and time.monotonic() < deadline:
                self._check_ready(0.1)
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals):
                    return  # a shutdown interrupts the roll
            if not new.ready:
                # Broken new code, say: drop the new worker and keep serving with the old ones
                # (not an early failure that would count towards stopping the supervisor).
                new.retiring = True
                if new.process.poll() is None:
                    new.process.kill()
                new.process.wait()
                self.state.workers.remove(new)
                if new.ready_read >= 0:
                    os.close(new.ready_read)
                error_log.error("A new worker did not become ready; keeping the old ones")
                return
            old.retiring = True
            old.process.send_signal(signal.SIGTERM)
        error_log.info("Rolling restart complete")

    def _delay_shutdown(self) -> None:
        """``--shutdown-delay`` on SIGTERM: the workers report unready (SIGUSR2: the health path
        answers 503) and go on serving for the delay; a second signal cuts it short."""
        delay = self.config.shutdown_delay
        if self._stop_signal != signal.SIGTERM or delay <= 0:
            return
        error_log.info("Serving on for %gs with the health path answering 503", delay)
        for worker in self.state.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.state.forced:
            self._handle_signals()
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _stop(self) -> int:
        self._delay_shutdown()
        # Stop listening at once: new clients are refused rather than left queued until the
        # end of the drain (the workers keep their own copies for what they already accepted).
        for sock, _ in self.listeners:
            close_listener(sock)
        for worker in self.state.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        config = self.config
        deadline = (
            time.monotonic()
            + config.graceful_timeout
            + config.lifespan_shutdown_timeout
            + _KILL_MARGIN
        )
        while any(w.process.poll() is None for w in self.state.workers):
            self._handle_signals()
            if self.state.forced or time.monotonic() > deadline:
                for worker in self.state.workers:
                    if worker.process.poll() is None:
                        worker.process.kill()
                break
            time.sleep(0.05)
        for worker in self.state.workers:
            worker.process.wait()
        error_log.info("All workers stopped")
        return 1 if self.state.forced else 0


def supervise(
    config: Config,
    count: int,
    argv: Sequence[str],
    *,
    announce: Callable[[list[tuple[Any, str]]], None] | None = None,
    notify_socket: str | None = None,
) -> int:
    """Run ``count`` workers with the command line ``argv``; returns the exit status.

    ``announce`` gets the listeners' ``(address, scheme)`` once they are open; systemd hears
    of the states through ``notify_socket`` (``$NOTIFY_SOCKET``).

    Raises:
        OSError: a listener cannot be opened.
    """
    supervisor = Supervisor(config, count, argv)
    supervisor.notifier = Notifier(notify_socket)
    if announce is not None:
        announce(supervisor.bound())
    return supervisor.run()


def _address(sock: socket.socket) -> Any:
    name = sock.getsockname()
    return name if isinstance(name, str) else (str(name[0]), int(name[1]))


def inherited_listeners(spec: str) -> list[tuple[socket.socket, bool]]:
    """The worker side of ``--worker-fds``: ``FD:tls`` / ``FD:plain`` pairs."""
    listeners = []
    for item in spec.split(","):
        fd_text, _, kind = item.partition(":")
        sock = socket.socket(fileno=int(fd_text))
        sock.setblocking(False)
        listeners.append((sock, kind == "tls"))
    return listeners
