"""What the ``trioserve`` command declares beyond ``Config``: what to serve, processes, logging.

Each field is one declaration (flag, help, group, parse function), as on ``Config``; ``_cli.py``
generates the parser and the ``--config`` keys from both.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from ._settings import (
    FILES,
    OUTPUT,
    PROCESSES,
    SERVE,
    TLS,
    format_size,
    parse_seconds,
    parse_size,
    setting,
    show_seconds,
)
from ._static._codecs import DEFAULT_CACHE_BYTES
from ._static._encoding import DEFAULT_COMPRESS_MIN_SIZE
from ._static._headers import parse_cache_control_rule


def _mount(text: str) -> tuple[str, str]:
    prefix, sep, directory = text.partition("=")
    if not sep or not prefix or not directory:
        raise argparse.ArgumentTypeError(f"expected PREFIX=DIR, got {text!r}")
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise argparse.ArgumentTypeError(f"the prefix must not be '/' (use --root): {text!r}")
    return prefix, directory


def _error_page(text: str) -> tuple[int, str]:
    status, sep, path = text.partition("=")
    if not sep or not path.strip() or not status.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected STATUS=PATH, got {text!r}")
    code = int(status)
    if not 400 <= code <= 599:
        raise argparse.ArgumentTypeError(f"the status must be 400 to 599: {text!r}")
    return code, path.strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class _CommandLine:
    """The settings the command has beyond :class:`Config`: what to serve and how to run."""

    app: str | None = setting(
        None, group=SERVE, kind="positional", metavar="APP", help="an ASGI app as MODULE:ATTRIBUTE"
    )
    root: str | None = setting(
        None,
        group=SERVE,
        metavar="DIR",
        help="directory to serve when there is no APP (default: .)",
    )
    static: tuple[tuple[str, str], ...] = setting(
        (),
        group=SERVE,
        kind="list",
        parse=_mount,
        metavar="PREFIX=DIR",
        help="serve DIR under the URL path PREFIX, in front of APP (repeatable)",
    )
    app_dir: str = setting(".", group=SERVE, metavar="DIR", help="put DIR first on sys.path")
    factory: bool = setting(
        False, group=SERVE, kind="flag", help="APP is a factory: call it to get the app"
    )
    autoindex: bool = setting(
        False, group=FILES, kind="flag", help="list directories without an index file"
    )
    dotfiles: Literal["deny", "allow"] = setting(
        "deny", group=FILES, choices=("deny", "allow"), help="serve names starting with a dot?"
    )
    cache_control: tuple[tuple[str, str], ...] = setting(
        (),
        group=FILES,
        kind="list",
        parse=parse_cache_control_rule,
        metavar="[PATTERN=]VALUE",
        help="Cache-Control for the files whose URL path matches the glob PATTERN ('*.html', "
        "'/assets/*'; repeatable, the first match wins); a bare VALUE is for every file",
    )
    compress: bool = setting(
        True,
        group=FILES,
        kind="switch",
        help="compress text files (HTML, CSS, JS, JSON, SVG, ...) on the fly for clients that "
        "accept it: zstd, br or gzip (zstd and br need 'trioserve[compression]')",
    )
    # 1 KiB and 16 MiB: StaticFiles' own defaults, explained in trioserve/_static/_encoding.py
    # (below 1 KiB the saving is under a TCP segment) and _codecs.py (a site's text assets fit).
    compress_min_size: int = setting(
        DEFAULT_COMPRESS_MIN_SIZE,
        group=FILES,
        parse=parse_size,
        show=format_size,
        metavar="BYTES",
        help="files smaller than this are never compressed on the fly",
    )
    compress_cache_size: int = setting(
        DEFAULT_CACHE_BYTES,
        group=FILES,
        parse=parse_size,
        show=format_size,
        metavar="BYTES",
        help="memory kept for compressed files, so repeated requests are not compressed again "
        "(0: no cache)",
    )
    compress_apps: bool = setting(
        False,
        group=FILES,
        kind="flag",
        help="compress APP's responses too, as files are (not ones with a Content-Encoding, "
        "text/event-stream, ranges, or bodies under --compress-min-size)",
    )
    error_pages: tuple[tuple[int, str], ...] = setting(
        (),
        group=FILES,
        flag="--error-page",
        kind="list",
        parse=_error_page,
        metavar="STATUS=PATH",
        help="serve the file PATH (under the root) with STATUS in place of the built-in error "
        "body, to browsers (not to clients preferring JSON or text), e.g. 404=404.html "
        "(repeatable)",
    )
    spa_fallback: str | None = setting(
        None,
        group=FILES,
        metavar="PATH",
        help="single-page apps: answer a GET for a missing extensionless path (/users/7) from a "
        "client that accepts HTML with the file PATH (under the root) and 200",
    )
    # 1 s: a change to a file is seen within a second, and the lookup it saves is paid once per
    # second per path instead of once per request (see trioserve/_static/_filecache.py).
    static_cache_valid: float = setting(
        1.0,
        group=FILES,
        parse=parse_seconds,
        show=show_seconds,
        metavar="S",
        help="seconds a file's lookup (and a small file's bytes) are trusted; 0: no cache",
    )
    workers: int = setting(
        1,
        group=PROCESSES,
        parse=int,
        metavar="N",
        help="run N worker processes under a supervisor (SIGHUP: rolling restart)",
    )
    reload: bool = setting(
        False,
        group=PROCESSES,
        kind="flag",
        help="development: restart when the app's files change (pip install 'trioserve[reload]')",
    )
    reload_dirs: tuple[str, ...] = setting(
        (),
        group=PROCESSES,
        flag="--reload-dir",
        kind="list",
        metavar="DIR",
        help="watch DIR for --reload (repeatable; default: --app-dir)",
    )
    reload_include: tuple[str, ...] = setting(
        (),
        group=PROCESSES,
        kind="list",
        metavar="PATTERN",
        help="files whose changes restart, e.g. '*.html' (repeatable; default: *.py)",
    )
    reload_exclude: tuple[str, ...] = setting(
        (),
        group=PROCESSES,
        kind="list",
        metavar="PATTERN",
        help="files whose changes do not restart, e.g. 'tests/*' (repeatable)",
    )
    tls: bool = setting(False, group=TLS, kind="flag", help="serve HTTPS")
    access_log_file: str | None = setting(
        None,
        group=OUTPUT,
        metavar="PATH",
        help="write the access log to PATH instead of stderr (reopened on SIGUSR1)",
    )
    log_config: str | None = setting(
        None,
        group=OUTPUT,
        metavar="FILE",
        help="configure logging with this logging.config.dictConfig file (JSON, or TOML if "
        "named *.toml)",
    )
    log_level: str = setting(
        "info", group=OUTPUT, choices=("critical", "error", "warning", "info", "debug"), help=""
    )


# TLSConfig lives in _tls; its fields' flags are declared here, its defaults stay there.
