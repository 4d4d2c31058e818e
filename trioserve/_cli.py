"""The ``trioserve`` command: ``main(argv) -> exit status``.

Exit statuses: 0 after a clean shutdown, 1 when the server cannot listen (address in use) or was
stopped by a second signal, 2 for bad usage (a bad flag, an app that cannot be imported, a
missing directory, an unusable certificate), 3 when the app's lifespan startup fails.

The flags and the ``--config`` file's keys are generated (``_settings``) from three tables of
declarations: ``Config``'s fields, :class:`_CommandLine` below (what the command has beyond
``Config``: what to serve, processes, logging) and :data:`_TLS` (``TLSConfig``'s fields).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from ._asgi import Mounts, load_app
from ._cli_declarations import _CommandLine
from ._compress_app import CompressApps
from ._config import Config
from ._errors import AppLoadError, ConfigError
from ._h11._fast import COMPILED
from ._lifespan import LifespanFailure
from ._listeners import SHARED_ACCEPT_BATCH
from ._logsetup import configure_logging, describe_load_error
from ._notify import Notifier
from ._reload import ReloadSettings, reload_forever
from ._running import announce_workers, serve_until_signalled
from ._server import Server
from ._settings import (
    LIMITS,
    TLS,
    Option,
    Parser,
    Setting,
    UsageError,
    add_options,
    given,
    load_toml,
    options_for,
    options_of,
    parse_seconds,
    show_seconds,
)
from ._static import StaticFiles
from ._supervisor import inherited_listeners, supervise
from ._tls import TLSConfig
from ._types import ASGIApp
from ._version import __version__
from ._wsgi import WSGIApp

__all__ = ["main", "run"]


_TLS = options_for(
    TLSConfig,
    certfile=Setting(group=TLS, metavar="FILE", help="PEM certificate chain (implies --tls)"),
    keyfile=Setting(group=TLS, metavar="FILE", help="PEM private key (if not in --certfile)"),
    keyfile_password_file=Setting(
        group=TLS,
        metavar="FILE",
        help="file whose first line is the key's password (never give it on the command line)",
    ),
    min_version=Setting(group=TLS, flag="--tls-min-version", choices=("1.2", "1.3"), help=""),
    ciphers=Setting(group=TLS, metavar="STRING", help="OpenSSL cipher string for TLS 1.2"),
    ca_certs=Setting(group=TLS, metavar="FILE", help="CAs that client certificates chain to"),
    client_cert=Setting(
        group=TLS,
        choices=("none", "optional", "required"),
        help="ask clients for a certificate (needs --ca-certs)",
    ),
    handshake_timeout=Setting(
        group=TLS,
        flag="--tls-handshake-timeout",
        parse=parse_seconds,
        show=show_seconds,
        metavar="S",
        help="seconds a client gets to complete the handshake",
    ),
    state_dir=Setting(
        group=TLS,
        flag="--tls-state-dir",
        metavar="DIR",
        help="where the development CA is kept (default: $XDG_STATE_HOME/trioserve or "
        "~/.local/state/trioserve)",
    ),
)
_CONFIG = options_of(Config)
_COMMAND = options_of(_CommandLine)
_OPTIONS: list[Option] = [*_COMMAND, *_CONFIG, *_TLS]

_DESCRIPTIONS = {
    TLS: "--tls alone serves HTTPS with a development certificate from a local CA that is kept "
    "across restarts; --certfile/--keyfile give real certificates (and imply --tls). "
    "SIGHUP reloads the certificate files without dropping connections.",
    LIMITS: "Timeouts are in seconds; sizes in bytes, or with a unit: 64K, 64KiB, 1M, 1MiB.",
}


def _build_parser() -> Parser:
    parser = Parser(
        prog="trioserve",
        description=(
            "Serve an ASGI application, or the files of a directory, over HTTP/1.1. "
            "With no APP, serves --root (default: the current directory)."
        ),
        allow_abbrev=False,  # --por is an error, not --port
        argument_default=argparse.SUPPRESS,
    )
    # The only hand-written arguments: none of them is a setting a file could hold.
    build = " (HTTP/1.1 request path compiled with mypyc)" if COMPILED else ""
    parser.add_argument("--version", action="version", version=f"trioserve {__version__}{build}")
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a TOML file whose keys are these flags' names (keep-alive-timeout = 5); "
        "flags given on the command line win",
    )
    # Set by the supervisor for the worker processes it starts (see _supervisor).
    parser.add_argument("--worker-fds", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ready-fd", default=None, type=int, help=argparse.SUPPRESS)
    add_options(parser, _OPTIONS, _DESCRIPTIONS)
    return parser


def _settings(argv: Sequence[str] | None) -> dict[str, Any]:
    """The settings given, as ``{name: value}``: the ``--config`` file's, then the flags'.

    Raises:
        UsageError: a bad flag, or a bad ``--config`` file.
        SystemExit: ``--help`` or ``--version`` (argparse has printed them).
    """
    values = given(_build_parser().parse_args(argv))
    path = values.pop("config")
    if path is None:
        return values
    return load_toml(path, _OPTIONS) | values


def _pick(values: dict[str, Any], options: list[Option]) -> dict[str, Any]:
    return {option.name: values[option.name] for option in options if option.name in values}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        values = _settings(argv)
    except UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    worker_fds: str | None = values.pop("worker_fds")
    worker_ready_fd: int | None = values.pop("worker_ready_fd")
    command = _CommandLine(**_pick(values, _COMMAND))
    try:
        config = _make_config(values, command)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        configure_logging(
            command.log_level,
            access_log_file=command.access_log_file,
            access_log_json=config.access_log_json,
            access_log_format=config.access_log_format,
            log_config=command.log_config,
            show_pid=command.workers > 1,
        )
    except OSError as exc:
        return _fail(f"--access-log-file {command.access_log_file}: {exc.strerror or exc}")
    except ValueError as exc:
        return _fail(str(exc))
    try:
        workers = command.workers
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {workers}")
        if command.reload and worker_fds is None:
            return _reload(command, config, list(argv if argv is not None else sys.argv[1:]))
        app, description = _build_app(command, config)
        server = Server(app, config)
        if config.max_requests is not None and workers < 2 and worker_fds is None:
            raise ConfigError(
                "--max-requests recycles workers: it needs --workers 2 or more (a single "
                "process would just stop)"
            )
        if workers > 1 and worker_fds is None:
            # The supervisor serves nothing itself: each worker loads the app on its own.
            worker_argv = list(argv if argv is not None else sys.argv[1:])
            try:
                return supervise(
                    config,
                    workers,
                    worker_argv,
                    announce=lambda bound: announce_workers(server, description, bound, workers),
                    notify_socket=os.environ.get("NOTIFY_SOCKET"),
                )
            except OSError as exc:
                return _fail(_describe_listen_error(exc), status=_listen_status(exc))
    except AppLoadError as exc:
        # Under --reload the whole traceback: the developer is editing that very code.
        verbose = command.log_level == "debug" or command.reload
        return _fail(describe_load_error(exc, traceback=verbose))
    except (ConfigError, ValueError) as exc:
        return _fail(str(exc))
    try:
        worker = None
        if worker_fds is not None:
            assert worker_ready_fd is not None, "the supervisor gives both"
            worker = (inherited_listeners(worker_fds), worker_ready_fd)
            server.accept_batch = SHARED_ACCEPT_BATCH
        # systemd's Type=notify: the main process only (workers inherit the variable).
        notifier = Notifier(os.environ.get("NOTIFY_SOCKET") if worker is None else None)
        return trio.run(serve_until_signalled, server, description, worker, notifier)
    except BaseException as exc:
        # Errors from inside serve() may reach us wrapped in (single-member) exception groups.
        error = _unwrap(exc)
        if isinstance(error, OSError):
            return _fail(_describe_listen_error(error), status=_listen_status(error))
        if isinstance(error, LifespanFailure):
            return _fail(str(error), status=3)
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise


def _reload(command: _CommandLine, config: Config, argv: list[str]) -> int:
    """``--reload``: the reloader serves nothing itself; its worker loads the app."""
    if command.workers > 1:
        raise ConfigError("--reload runs one process: it cannot be combined with --workers")
    if config.max_requests is not None:
        raise ConfigError("--reload cannot be combined with --max-requests")
    settings = ReloadSettings(
        dirs=command.reload_dirs or (command.app_dir,),
        include=command.reload_include or ("*.py",),
        exclude=command.reload_exclude,
    )
    for directory in settings.dirs:
        if not os.path.isdir(directory):
            raise ConfigError(f"--reload-dir {directory!r} is not a directory")
    description = (
        f"the app {command.app}"
        if command.app is not None
        else f"the files in {os.path.abspath(command.root or '.')}"
    )
    # Its only use here: the banner (and the development certificate, made once, here).
    server = Server(_not_loaded, config)
    try:
        return reload_forever(
            config,
            argv,
            settings,
            announce=lambda bound: announce_workers(
                server, description + ", restarted on changes", bound, 1
            ),
        )
    except OSError as exc:
        return _fail(_describe_listen_error(exc), status=_listen_status(exc))


async def _not_loaded(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the reloader serves nothing itself")


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run() -> NoReturn:
    """Entry point of the ``trioserve`` console script."""
    sys.exit(main())


def _fail(message: str, *, status: int = 2) -> int:
    print(f"trioserve: error: {message}", file=sys.stderr)
    return status


def _make_config(values: dict[str, Any], command: _CommandLine) -> Config:
    """The :class:`Config` for the settings given; its own defaults fill in the rest."""
    config_values = _pick(values, _CONFIG)
    config_values["binds"] = config_values.get("binds", ()) + _systemd_binds(config_values)
    return Config(**config_values, tls=_tls_config(command, _pick(values, _TLS)))


def _systemd_binds(config_values: dict[str, Any]) -> tuple[str, ...]:
    """systemd socket activation: the sockets systemd passed us (LISTEN_FDS, LISTEN_PID)."""
    if config_values.get("binds") or config_values.get("insecure_binds"):
        return ()
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
        pid = int(os.environ.get("LISTEN_PID", "0"))
    except ValueError:
        return ()
    if count <= 0 or pid != os.getpid():
        return ()
    first = 3  # SD_LISTEN_FDS_START
    return tuple(f"fd://{fd}" for fd in range(first, first + count))


def _tls_config(command: _CommandLine, tls_values: dict[str, Any]) -> TLSConfig | None:
    if not (command.tls or tls_values.get("certfile")):
        for name in ("keyfile", "keyfile_password_file", "ca_certs", "ciphers"):
            if tls_values.get(name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} needs --tls or --certfile")
        if tls_values.get("client_cert", "none") != "none":
            raise ConfigError("--client-cert needs --tls or --certfile")
        return None
    return TLSConfig(**tls_values)


def _first_run_hint(command: _CommandLine, root: str) -> str:
    """Serving a directory with no index.html and no listing: the banner says why / is 404."""
    if command.autoindex or os.path.isfile(os.path.join(root, "index.html")):
        return ""
    return " (no index.html, so / answers 404: add --autoindex to list the files)"


def _build_app(command: _CommandLine, config: Config) -> tuple[ASGIApp, str]:
    def files(directory: str) -> StaticFiles:
        return StaticFiles(
            directory,
            autoindex=command.autoindex,
            dotfiles=command.dotfiles,
            cache_control=command.cache_control,
            compress=command.compress,
            compress_min_size=command.compress_min_size,
            compress_cache_size=command.compress_cache_size,
            error_pages=dict(command.error_pages),
            spa_fallback=command.spa_fallback,
            cache_valid=command.static_cache_valid,
        )

    app: ASGIApp
    if command.app is not None:
        if command.root is not None:
            raise ValueError("--root serves a directory instead of an APP; use --static with APP")
        app = load_app(
            command.app,
            app_dir=os.path.abspath(command.app_dir),
            factory=command.factory,
            interface=config.interface,
            wsgi_threads=config.wsgi_threads,
        )
        kind = "WSGI" if isinstance(app, WSGIApp) else "ASGI"
        if command.compress_apps:
            app = CompressApps(app, min_size=command.compress_min_size)
        description = f"the {kind} app {command.app}"
    else:
        root = command.root if command.root is not None else "."
        if not os.path.isdir(root):
            raise ValueError(f"--root {root!r} is not a directory")
        if command.compress_apps:
            raise ValueError("--compress-apps compresses an APP's responses (files: --compress)")
        app = files(root)
        description = f"the files in {os.path.abspath(root)}" + _first_run_hint(command, root)
    if command.static:
        mounts: list[tuple[str, ASGIApp]] = []
        for prefix, directory in command.static:
            if not os.path.isdir(directory):
                raise ValueError(f"--static {prefix}={directory}: {directory!r} is not a directory")
            mounts.append((prefix, files(directory)))
            description += f", {os.path.abspath(directory)} under {prefix}/"
        app = Mounts(mounts, app)
    return app, description


def _listen_status(exc: OSError) -> int:
    """2 for a bind that can never work as given (bad input), 1 for one that may later."""
    return 2 if exc.errno in (errno.EEXIST, errno.ENOTSOCK, errno.EBADF, errno.EINVAL) else 1


def _describe_listen_error(exc: OSError) -> str:
    # The listeners' errors name the bind ("127.0.0.1:8000: address already in use").
    return f"cannot listen on {exc.strerror or exc}"
