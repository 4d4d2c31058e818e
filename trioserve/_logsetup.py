"""Logging for the command line: stderr, an access log file that SIGUSR1 reopens, or the
user's own ``logging.config.dictConfig`` (``--log-config``, JSON or TOML)."""

from __future__ import annotations

import importlib
import json
import logging
import logging.config
import os
import sys
import tomllib
import traceback as tb
from typing import Any

from ._errors import AppLoadError

__all__ = ["access_files", "configure_logging", "describe_load_error", "load_log_config"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


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
    log_config: str | None = None,
    show_pid: bool = False,
) -> None:
    """Send trioserve's logs to stderr at ``level``; access lines to their own handler if set.

    Args:
        log_config: A ``dictConfig`` file (JSON, or TOML for a ``.toml`` name) applied last: it
            decides the handlers (trioserve's logs propagate to the root logger then, and
            loggers it does not name stay enabled unless it says otherwise).
        show_pid: Put the process id in each line (``--workers``: which worker said it).

    Raises:
        OSError: ``access_log_file`` cannot be opened.
        ValueError: ``log_config`` cannot be read or applied (the message names the file).
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
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        if getattr(handler, "_trioserve", False):
            logger.removeHandler(handler)
            handler.close()
    if log_config is not None:
        logger.propagate = True
        settings = load_log_config(log_config)
        try:
            logging.config.dictConfig(settings)
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ValueError(f"--log-config {log_config}: {exc}") from None
        return
    handler = logging.StreamHandler(sys.stderr)
    pid = "[%(process)d] " if show_pid else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {pid}%(levelname)s %(name)s: %(message)s"))
    handler._trioserve = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False


def load_log_config(path: str) -> dict[str, Any]:
    """A ``dictConfig`` dictionary from a JSON file, or a TOML one (a ``.toml`` name).

    ``disable_existing_loggers`` defaults to false here (``dictConfig``'s default, true, would
    silence trioserve's loggers, which exist before the file is applied).

    Raises:
        ValueError: the file cannot be read or parsed, or is not a table.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
        if path.endswith(".toml"):
            settings: object = tomllib.loads(data.decode())
        else:
            settings = json.loads(data)
    except OSError as exc:
        raise ValueError(f"--log-config {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSON, TOML and decoding errors
        raise ValueError(f"--log-config {path}: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--log-config {path}: expected a table of dictConfig settings")
    settings.setdefault("version", 1)
    settings.setdefault("disable_existing_loggers", False)
    return settings


def describe_load_error(exc: AppLoadError, *, traceback: bool = False) -> str:
    """An app that cannot be loaded: the message, where it failed, and the traceback if asked."""
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    if traceback:
        lines = tb.format_exception(cause)
        return f"{exc}\n{''.join(lines).rstrip()}"
    where = _failing_line(cause)
    return f"{exc} ({where}; --log-level debug shows the traceback)" if where else str(exc)


def _failing_line(exc: BaseException) -> str | None:
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}"
    # The app's own frames: not the import machinery's, nor ours.
    machinery = (os.path.dirname(importlib.__file__), _PACKAGE_DIR)
    frames = [
        frame
        for frame in tb.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<frozen ", *machinery))
    ]
    if not frames:
        return None
    return f"{frames[-1].filename}, line {frames[-1].lineno}"
