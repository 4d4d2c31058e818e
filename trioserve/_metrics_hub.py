"""``--metrics-bind`` under ``--workers``: the supervisor's sum of its workers' figures.

Theory of operation
-------------------
The supervisor is plain blocking Python, so the hub runs trio in one thread of its own (one
thread for the supervisor's whole life, not one per scrape), where a trioserve :class:`Server`
serves ``/metrics`` on the listener the user asked for.

Each worker is started with ``--metrics-bind unix:DIR/N.sock`` (``DIR`` a private directory of
the supervisor's), so it serves its own figures there. Once a worker is ready, the hub opens a
long poll to it, ``GET /_trioserve/final``, which the worker answers with its final figures once
it has closed its last connection (its metrics listener outlives its drain; see
``Server._serving_metrics``). A scrape asks every live worker for its figures now, in parallel
and bounded; a worker that does not answer in time counts with the figures it gave last.

When a worker's final figures arrive (or its long poll breaks: a crash), its counters and
histograms are added to the *retired* totals and it stops being asked; its gauges (requests in
flight, open connections) go with it. A scrape shows the retired totals plus the live workers'
figures, so no counter goes backwards across a rolling restart, a ``--max-requests`` recycling
or a crash: each worker's contribution only ever grows, from its figures at one scrape to its
figures at the next, then to its final (or last known) figures.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Final

import trio

from ._config import Config
from ._listeners import close_listener, open_listeners
from ._metrics import (
    FINAL_PATH,
    SNAPSHOT_PATH,
    MetricsApp,
    Sample,
    decode_samples,
    is_cumulative,
    sum_samples,
)
from ._server import Address, Server, format_url

__all__ = ["MetricsHub"]

error_log = logging.getLogger("trioserve.error")

# A worker answers from memory at once; one that takes longer than this is stuck (in a CPU-bound
# handler, say) and counts with its last figures rather than holding the scrape up.
_FETCH_TIMEOUT: Final = 2.0
# A worker's figures are a few kilobytes (the request table is bounded by methods x status
# classes x protocols); anything past this is not a snapshot.
_MAX_SNAPSHOT: Final = 1024 * 1024


@dataclass(eq=False)
class _Worker:
    path: str
    last: list[Sample] = field(default_factory=list)
    retired: bool = False
    #: Set once its long poll has ended (and it is retired).
    done: trio.Event = field(default_factory=trio.Event)


class MetricsHub:
    """The supervisor's metrics: opens the user's metrics listener at once (so that a bad
    address fails the start) and serves it from :meth:`start` to :meth:`stop`.

    Raises:
        OSError: the metrics listener cannot be opened.
    """

    def __init__(self, bind: str) -> None:
        self._listeners = [sock for sock, _ in open_listeners(Config(binds=(bind,)))]
        self.directory = tempfile.mkdtemp(prefix="trioserve-metrics-")
        self._numbers = itertools.count(1)
        self._workers: dict[str, _Worker] = {}
        self._retired: list[Sample] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._thread: threading.Thread | None = None

    def worker_bind(self) -> str:
        """The ``--metrics-bind`` of the next worker (a unix socket in the private directory)."""
        return f"unix:{os.path.join(self.directory, f'{next(self._numbers)}.sock')}"

    # -- the supervisor's side (its main thread) ---------------------------------------------

    def start(self) -> None:
        """Serve the metrics listener from a thread; returns once it accepts."""
        started = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, started), name="trioserve-metrics", daemon=True
        )
        self._thread.start()
        started.wait()
        if self._token is None:
            raise RuntimeError("the metrics thread failed to start; see the error above")

    def watch(self, bind: str) -> None:
        """Follow a worker that is ready (started with :meth:`worker_bind`'s ``bind``)."""
        if self._token is None:
            return
        try:
            trio.from_thread.run(self._watch, bind.removeprefix("unix:"), trio_token=self._token)
        except trio.RunFinishedError:
            error_log.error("The metrics thread has stopped: metrics are no longer collected")

    def stop(self) -> None:
        """Stop serving; remove the workers' socket directory."""
        try:
            if self._token is not None and self._stop is not None:
                # (A thread that had stopped has logged why.)
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            if self._thread is not None:
                self._thread.join()
        finally:
            for sock in self._listeners:
                close_listener(sock)
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- the hub's trio thread ---------------------------------------------------------------

    async def _main(self, started: threading.Event) -> None:
        try:
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                addresses = await nursery.start(self._serve)
                for address in addresses:
                    error_log.info("Metrics at %s/metrics", format_url(address))
                self._token = trio.lowlevel.current_trio_token()
                started.set()
        except BaseException:
            error_log.exception("The metrics listener failed")
            raise
        finally:
            started.set()

    async def _serve(self, task_status: trio.TaskStatus[list[Address]]) -> None:
        assert self._stop is not None
        assert self._nursery is not None
        server = Server(
            MetricsApp(self.collect), Config(access_log=False, lifespan="off", interface="asgi")
        )
        # Duplicates: the server closes what it serves, this hub removes a unix socket's file.
        listeners = [(sock.dup(), False) for sock in self._listeners]
        await server.serve(
            listeners=listeners, shutdown_trigger=self._stop.wait, task_status=task_status
        )
        self._nursery.cancel_scope.cancel()  # the long polls end with the server

    async def _watch(self, path: str) -> None:
        assert self._nursery is not None
        worker = self._workers[path] = _Worker(path)
        await self._nursery.start(self._follow, worker)

    async def _follow(self, worker: _Worker, task_status: trio.TaskStatus[None]) -> None:
        """Hold the worker's long poll; its answer (or its end) retires the worker."""
        started = False
        try:
            stream = await trio.open_unix_socket(worker.path)
            async with stream:
                await stream.send_all(_request(FINAL_PATH))
                task_status.started()
                started = True
                worker.last = decode_samples(await _read_response(stream))
        except (OSError, trio.BrokenResourceError, ValueError) as exc:
            # A crash (or a kill after the grace period): its last known figures stand.
            error_log.debug("No final metrics from worker socket %s: %s", worker.path, exc)
        finally:
            self._retire(worker)
            if not started:
                task_status.started()

    def _retire(self, worker: _Worker) -> None:
        if worker.retired:
            return
        worker.retired = True
        worker.done.set()
        self._workers.pop(worker.path, None)
        kept = [sample for sample in worker.last if is_cumulative(sample[0])]
        self._retired = sum_samples(self._retired, kept)

    async def collect(self) -> list[Sample]:
        """The retired workers' counters plus every live worker's figures now."""
        async with trio.open_nursery() as nursery:
            for worker in list(self._workers.values()):
                nursery.start_soon(self._refresh, worker)
        return sum_samples(self._retired, *(w.last for w in self._workers.values()))

    async def _refresh(self, worker: _Worker) -> None:
        with trio.move_on_after(_FETCH_TIMEOUT):
            try:
                stream = await trio.open_unix_socket(worker.path)
                async with stream:
                    await stream.send_all(_request(SNAPSHOT_PATH))
                    samples = decode_samples(await _read_response(stream))
            except (OSError, trio.BrokenResourceError, ValueError) as exc:
                error_log.debug("No metrics from worker socket %s: %s", worker.path, exc)
                # Gone, most likely: its final figures are on their way (or it crashed).
                await worker.done.wait()
                return
            if not worker.retired:  # its final figures may have come meanwhile
                worker.last = samples


def _request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: trioserve\r\nConnection: close\r\n\r\n".encode()


async def _read_response(stream: trio.SocketStream) -> bytes:
    """The body of a ``Connection: close`` response with a Content-Length, read to EOF.

    Raises:
        ValueError: not a whole 200 response.
    """
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
        if len(data) > _MAX_SNAPSHOT:
            raise ValueError("metrics snapshot too large")
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *fields = head.split(b"\r\n")
    if not status_line.startswith(b"HTTP/1.1 200 "):
        raise ValueError(f"answer {status_line[:40]!r}")
    for line in fields:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            raise ValueError("truncated answer")
    return body
