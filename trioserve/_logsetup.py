"""Logging for the command line: stderr, and an access log file that SIGUSR1 reopens."""

from __future__ import annotations

import logging
import sys

__all__ = ["access_files", "configure_logging"]


class _ReopenableFileHandler(logging.FileHandler):
    """A log file that can be reopened after logrotate moved it (SIGUSR1)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


access_files: list[_ReopenableFileHandler] = []


def configure_logging(
    level: str,
    *,
    access_log_file: str | None = None,
    access_log_json: bool = False,
    access_log_format: str | None = None,
) -> None:
    """Send trioserve's logs to stderr at ``level``; access lines to their own handler if set.

    Raises:
        OSError: ``access_log_file`` cannot be opened.
    """
    access = logging.getLogger("trioserve.access")
    for handler in list(access.handlers):
        if getattr(handler, "_trioserve", False):
            access.removeHandler(handler)
            handler.close()
    access_files.clear()
    access.propagate = True
    if access_log_file or access_log_json or access_log_format:
        # The lines are complete as they are: no timestamp or level prefix, and their own
        # destination.
        target: logging.Handler
        if access_log_file:
            file_handler = _ReopenableFileHandler(access_log_file, encoding="utf-8")
            access_files.append(file_handler)
            target = file_handler
        else:
            target = logging.StreamHandler(sys.stderr)
        target.setFormatter(logging.Formatter("%(message)s"))
        setattr(target, "_trioserve", True)  # noqa: B010  # marks our handlers
        access.addHandler(target)
        access.propagate = False
    logger = logging.getLogger("trioserve")
    if not any(getattr(handler, "_trioserve", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._trioserve = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
