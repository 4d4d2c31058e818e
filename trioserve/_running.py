"""Running the server under the command line: signals, the banner, the worker's life-line.

SIGINT and SIGTERM shut down gracefully (a second one stops at once), SIGHUP reloads the TLS
certificate files, SIGUSR1 reopens the access log file.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Final

import trio

from ._logsetup import access_files
from ._notify import Notifier
from ._server import Address, Server, format_url

__all__ = ["announce_workers", "serve_until_signalled"]

error_log = logging.getLogger("trioserve.error")


async def serve_until_signalled(
    server: Server,
    description: str,
    worker: tuple[list[tuple[socket.socket, bool]], int] | None = None,
    notifier: Notifier | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM (graceful); a second one stops at once (exit status 1).

    SIGTERM with ``--shutdown-delay S`` first keeps serving for S seconds with the health path
    answering 503 (a load balancer takes us out of rotation meanwhile), then drains.

    As a worker (``--worker-fds``): serve the inherited listeners, tell the supervisor when
    ready, drain softly (idle connections are not closed under their clients), and take SIGUSR2
    as "report unready" (the supervisor's shutdown delay).
    """
    notifier = notifier or Notifier(None)
    stop = trio.Event()
    forced = False
    delay = server.config.shutdown_delay if worker is None else 0.0
    with trio.open_signal_receiver(
        signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2
    ) as signals:
        async with trio.open_nursery() as nursery:

            def shut_down(name: str) -> None:
                error_log.info(
                    "%s: shutting down; in-flight requests get %gs (again to exit now)",
                    name,
                    server.config.graceful_timeout,
                )
                if worker is not None:
                    server.begin_shutdown(soft=True)
                stop.set()

            async def after_delay(name: str) -> None:
                await trio.sleep(delay)
                shut_down(name)

            async def watch_signals() -> None:
                nonlocal forced
                stopping = False
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGHUP:
                        notifier.reloading()
                        server.reload_tls()
                        notifier.ready()
                    elif signum == signal.SIGUSR1:
                        try:
                            for handler in access_files:
                                handler.reopen()
                        except OSError as exc:
                            error_log.error("SIGUSR1: cannot reopen the access log: %s", exc)
                        else:
                            error_log.info("SIGUSR1: access log reopened")
                    elif signum == signal.SIGUSR2:
                        report_unready(server)
                        error_log.info("SIGUSR2: the health path answers 503 from now on")
                    elif not stopping:
                        stopping = True
                        notifier.stopping()
                        if signum == signal.SIGTERM and delay > 0:
                            error_log.info(
                                "%s: serving on for %gs with the health path answering 503, "
                                "then draining (again to exit now)",
                                name,
                                delay,
                            )
                            report_unready(server)
                            nursery.start_soon(after_delay, name)
                        else:
                            shut_down(name)
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
                notifier.ready()
    error_log.info("Shutdown complete")
    return 1 if forced else 0


def report_unready(server: Server) -> None:
    """The health path answers 503 from now on, and responses carry ``Connection: close`` (so
    that keep-alive clients move to other instances); connections are still accepted."""
    # The server's shared state is what the connections read; no begin_shutdown() yet.
    server.state.draining = True
    server.state.soft_drain = True


# The process's parent when this module was imported, at the very start of a worker (before the
# app is imported or its lifespan runs): a supervisor that dies while its worker starts must not
# become invisible by the time the watch begins (the worker's parent would already be init).
_PARENT_AT_START: Final = os.getppid()


async def _watch_parent(server: Server) -> None:
    """A worker whose supervisor died (SIGKILL) drains instead of serving on as an orphan."""
    # No event announces a parent's death portably: look once a second (a cheap syscall).
    while os.getppid() == _PARENT_AT_START:  # noqa: ASYNC110
        await trio.sleep(1)
    error_log.warning("The supervisor is gone: draining")
    server.begin_shutdown(soft=True)


def announce_workers(
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
