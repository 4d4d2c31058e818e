"""Harness servers: a real trioserve on a real socket, as a trio context or in a thread.

Theory of operation
-------------------
:func:`open_server` runs ``trioserve.Server.serve`` in a nursery owned by the ``async with``
block: the block starts once the listener is bound (port 0, so no port races) and hands back a
:class:`HarnessServer`. Leaving the block stops the server at once (a test server needs no
drain: in-flight requests and idle, hung or half-read connections are cancelled), within a
bounded time, then checks the stub: unmatched requests, unmet expectations and server-side
exceptions raise :class:`HarnessError` with the full report (``strict=True``, the default).

:func:`serving` runs the same thing in a private ``trio.run`` in one thread, for sync, asyncio
and trio test suites alike; configuration calls (``expect``, ``reset``...) are thread-safe, and a
server thread that does not stop in time is an error, never a hang.

Everything here uses trioserve's public API only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import ssl
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlencode

import trio
import trustme

import trioserve

from ._faults import Fault
from ._matchers import Matcher
from ._matching import PathMatcher, Recorded, Route
from ._settings import TLSOption, build_config, resolve_tls
from ._stub import Stub
from ._tls import CertificateAuthority
from ._tlsfaults import fault_context, serve_stalling
from ._websocket import WebSocketRoute

__all__ = ["HarnessError", "HarnessServer", "open_server", "serve", "serving"]

# A stop that takes longer than this is reported as an error instead of hanging the test run.
STOP_TIMEOUT: Final = 5.0


class HarnessError(AssertionError):
    """A harness server saw something a strict test must not pass with; the message is the
    report."""


class HarnessServer:
    """The handle of a running harness server: where it is, how to trust it, what it saw."""

    def __init__(
        self,
        stub: Stub,
        server: trioserve.Server,
        address: tuple[str, int] | str,
        *,
        authority: CertificateAuthority | None,
        strict: bool,
        client_cert: Any = None,
        secure: bool | None = None,
    ) -> None:
        self.stub = stub
        self.server = server
        self.strict = strict
        self._authority = authority
        self._client_cert = client_cert
        if isinstance(address, str):
            self.uds_path: str | None = address
            self.host = "localhost"
            self.port = 0
        else:
            self.uds_path = None
            self.host, self.port = address
        if secure is None:
            secure = authority is not None
        self.scheme = "https" if secure else "http"
        self._stop = trio.Event()
        #: The server thread's token, when the server runs in a thread of its own (serving()).
        self._token: trio.lowlevel.TrioToken | None = None

    # -- where ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``; brackets for IPv6; no port for a unix socket,
        where clients must be given ``uds_path``)."""
        if self.uds_path is not None:
            return f"{self.scheme}://localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url_for(self, path: str = "/", **query: Any) -> str:
        """An absolute URL for ``path`` with ``query`` encoded."""
        if not path.startswith("/"):
            path = "/" + path
        return self.url + path + ("?" + urlencode(query, doseq=True) if query else "")

    # -- trust ----------------------------------------------------------------------------

    @property
    def ca_path(self) -> str:
        """The CA certificate (PEM) to trust: requests' ``verify=``, curl's ``--cacert``."""
        return str(self._require_tls().ca_path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this server (and presenting the client certificate under
        mTLS); Python's default verification, strict flags included, stays on."""
        context = self._require_tls().client_context()
        if self._client_cert is not None:
            self._client_cert.configure_cert(context)
        return context

    @property
    def ssl_env(self) -> dict[str, str]:
        """Environment variables that make subprocesses (curl, requests, Python) trust us."""
        path = self.ca_path
        return {"SSL_CERT_FILE": path, "REQUESTS_CA_BUNDLE": path, "CURL_CA_BUNDLE": path}

    @property
    def client_cert_path(self) -> str:
        """Under mTLS: a PEM file with the client certificate and key."""
        if self._client_cert is None:
            raise RuntimeError("this server was not started with mtls=True")
        assert self._authority is not None
        return str(self._authority.client_cert_path)

    def _require_tls(self) -> CertificateAuthority:
        if self._authority is None and self.scheme == "https":
            raise RuntimeError(
                "this server serves the certificate pair it was given: trust its CA yourself"
            )
        if self._authority is None:
            raise RuntimeError("this server does not use TLS: start it with tls=True")
        return self._authority

    # -- what it saw ------------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        """Every request received, in order."""
        return list(self.stub.log)

    @property
    def connection_count(self) -> int:
        """How many connections carried requests (1 for a keep-alive client)."""
        return len({r.connection_id for r in self.stub.log if r.connection_id is not None})

    @property
    def errors(self) -> list[str]:
        """Server-side exceptions (app or handler tracebacks)."""
        return list(self.stub.errors)

    # -- expectations ---------------------------------------------------------------------------

    def expect(
        self,
        method: str | None,
        path: PathMatcher,
        *,
        query: Mapping[str, str | Sequence[str]] | str | None = None,
        headers: Mapping[str, str | Callable[[str], bool]] | None = None,
        json: Any = None,
        json_contains: Any = None,
        body: bytes | None = None,
        predicate: Callable[[Recorded], bool] | Matcher | None = None,
        times: int | None = 1,
        ordered: bool = False,
    ) -> Route:
        """Expect a request; answer it with the returned route's ``respond*`` methods.

        ``json``: the body is this JSON document; ``json_contains``: the body is a JSON document
        containing this subset (values may be :class:`harness.Matcher` objects).
        ``headers`` values and ``predicate`` may be matchers too (their differences go into the
        report). ``times``: how many requests it answers (and, strictly, must get); ``None``
        for any number. ``ordered``: ordered expectations must be met in the order they were
        made.
        """
        return self.stub.expect(
            method,
            path,
            query=query,
            headers=headers,
            json=json,
            json_contains=json_contains,
            body=body,
            predicate=predicate,
            times=times,
            ordered=ordered,
        )

    def expect_websocket(self, path: str, *, times: int | None = 1) -> WebSocketRoute:
        """Expect a websocket connection to ``path``; script it with the returned route's
        ``send``, ``send_json``, ``expect_message``, ``expect_json``, ``close``,
        ``drop_mid_message``, ``deny``."""
        return self.stub.expect_websocket(path, times=times)

    def expect_no_requests(self) -> None:
        """Fail the check if any request arrives."""
        self.stub.no_requests_expected = True

    def on_unmatched(self, status: int = 500, **response: Any) -> None:
        """Answer requests no expectation matches with this response, and let them through: they
        are listed in the report but no longer fail a strict check."""
        self.stub.on_unmatched(status, **response)

    def fault(self, fault: Fault, *, fail_rate: float = 1.0, seed: int | None = None) -> Route:
        """Make every request fail this way (a catch-all route with this fault), or a seeded
        random share of them (see :meth:`Route.fault`)."""
        route = self.stub.expect(None, lambda path: True, times=None)
        return route.fault(fault, fail_rate=fail_rate, seed=seed)

    # -- waiting ----------------------------------------------------------------------------

    def wait_for(
        self, predicate: Callable[[Recorded], bool] | None = None, *, timeout: float = 5.0
    ) -> Recorded:
        """Block until a request ``predicate`` accepts (any request, without one) has arrived
        (it is in ``requests``), and return it: for clients that send in the background
        (webhooks, queues, fire-and-forget tasks).

        For servers running in a thread of their own (``serving()``, the threaded fixtures);
        in trio, use :meth:`wait_for_async`.

        Raises:
            HarnessError: none came within ``timeout`` seconds (the message is the report).
        """
        __tracebackhide__ = True
        if self._token is None:
            raise RuntimeError(
                "wait_for() would block this server's own trio run: use await srv.wait_for_async()"
            )
        found = self.stub.wait(predicate, timeout)
        if found is None:
            raise HarnessError(self._not_seen(predicate, timeout))
        return found

    async def wait_for_async(
        self,
        predicate: Callable[[Recorded], bool] | None = None,
        *,
        # A timeout of our own rather than the caller's fail_after: running out is a
        # HarnessError carrying the report of what did arrive.
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Recorded:
        """:meth:`wait_for` for trio code (any harness server: in this trio run or a thread)."""
        __tracebackhide__ = True
        with trio.move_on_after(timeout):
            if self._token is None:
                return await self.stub.wait_async(predicate)
            found = await trio.to_thread.run_sync(
                self.stub.wait, predicate, timeout, abandon_on_cancel=True
            )
            if found is not None:
                return found
        raise HarnessError(self._not_seen(predicate, timeout))

    def _not_seen(self, predicate: Callable[[Recorded], bool] | None, timeout: float) -> str:
        what = "request" if predicate is None else f"request accepted by {predicate!r}"
        return f"no {what} arrived within {timeout:g} s\n\n{self.report()}"

    def refuse_connections(self) -> None:
        """Stop listening: new connections are refused (open ones carry on)."""
        if self._token is not None:
            # A handle from serving(): the server lives in another thread's trio.run.
            trio.from_thread.run_sync(self.server.refuse_connections, trio_token=self._token)
        else:
            self.server.refuse_connections()

    def reset(self) -> None:
        """Forget expectations, requests and errors (for a server shared between tests)."""
        self.stub.reset()

    def stop(self) -> None:
        """End a server started with :func:`serve` (trio, from the server's own thread): it
        stops, then checks."""
        self._stop.set()

    # -- verdict --------------------------------------------------------------------------------

    def report(self) -> str:
        """What the server saw, for a human: requests, expectations, unmatched, errors."""
        return f"harness server at {self.url}\n" + self.stub.report()

    def check(self) -> None:
        """Raise :class:`HarnessError` with the report if anything is wrong."""
        problems = self.stub.problems()
        if problems:
            raise HarnessError(
                "\n".join(["harness server check failed:", *problems, "", self.report()])
            )


@contextlib.asynccontextmanager
async def open_server(
    *,
    app: Any = None,
    root: str | os.PathLike[str] | None = None,
    tls: TLSOption = False,
    mtls: bool = False,
    host: str | None = None,
    uds: str | os.PathLike[str] | bool | None = None,
    strict: bool = True,
    authority: CertificateAuthority | None = None,
    config: trioserve.Config | None = None,
    lifespan: Literal["auto", "on", "off"] | None = None,
    tls_fault: str | None = None,
    **settings: Any,
) -> AsyncIterator[HarnessServer]:
    """Serve a stub (and ``app`` or the directory ``root`` behind it) for the block's duration.

    Args:
        app: An ASGI app, or a WSGI app (Flask, Django's WSGI handler; told apart as trioserve
            does, see ``trioserve.as_asgi``); requests no expectation matches go to it. An ASGI
            app's lifespan runs (startup failure raises here).
        root: A directory to serve (trioserve's StaticFiles) behind the expectations.
        tls: Serve HTTPS: ``True`` (a leaf certificate for localhost, 127.0.0.1 and ::1 from
            the harness CA, one per test session), a ``(certfile, keyfile)`` pair, or a
            ``trustme.CA`` to issue the leaf from.
        mtls: Require client certificates (implies ``tls``); see ``client_ssl_context()``.
        host: The address to bind (default ``127.0.0.1``; ``"::1"`` for IPv6).
        uds: Listen on a unix socket: a path, or ``True`` for a fresh temporary one.
        strict: Check the stub when the block ends (see :meth:`HarnessServer.check`).
        authority: The CA to use with ``tls=True`` (default: the session's).
        config: A whole :class:`trioserve.Config` instead of the harness defaults (port 0, no
            access log, no drain at stop, no websocket pings).
        lifespan: ``"auto"`` (the default: an app that refuses the lifespan scope is served
            without it; one whose startup fails fails here), ``"on"`` or ``"off"``.
        tls_fault: Serve TLS that goes wrong (implies ``tls``): ``"expired_certificate"``,
            ``"wrong_host"``, ``"untrusted_ca"`` or ``"handshake_stall"``; the handle's trust
            (``client_ssl_context()``) stays that of the harness CA.
        settings: Any other trioserve setting (``port=``, ``server_header=``, ``http2=``,
            ``asyncio_app=``, ``keep_alive_timeout=``...), over ``config`` or the defaults.

    Raises:
        HarnessError: on exit, when strict and the check fails.
        TypeError: an unknown setting, or one the harness owns (``binds``...).
    """
    if app is not None and root is not None:
        raise ValueError("give app= or root=, not both")
    if (mtls or tls_fault) and tls is False:
        tls = True
    if lifespan is not None:
        settings["lifespan"] = lifespan
    elif config is None:
        settings["lifespan"] = "auto"
    fallback: Any = None
    if app is not None:
        fallback = trioserve.as_asgi(app)
    elif root is not None:
        fallback = trioserve.StaticFiles(root)
    with contextlib.ExitStack() as cleanup:
        directory: str | None = None
        if uds is True or isinstance(tls, trustme.CA):
            directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="harness-"))
        uds_path = None
        if uds is True:
            assert directory is not None
            uds_path = str(Path(directory) / "server.sock")
        elif uds:
            uds_path = os.fspath(uds)
        authority, pair = resolve_tls(tls, authority, directory)
        if mtls and authority is None:
            raise ValueError("mtls=True needs a CA to issue the client certificate: not a pair")
        config = build_config(config=config, host=host, uds=uds_path, tls=None, settings=settings)
        tls_config = None
        if authority is not None and tls_fault is not None:
            context = fault_context(authority, tls_fault, http2=config.http2)
            tls_config = trioserve.TLSConfig(context=context)
        elif authority is not None:
            context = authority.server_context(mtls=mtls, http2=config.http2)
            tls_config = trioserve.TLSConfig(context=context)
        elif pair is not None:
            tls_config = trioserve.TLSConfig(certfile=pair[0], keyfile=pair[1])
        config = dataclasses.replace(config, tls=tls_config)
        stub = Stub(fallback, lifespan=config.lifespan)
        server = trioserve.Server(stub, config)
        startup_error: Exception | None = None
        failed = True
        stall_scope = trio.CancelScope()  # the stalling listener's (tls_fault="handshake_stall")
        async with trio.open_nursery() as nursery:
            try:
                [address] = await nursery.start(server.serve)
                if tls_fault == "handshake_stall":
                    address = await nursery.start(serve_stalling, config.host, stall_scope)
            except Exception as exc:
                # Raised below, outside the nursery, so the caller sees it unwrapped (a lifespan
                # startup failure, say).
                startup_error = exc
            else:
                handle = HarnessServer(
                    stub,
                    server,
                    address,
                    authority=authority,
                    secure=tls_config is not None,
                    strict=strict,
                    client_cert=authority.client_cert if (mtls and authority) else None,
                )
                try:
                    yield handle
                    failed = False
                except Exception as exc:
                    # The test failed on its own; keep what the server saw next to its error.
                    if stub.problems():
                        exc.add_note(handle.report())
                    raise
                finally:
                    server.force_stop()
                    stall_scope.cancel()
                    nursery.cancel_scope.deadline = trio.current_time() + STOP_TIMEOUT
        if startup_error is not None:
            raise startup_error
        if nursery.cancel_scope.cancelled_caught:
            raise HarnessError(f"harness server at {handle.url} did not stop in {STOP_TIMEOUT} s")
        if handle.strict and not failed:
            handle.check()


