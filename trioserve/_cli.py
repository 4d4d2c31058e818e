"""The ``trioserve`` command: ``main(argv) -> exit status``.

Exit statuses: 0 after a clean shutdown, 1 when the server cannot listen (address in use) or was
stopped by a second signal, 2 for bad usage (a bad flag, an app that cannot be imported, a
missing directory, an unusable certificate), 3 when the app's lifespan startup fails.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import tomllib
from collections.abc import Sequence
from typing import NoReturn

import trio

from ._accesslog import ATOMS
from ._asgi import Mounts, load_app
from ._config import DEFAULT_HOST, DEFAULT_PORT, Config
from ._errors import AppLoadError, ConfigError
from ._lifespan import LifespanFailure
from ._listeners import SHARED_ACCEPT_BATCH
from ._server import Address, Server, format_url
from ._static import StaticFiles
from ._supervisor import inherited_listeners, supervise
from ._tls import TLSConfig
from ._types import ASGIApp
from ._version import __version__

__all__ = ["main", "run"]

error_log = logging.getLogger("trioserve.error")

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _size(text: str) -> int:
    """A byte count, optionally with a K, M or G suffix (powers of 1024)."""
    multipliers = {"k": 1024, "m": 1024**2, "g": 1024**3}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    factor = multipliers.get(value[-1:], 1)
    if factor != 1:
        value = value[:-1]
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return number * factor


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0: {text!r}")
    return value


def _octal(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"not a file mode: {text!r}")
    return value


def _mount(text: str) -> tuple[str, str]:
    prefix, sep, directory = text.partition("=")
    if not sep or not prefix or not directory:
        raise argparse.ArgumentTypeError(f"expected PREFIX=DIR, got {text!r}")
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise argparse.ArgumentTypeError(f"the prefix must not be '/' (use --root): {text!r}")
    return prefix, directory


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="trioserve",
        description=(
            "Serve an ASGI application, or the files of a directory, over HTTP/1.1. "
            "With no APP, serves --root (default: the current directory)."
        ),
    )
    parser.add_argument("app", nargs="?", metavar="APP", help="an ASGI app as MODULE:ATTRIBUTE")
    parser.add_argument("--version", action="version", version=f"trioserve {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file whose keys are these flags' names (keep-alive-timeout = 5); "
        "flags given on the command line win",
    )
    where = parser.add_argument_group("where to listen")
    where.add_argument("--host", default=DEFAULT_HOST, help="address (default: %(default)s)")
    where.add_argument("--uds", metavar="PATH", help="listen on a unix socket instead")
    where.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="listen on HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N (repeatable; TLS when TLS "
        "is on); replaces --host/--port/--uds",
    )
    where.add_argument(
        "--insecure-bind",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="a plain-HTTP listener next to the TLS ones (repeatable)",
    )
    where.add_argument(
        "--uds-mode",
        type=_octal,
        metavar="MODE",
        help="permissions of unix socket files, in octal (e.g. 660)",
    )
    where.add_argument(
        "--redirect-to-https",
        action="store_true",
        help="plain listeners answer every request with a redirect to HTTPS",
    )
    where.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port; 0 picks one (default: %(default)s)",
    )
    what = parser.add_argument_group("what to serve")
    what.add_argument(
        "--root", metavar="DIR", help="directory to serve when there is no APP (default: .)"
    )
    what.add_argument(
        "--static",
        metavar="PREFIX=DIR",
        type=_mount,
        action="append",
        default=[],
        help="serve DIR under the URL path PREFIX, in front of APP (repeatable)",
    )
    what.add_argument(
        "--app-dir", metavar="DIR", default=".", help="put DIR first on sys.path (default: .)"
    )
    what.add_argument(
        "--factory", action="store_true", help="APP is a factory: call it to get the app"
    )
    what.add_argument(
        "--lifespan",
        choices=("auto", "on", "off"),
        default="auto",
        help="the ASGI lifespan protocol: use it if the app supports it (auto), require it (on), "
        "or never (off) (default: %(default)s)",
    )
    what.add_argument(
        "--asyncio-app",
        action="store_true",
        help="the app needs asyncio (Django, Quart): run it through trio-asyncio "
        "(pip install 'trioserve[asyncio]')",
    )
    what.add_argument(
        "--cancel-on-disconnect",
        action="store_true",
        help="cancel a request's handler when its client disconnects before the response ends",
    )
    what.add_argument(
        "--root-path", default="", help="the ASGI root_path: the prefix a proxy mounts us under"
    )
    files = parser.add_argument_group("static files")
    files.add_argument("--autoindex", action="store_true", help="list directories without index")
    files.add_argument(
        "--dotfiles",
        choices=("deny", "allow"),
        default="deny",
        help="serve names starting with a dot? (default: %(default)s)",
    )
    files.add_argument("--cache-control", metavar="VALUE", help="Cache-Control for file responses")
    limits = parser.add_argument_group("limits and timeouts (seconds)")
    defaults = Config()
    for flag, attribute, text in (
        ("--keep-alive-timeout", "keep_alive_timeout", "idle time before closing a connection"),
        ("--header-timeout", "header_timeout", "time allowed to send a request head"),
        ("--body-timeout", "body_timeout", "silence allowed while reading a request body"),
        ("--write-timeout", "write_timeout", "time a write may stall (client not reading)"),
        ("--graceful-timeout", "graceful_timeout", "time in-flight requests get at shutdown"),
    ):
        limits.add_argument(
            flag,
            type=_seconds,
            default=getattr(defaults, attribute),
            metavar="S",
            help=f"{text} (default: %(default)s)",
        )
    limits.add_argument(
        "--max-body-size",
        type=_size,
        default=defaults.max_body_size,
        metavar="BYTES",
        help="largest request body, e.g. 10M (default: %(default)s)",
    )
    limits.add_argument(
        "--max-header-size",
        type=_size,
        default=defaults.max_header_size,
        metavar="BYTES",
        help="largest request head (default: %(default)s)",
    )
    limits.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N worker processes under a supervisor (SIGHUP: rolling restart)",
    )
    limits.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="recycle a worker (drain and replace it) after about N requests",
    )
    limits.add_argument(
        "--max-requests-jitter",
        type=int,
        default=0,
        metavar="N",
        help="add up to N, at random, to --max-requests (default: %(default)s)",
    )
    parser.add_argument("--worker-fds", help=argparse.SUPPRESS)
    parser.add_argument("--worker-ready-fd", type=int, help=argparse.SUPPRESS)
    limits.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help="connections served at once (default: %(default)s)",
    )
    proxy = parser.add_argument_group("behind a proxy")
    proxy.add_argument(
        "--proxy-headers",
        nargs="?",
        const="x-forwarded",
        default="off",
        choices=("off", "x-forwarded", "forwarded"),
        help="believe X-Forwarded-For/-Proto/-Host (the default mode) or RFC 7239 Forwarded "
        "from --forwarded-allow-ips",
    )
    proxy.add_argument(
        "--forwarded-allow-ips",
        default=defaults.forwarded_allow_ips,
        metavar="LIST",
        help="trusted proxies: addresses, CIDRs, '*' or 'unix' (default: %(default)s)",
    )
    proxy.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY protocol v1/v2 header on every connection (TCP load balancers)",
    )
    proxy.add_argument(
        "--health-path",
        metavar="PATH",
        help="answer PATH (e.g. /healthz) in the server: 200, or 503 once draining",
    )
    ws = parser.add_argument_group("websockets")
    ws.add_argument(
        "--ws-max-message-size",
        type=_size,
        default=defaults.ws_max_message_size,
        metavar="BYTES",
        help="largest message accepted; bigger ones close the websocket with 1009 "
        "(default: %(default)s)",
    )
    ws.add_argument(
        "--ws-ping-interval",
        type=_seconds,
        default=defaults.ws_ping_interval,
        metavar="S",
        help="seconds between keepalive pings; 0 for none (default: %(default)s)",
    )
    ws.add_argument(
        "--ws-ping-timeout",
        type=_seconds,
        default=defaults.ws_ping_timeout,
        metavar="S",
        help="seconds a pong may take before closing with 1011 (default: %(default)s)",
    )
    ws.add_argument(
        "--ws-per-message-deflate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="accept permessage-deflate compression (default: on)",
    )
    tls = parser.add_argument_group(
        "TLS (HTTPS)",
        "--tls alone serves HTTPS with a development certificate from a local CA that is kept "
        "across restarts; --certfile/--keyfile give real certificates (and imply --tls). "
        "SIGHUP reloads the certificate files without dropping connections.",
    )
    tls.add_argument("--tls", action="store_true", help="serve HTTPS")
    tls.add_argument("--certfile", metavar="FILE", help="PEM certificate chain (implies --tls)")
    tls.add_argument("--keyfile", metavar="FILE", help="PEM private key (if not in --certfile)")
    tls.add_argument(
        "--keyfile-password-file",
        metavar="FILE",
        help="file whose first line is the key's password (never give it on the command line)",
    )
    tls.add_argument(
        "--tls-min-version", choices=("1.2", "1.3"), default="1.2", help="(default: %(default)s)"
    )
    tls.add_argument("--ciphers", metavar="STRING", help="OpenSSL cipher string for TLS 1.2")
    tls.add_argument("--ca-certs", metavar="FILE", help="CAs that client certificates chain to")
    tls.add_argument(
        "--client-cert",
        choices=("none", "optional", "required"),
        default="none",
        help="ask clients for a certificate (needs --ca-certs) (default: %(default)s)",
    )
    tls.add_argument(
        "--tls-handshake-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="time a client gets to complete the handshake (default: %(default)s)",
    )
    tls.add_argument(
        "--tls-state-dir",
        metavar="DIR",
        help="where the development CA is kept (default: $XDG_STATE_HOME/trioserve or "
        "~/.local/state/trioserve)",
    )
    output = parser.add_argument_group("headers and logging")
    output.add_argument("--server-header", metavar="VALUE", help="send 'Server: VALUE'")
    output.add_argument(
        "--date-header",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send a Date header (default: on)",
    )
    output.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (default: on)",
    )
    output.add_argument(
        "--access-log-format",
        metavar="TEMPLATE",
        help="access line template, e.g. '{client} {method} {target} {status} {duration_us}us "
        "{request_header[user-agent]}' (atoms: "
        + ", ".join(ATOMS)
        + ", request_header[NAME], response_header[NAME])",
    )
    output.add_argument(
        "--access-log-json", action="store_true", help="log each request as a JSON object"
    )
    output.add_argument(
        "--access-log-file",
        metavar="PATH",
        help="write the access log to PATH instead of stderr (reopened on SIGUSR1)",
    )
    output.add_argument(
        "--log-level", choices=_LOG_LEVELS, default="info", help="(default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.config is not None:
            file_lists = _apply_config_file(parser, args.config)
            args = parser.parse_args(argv)  # again: the command line overrides the file
            for dest, values in file_lists.items():
                if not getattr(args, dest):  # a repeatable flag given replaces the file's list
                    setattr(args, dest, values)
    except _UsageError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    try:
        _configure_logging(args.log_level, args)
    except OSError as exc:
        return _fail(f"--access-log-file {args.access_log_file}: {exc.strerror or exc}")
    try:
        config = Config(
            host=args.host,
            port=args.port,
            uds=args.uds,
            binds=tuple(args.bind) + _systemd_binds(args),
            insecure_binds=tuple(args.insecure_bind),
            uds_mode=args.uds_mode,
            redirect_to_https=args.redirect_to_https,
            keep_alive_timeout=args.keep_alive_timeout,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            write_timeout=args.write_timeout,
            graceful_timeout=args.graceful_timeout,
            max_body_size=args.max_body_size,
            max_header_size=args.max_header_size,
            max_connections=args.max_connections,
            server_header=args.server_header,
            date_header=args.date_header,
            access_log=args.access_log,
            access_log_format=args.access_log_format,
            access_log_json=args.access_log_json,
            root_path=args.root_path.rstrip("/"),
            tls=_tls_config(args),
            lifespan=args.lifespan,
            cancel_on_disconnect=args.cancel_on_disconnect,
            asyncio_app=args.asyncio_app,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips,
            proxy_protocol=args.proxy_protocol,
            health_path=args.health_path,
            max_requests=args.max_requests,
            max_requests_jitter=args.max_requests_jitter,
            ws_max_message_size=args.ws_max_message_size,
            ws_ping_interval=args.ws_ping_interval or None,
            ws_ping_timeout=args.ws_ping_timeout,
            ws_per_message_deflate=args.ws_per_message_deflate,
        )
        app, description = _build_app(args)
        server = Server(app, config)
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {args.workers}")
        if args.max_requests is not None and args.workers < 2 and args.worker_fds is None:
            raise ConfigError(
                "--max-requests recycles workers: it needs --workers 2 or more (a single "
                "process would just stop)"
            )
        if args.workers > 1 and args.worker_fds is None:
            # The supervisor serves nothing itself: each worker loads the app on its own.
            worker_argv = list(argv if argv is not None else sys.argv[1:])
            try:
                return supervise(
                    config,
                    args.workers,
                    worker_argv,
                    announce=lambda bound: _announce_workers(
                        server, description, bound, args.workers
                    ),
                )
            except OSError as exc:
                return _fail(_describe_listen_error(exc), status=_listen_status(exc))
    except (ConfigError, AppLoadError, ValueError) as exc:
        return _fail(str(exc))
    try:
        worker = None
        if args.worker_fds is not None:
            worker = (inherited_listeners(args.worker_fds), args.worker_ready_fd)
            server.accept_batch = SHARED_ACCEPT_BATCH
        return trio.run(_serve_until_signalled, server, description, worker)
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


def _apply_config_file(parser: _Parser, path: str) -> dict[str, list[object]]:
    """Make the TOML file's settings the parser's defaults.

    Returns:
        The file's lists for repeatable flags: they apply only when the command line gives
        none of that flag (argparse would add to them instead).

    Raises:
        _UsageError: the file cannot be read, or a key is unknown or its value invalid (the
            message names the key).
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise _UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _UsageError(f"--config {path}: not valid TOML: {exc}") from None
    actions = {
        action.dest: action
        for action in parser._actions  # argparse keeps them here; stable since Python 3.2
        if action.dest not in ("help", "version", "config") and action.help != argparse.SUPPRESS
    }
    defaults: dict[str, object] = {}
    lists: dict[str, list[object]] = {}
    for key, value in data.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            raise _UsageError(f"--config {path}: unknown key {key!r}")
        converted = _config_value(path, key, action, value)
        if isinstance(action, argparse._AppendAction):
            assert isinstance(converted, list)
            lists[action.dest] = converted
        else:
            defaults[action.dest] = converted
    parser.set_defaults(**defaults)
    return lists


