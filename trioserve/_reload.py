"""``--reload``: restart the serving process when the app's files change (development).

Theory of operation
-------------------
This is the ``--workers`` supervisor (``_supervisor``) with one worker and a file watcher: the
reloader opens the listening sockets once and keeps them for its whole life, and each serving
process is a ``python -m trioserve`` worker that inherits them. So a restart never refuses a
connection: while no process accepts, new clients wait in the kernel's listen backlog.

On a change the reloader starts a new worker with the code as it now is and, once that one
accepts, sends the old one SIGTERM (it drains softly, as in a rolling restart). A new worker that
fails to start (an import error after an edit) has printed its traceback; the previous one, if
any, goes on serving, and the reloader waits for the next change instead of exiting. A change
while a new worker is still starting replaces that worker with a newer one.

The watcher is ``watchfiles`` (its Rust core, polled every 100 ms so that signals are handled
promptly), an optional dependency: ``pip install 'trioserve[reload]'``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._config import Config
from ._errors import ConfigError
from ._listeners import close_listener
from ._supervisor import Supervisor

__all__ = ["ReloadSettings", "reload_forever"]

error_log = logging.getLogger("trioserve.error")

# watchfiles yields after `_STEP` ms without further changes (an editor's save is a burst of
# events within a few ms), and at the latest after `_DEBOUNCE` ms of continuous changes (a
# `git checkout`): well within the "about a second" a developer expects.
_STEP: Final = 50
_DEBOUNCE: Final = 400
# How long the watcher blocks before giving the loop a turn (signals, worker readiness).
_POLL_MS: Final = 100


@dataclass(frozen=True, slots=True)
class ReloadSettings:
    """What to watch: ``dirs`` (recursively), files matching ``include`` but not ``exclude``.

    Patterns are shell-style (``*.py``, ``templates/*``), matched against a file's name and its
    path relative to the watched directory.
    """

    dirs: tuple[str, ...]
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()


def _matches(path: str, roots: Sequence[str], patterns: Sequence[str]) -> bool:
    candidates = [os.path.basename(path), path]
    candidates += [os.path.relpath(path, r) for r in roots if path.startswith(r + os.sep)]
    return any(fnmatch.fnmatch(c, p) for c in candidates for p in patterns)


def _load_watchfiles() -> Any:
    try:
        import watchfiles  # optional: only --reload needs it
    except ImportError:
        raise ConfigError("--reload needs watchfiles: pip install 'trioserve[reload]'") from None
    return watchfiles


class _Reloader(Supervisor):
    def __init__(
        self,
        config: Config,
        argv: Sequence[str],
        settings: ReloadSettings,
        on_watching: Callable[[], None],
    ) -> None:
        super().__init__(config, 1, argv)
        self.settings = settings
        self.roots = [os.path.abspath(d) for d in settings.dirs]
        self.on_watching = on_watching

    def _wanted(self, _change: object, path: str) -> bool:
        return _matches(path, self.roots, self.settings.include) and not _matches(
            path, self.roots, self.settings.exclude
        )

    def _changes(self, watchfiles: Any) -> Iterator[set[tuple[Any, str]]]:
        default = watchfiles.DefaultFilter()

        def wanted(change: Any, path: str) -> bool:
            return bool(default(change, path)) and self._wanted(change, path)

        changes: Iterator[set[tuple[Any, str]]] = watchfiles.watch(
            *self.roots,
            watch_filter=wanted,
            step=_STEP,
            debounce=_DEBOUNCE,
            rust_timeout=_POLL_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
        )
        return changes

    def run(self) -> int:
        watchfiles = _load_watchfiles()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(signum, self._on_signal)
        try:
            self.state.workers.append(self._spawn())
            for index, changes in enumerate(self._changes(watchfiles)):
                if index == 0:
                    self.on_watching()  # the watcher runs: a change from now on is seen
                if changes:
                    self._restart(changes)
                if signal.SIGHUP in self.signals:
                    self.signals.remove(signal.SIGHUP)
                    error_log.info("SIGHUP: restarting")
                    self._restart(set())
                self._handle_signals()
                if self.state.stopping:
                    return self._stop()
                self._check_ready(0)
                self._retire_replaced()
                self._reap_quietly()
            return 0  # the watcher ended: its directories are gone
        finally:
            for sock, _ in self.listeners:
                close_listener(sock)

    def _restart(self, changes: set[tuple[Any, str]]) -> None:
        if changes:
            names = sorted({os.path.relpath(path) for _, path in changes})
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            error_log.info("Changed: %s; restarting", shown)
        # A worker that became ready since the last look is serving: it is not superseded.
        self._check_ready(0)
        self._retire_replaced()
        for worker in self.state.workers:
            if not worker.ready and worker.process.poll() is None:
                worker.retiring = True  # superseded before it was ready
                worker.process.kill()
        self.state.workers.append(self._spawn())

    def _retire_replaced(self) -> None:
        """Once the newest worker accepts, the ones before it drain."""
        newest = self.state.workers[-1] if self.state.workers else None
        if newest is None or not newest.ready:
            return
        for worker in self.state.workers[:-1]:
            if not worker.retiring:
                worker.retiring = True
                worker.process.send_signal(signal.SIGTERM)

    def _reap_quietly(self) -> None:
        for worker in list(self.state.workers):
            code = worker.process.poll()
            if code is None:
                continue
            self.state.workers.remove(worker)
            if worker.ready_read >= 0:
                os.close(worker.ready_read)
                worker.ready_read = -1
            if worker.retiring:
                continue
            serving = any(w.ready and not w.retiring for w in self.state.workers)
            what = "failed to start" if not worker.ready else f"exited with status {code}"
            then = "the previous version goes on serving" if serving else "nothing is serving"
            error_log.error("The app %s (see above); %s until the next change", what, then)


def reload_forever(
    config: Config,
    argv: Sequence[str],
    settings: ReloadSettings,
    *,
    announce: Callable[[list[tuple[Any, str]]], None] | None = None,
) -> int:
    """Serve with ``argv`` in a worker process, restarted on every change; returns the exit
    status (0 after SIGINT/SIGTERM).

    Raises:
        ConfigError: watchfiles is not installed.
        OSError: a listener cannot be opened.
    """
    _load_watchfiles()

    def on_watching() -> None:
        error_log.info(
            "Watching %s for %s%s",
            ", ".join(os.path.relpath(d) for d in reloader.roots),
            ", ".join(settings.include),
            f" (except {', '.join(settings.exclude)})" if settings.exclude else "",
        )
        if announce is not None:
            announce(reloader.bound())

    reloader = _Reloader(config, argv, settings, on_watching)
    return reloader.run()
