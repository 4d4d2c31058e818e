"""Developer sessions: ``nox -s tests``, ``compiled``, ``lint``, ``typecheck``, ``bench``, ``fuzz``,
``autobahn``.

CI (``.ci/run``) runs the same commands as these sessions, in a plain virtual environment.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def compiled(session: nox.Session) -> None:
    """Run the test suite with the HTTP/1.1 request path compiled by mypyc (scripts/compile.py)."""
    session.install("-e", ".[dev]")
    session.run("python", "scripts/compile.py")
    try:
        session.run("pytest", "-m", "not slow", *session.posargs)
    finally:
        session.run("python", "scripts/compile.py", "--clean")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on trioserve/ and harness/."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark against hypercorn (trio), uvicorn (h11) and nginx; needs wrk and nginx."""
    session.install("-e", ".[bench]")
    session.run("python", "scripts/bench.py", *session.posargs)
    session.run("python", "scripts/bench_harness.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    """The HTTP/1.1 protocol's property tests, long: hypothesis's ``fuzz`` profile."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_h11_fuzz.py",
        "--hypothesis-show-statistics",
        "-o",
        "faulthandler_timeout=0",  # each property runs for minutes: no stack dumps
        *session.posargs,
        env={"TRIOSERVE_FUZZ": "1"},
    )


@nox.session
def autobahn(session: nox.Session) -> None:
    """Autobahn|Testsuite's websocket cases (default 1-7 and 10, as in CI; ``-- 12 13`` for
    permessage-deflate, about 16 minutes on 2 cores). Needs a Python 2.7 (see the README)."""
    session.install("-e", ".")
    session.run("python", "scripts/autobahn.py", *session.posargs)