async def serve(
    *, task_status: trio.TaskStatus[HarnessServer] = trio.TASK_STATUS_IGNORED, **options: Any
) -> None:
    """:func:`open_server` for ``nursery.start``: ``srv = await nursery.start(harness.serve)``.

    Runs until ``srv.stop()`` (then stops the server and checks it, raising
    :class:`HarnessError` into the nursery when strict) or until cancelled (no check).
    """
    async with open_server(**options) as server:
        task_status.started(server)
        await server._stop.wait()


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[HarnessServer]:
    """:func:`open_server` in a thread of its own, for any test (sync, asyncio or trio).

    Takes the same arguments. Leaving the block stops the server (bounded) and, when strict,
    raises :class:`HarnessError` if the check fails.
    """
    started: queue.Queue[tuple[HarnessServer, trio.lowlevel.TrioToken] | BaseException] = (
        queue.Queue()
    )
    outcome: list[BaseException] = []
    stop: list[trio.Event] = []

    async def main() -> None:
        stop.append(trio.Event())
        try:
            async with open_server(**options) as handle:
                started.put((handle, trio.lowlevel.current_trio_token()))
                await stop[0].wait()
        except BaseException as exc:
            if started.empty() and not outcome:
                started.put(exc)
            outcome.append(exc)

    thread = threading.Thread(target=trio.run, args=(main,), name="harness-server", daemon=True)
    thread.start()
    first = started.get(timeout=30)
    if isinstance(first, BaseException):
        thread.join(STOP_TIMEOUT)
        raise first
    handle, token = first
    handle._token = token
    try:
        yield handle
    except Exception as exc:
        if handle.stub.problems():
            exc.add_note(handle.report())
        raise
    finally:
        token.run_sync_soon(stop[0].set)
        thread.join(STOP_TIMEOUT + 1)
        if thread.is_alive():
            raise HarnessError(f"harness server thread did not stop in {STOP_TIMEOUT} s")
    if outcome:
        raise outcome[0]