def _config_value(path: str, key: str, action: argparse.Action, value: object) -> object:
    where = f"--config {path}: {key}"
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise _UsageError(f"{where}: expected true or false, not {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_config_scalar(where, action, item) for item in items]
    return _config_scalar(where, action, value)


def _config_scalar(where: str, action: argparse.Action, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _UsageError(f"{where}: expected a string or a number, not {value!r}")
    converted: object = value
    if action.type is not None:
        try:
            converted = action.type(str(value))  # type: ignore[operator]
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise _UsageError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise _UsageError(f"{where}: {value!r} is not one of {choices}")
    return converted


def _systemd_binds(args: argparse.Namespace) -> tuple[str, ...]:
    """systemd socket activation: the sockets systemd passed us (LISTEN_FDS, LISTEN_PID)."""
    if args.bind or args.insecure_bind:
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


def _tls_config(args: argparse.Namespace) -> TLSConfig | None:
    if not (args.tls or args.certfile):
        for flag in ("keyfile", "keyfile_password_file", "ca_certs", "ciphers"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} needs --tls or --certfile")
        if args.client_cert != "none":
            raise ConfigError("--client-cert needs --tls or --certfile")
        return None
    return TLSConfig(
        certfile=args.certfile,
        keyfile=args.keyfile,
        keyfile_password_file=args.keyfile_password_file,
        min_version=args.tls_min_version,
        ciphers=args.ciphers,
        ca_certs=args.ca_certs,
        client_cert=args.client_cert,
        handshake_timeout=args.tls_handshake_timeout,
        state_dir=args.tls_state_dir,
    )


def _build_app(args: argparse.Namespace) -> tuple[ASGIApp, str]:
    static_options = {
        "autoindex": args.autoindex,
        "dotfiles": args.dotfiles,
        "cache_control": args.cache_control,
    }
    app: ASGIApp
    if args.app is not None:
        if args.root is not None:
            raise ValueError("--root serves a directory instead of an APP; use --static with APP")
        app = load_app(args.app, app_dir=os.path.abspath(args.app_dir), factory=args.factory)
        description = f"the ASGI app {args.app}"
    else:
        root = args.root if args.root is not None else "."
        if not os.path.isdir(root):
            raise ValueError(f"--root {root!r} is not a directory")
        app = StaticFiles(root, **static_options)
        description = f"the files in {os.path.abspath(root)}"
    if args.static:
        mounts: list[tuple[str, ASGIApp]] = []
        for prefix, directory in args.static:
            if not os.path.isdir(directory):
                raise ValueError(f"--static {prefix}={directory}: {directory!r} is not a directory")
            mounts.append((prefix, StaticFiles(directory, **static_options)))
            description += f", {os.path.abspath(directory)} under {prefix}/"
        app = Mounts(mounts, app)
    return app, description


async def _serve_until_signalled(
    server: Server,
    description: str,
    worker: tuple[list[tuple[socket.socket, bool]], int] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM (graceful); a second one stops at once (exit status 1).

    As a worker (``--worker-fds``): serve the inherited listeners, tell the supervisor when
    ready, and drain softly (idle connections are not closed under their clients).
    """
    stop = trio.Event()
    forced = False
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1
    ) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                nonlocal forced
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        server.reload_tls()
                    elif signum == signal.SIGUSR1:
                        try:
                            for handler in _access_files:
                                handler.reopen()
                        except OSError as exc:
                            error_log.error("SIGUSR1: cannot reopen the access log: %s", exc)
                        else:
                            error_log.info("SIGUSR1: access log reopened")
                    elif not stop.is_set():
                        error_log.info(
                            "%s: shutting down; in-flight requests get %gs (again to exit now)",
                            name,
                            server.config.graceful_timeout,
                        )
                        if worker is not None:
                            server.begin_shutdown(soft=True)
                        stop.set()
                    else:
                        error_log.warning("%s again: stopping now", name)
                        forced = True
                        server.force_stop()
                        return

            async def run_server(task_status: trio.TaskStatus[list[Address]]) -> None:
                await server.serve(
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                    listeners=None if worker is None else worker[0],
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_signals)
            addresses = await nursery.start(run_server)
            if worker is not None:
                # Tell the supervisor we accept; workers print no banner of their own.
                os.write(worker[1], b"1")
                os.close(worker[1])
                nursery.start_soon(_watch_parent, server)
            else:
                _print_banner(server, description, addresses)
    error_log.info("Shutdown complete")
    return 1 if forced else 0


async def _watch_parent(server: Server) -> None:
    """A worker whose supervisor died (SIGKILL) drains instead of serving on as an orphan."""
    parent = os.getppid()
    # No event announces a parent's death portably: look once a second (a cheap syscall).
    while os.getppid() == parent:  # noqa: ASYNC110
        await trio.sleep(1)
    error_log.warning("The supervisor is gone: draining")
    server.begin_shutdown(soft=True)


def _announce_workers(
    server: Server, description: str, bound: list[tuple[Address, str]], workers: int
) -> None:
    server.bound = bound
    _print_banner(server, description, [address for address, _ in bound], workers)


def _print_banner(
    server: Server, description: str, addresses: Sequence[Address], workers: int = 1
) -> None:
    urls = ", ".join(format_url(address, scheme) for address, scheme in server.bound)
    if workers > 1:
        description += f" with {workers} workers"
    print(f"trioserve: serving {description} on {urls} (Ctrl-C to stop)", file=sys.stderr)
    dev = server.dev_certificate
    if dev is not None and addresses and not isinstance(addresses[0], str):
        port = addresses[0][1]
        print(
            f"trioserve: HTTPS with a development certificate; its CA is {dev.ca_path}\n"
            f"trioserve: try: curl --cacert {dev.ca_path} https://localhost:{port}/",
            file=sys.stderr,
        )
    sys.stderr.flush()


def _listen_status(exc: OSError) -> int:
    """2 for a bind that can never work as given (bad input), 1 for one that may later."""
    return 2 if exc.errno in (errno.EEXIST, errno.ENOTSOCK, errno.EBADF, errno.EINVAL) else 1


def _describe_listen_error(exc: OSError) -> str:
    # The listeners' errors name the bind ("127.0.0.1:8000: address already in use").
    return f"cannot listen on {exc.strerror or exc}"


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


_access_files: list[_ReopenableFileHandler] = []


def _configure_logging(level: str, args: argparse.Namespace | None = None) -> None:
    access = logging.getLogger("trioserve.access")
    for handler in list(access.handlers):
        if getattr(handler, "_trioserve", False):
            access.removeHandler(handler)
            handler.close()
    _access_files.clear()
    access.propagate = True
    if args is not None and (
        args.access_log_file or args.access_log_json or args.access_log_format
    ):
        # The lines are complete as they are: no timestamp or level prefix, and their own
        # destination.
        target: logging.Handler
        if args.access_log_file:
            file_handler = _ReopenableFileHandler(args.access_log_file, encoding="utf-8")
            _access_files.append(file_handler)
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
