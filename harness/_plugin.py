"""The pytest plugin (entry point ``pytest11: harness``): fixtures, a marker, a report section.

Inert until used: importing it starts nothing; servers exist only while a test uses a fixture.

Fixtures: ``harness_ca`` (session), ``http_server``, ``https_server``, ``server_factory``
(threaded: sync, asyncio and trio tests), ``trio_server``, ``trio_server_factory`` (pytest-trio:
in the test's own nursery), ``session_server_factory`` (servers shared by a session, checked and
reset after every test), ``harness_trust_env`` (SSL_CERT_FILE and friends for subprocesses).
Failing tests get a "harness server" report section, whichever side failed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from ._server import HarnessError, HarnessServer, serve, serving
from ._tls import CertificateAuthority, session_authority

_USED = pytest.StashKey[list[HarnessServer]]()
# Set when the test's call phase failed: its servers are then not checked at teardown (the
# report goes into the failure as a section instead), so a test fails once, not FAILED + ERROR.
_CALL_FAILED = pytest.StashKey[bool]()
# Session servers, each with the strictness given to the factory (None: each test's own, from
# its marker or the ini option).
_session_servers: list[tuple[HarnessServer, bool | None]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "harness_strict",
        type="bool",
        default=True,
        help="harness: fail tests on unmatched requests, unmet expectations and server errors",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "harness(strict=True): options for the harness servers this test starts",
    )


def _strict(node: pytest.Item | pytest.Collector, config: pytest.Config) -> bool:
    """The strictness for servers used by ``node``: its ``harness`` marker, else the ini."""
    marker = node.get_closest_marker("harness")
    if marker is not None and "strict" in marker.kwargs:
        return bool(marker.kwargs["strict"])
    return bool(config.getini("harness_strict"))


def _track(request: pytest.FixtureRequest, server: HarnessServer) -> HarnessServer:
    request.node.stash.setdefault(_USED, []).append(server)
    return server


def _call_failed(node: pytest.Item | pytest.Collector) -> bool:
    return node.stash.get(_CALL_FAILED, False)


def _shorten(exc: BaseException) -> BaseException:
    """A failed check as a fresh error without the frames of the plugin, contextlib and the
    server thread (the message is the whole story); anything else as it is."""
    if isinstance(exc, HarnessError):
        return HarnessError(str(exc))
    if isinstance(exc, BaseExceptionGroup):  # from a trio nursery: checks of several servers
        failures, rest = exc.split(HarnessError)
        if failures is not None and rest is None:
            return HarnessError("\n\n".join(str(e) for e in _leaves(failures)))
    return exc


def _leaves(group: BaseExceptionGroup[HarnessError]) -> list[HarnessError]:
    return [
        leaf
        for exc in group.exceptions
        for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    ]


@pytest.fixture(scope="session")
def harness_ca() -> CertificateAuthority:
    """The session's CA (trustme): ``ca_path``, ``client_context()``, ``ca``."""
    return session_authority()


@pytest.fixture
def server_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., HarnessServer]]:
    """Start harness servers (``server_factory(tls=True, app=..., ...)``), each in a thread of its
    own; all are stopped and checked when the test ends."""
    __tracebackhide__ = True
    started: list[HarnessServer] = []
    stack = contextlib.ExitStack()

    def factory(**options: Any) -> HarnessServer:
        options.setdefault("strict", _strict(request.node, request.config))
        server = stack.enter_context(serving(**options))
        started.append(server)
        return _track(request, server)

    try:
        yield factory
    finally:
        if _call_failed(request.node):
            for server in started:
                server.strict = False
        try:
            stack.close()
        except Exception as exc:
            shorter = _shorten(exc)
            if shorter is exc:
                raise
            raise shorter from None


@pytest.fixture
def http_server(server_factory: Callable[..., HarnessServer]) -> HarnessServer:
    """A plain-HTTP stub server on 127.0.0.1."""
    return server_factory()


@pytest.fixture
def https_server(server_factory: Callable[..., HarnessServer]) -> HarnessServer:
    """A TLS stub server (certificate for localhost, 127.0.0.1 and ::1 from ``harness_ca``)."""
    return server_factory(tls=True)


@pytest.fixture
async def trio_server_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[HarnessServer]]]:
    """Like ``server_factory``, for pytest-trio tests: servers run in this fixture's nursery
    (in the test's ``trio.run``), and are stopped and checked when the test ends."""
    __tracebackhide__ = True
    started: list[HarnessServer] = []
    try:
        async with trio.open_nursery() as nursery:

            async def factory(**options: Any) -> HarnessServer:
                options.setdefault("strict", _strict(request.node, request.config))
                server: HarnessServer = await nursery.start(functools.partial(serve, **options))
                started.append(server)
                return _track(request, server)

            yield factory
            for server in started:
                server.strict = server.strict and not _call_failed(request.node)
                server.stop()
    except BaseExceptionGroup as group:
        shorter = _shorten(group)
        if shorter is group:
            raise
        raise shorter from None


@pytest.fixture
async def trio_server(
    trio_server_factory: Callable[..., Awaitable[HarnessServer]],
) -> HarnessServer:
    """A plain-HTTP stub server in the pytest-trio test's nursery."""
    return await trio_server_factory()


@pytest.fixture(scope="session")
def session_server_factory() -> Iterator[Callable[..., HarnessServer]]:
    """Start servers shared by the whole session (for expensive apps); after every test each
    one is checked and reset. The check follows each test's strictness (its ``harness`` marker,
    else ``harness_strict``), unless the factory was given ``strict=``."""
    with contextlib.ExitStack() as stack:

        def factory(**options: Any) -> HarnessServer:
            explicit = options.get("strict")
            # Without strict=, the check after each test is the only one (the last test's
            # runs after the session's teardown, so it covers that too).
            options.setdefault("strict", False)
            server = stack.enter_context(serving(**options))
            _session_servers.append((server, explicit))
            return server

        yield factory
        _session_servers.clear()


@pytest.fixture
def harness_trust_env(
    monkeypatch: pytest.MonkeyPatch, harness_ca: CertificateAuthority
) -> dict[str, str]:
    """Point SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE at the harness CA."""
    values = {name: str(harness_ca.ca_path) for name in _TRUST_VARIABLES}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


_TRUST_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    # After pytest's own teardown, so that a failed check cannot leave the test half torn down.
    # The list is copied first: after the last test, that teardown stops the session servers.
    __tracebackhide__ = True
    servers = list(_session_servers)
    result = yield
    problems = []
    for server, explicit in servers:
        strict = explicit if explicit is not None else _strict(item, item.config)
        if strict and not _call_failed(item):
            try:
                server.check()
            except HarnessError as exc:
                problems.append(str(exc))
        server.reset()
    if problems:
        raise HarnessError("\n\n".join(problems))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    if report.failed:
        servers = [*item.stash.get(_USED, []), *(server for server, _ in _session_servers)]
        for server in servers:
            report.sections.append(("harness server", server.report()))
    return report
