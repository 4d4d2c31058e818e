"""The examples/ folder holds downstream projects' test suites: each must pass as one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> str:
    """Run ``examples/name``'s suite with its own pytest.ini in a subprocess; its output."""
    project = EXAMPLES / name
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(project), "-c", str(project / "pytest.ini"), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow  # a whole pytest run in a subprocess
def test_downstream_example_project_passes() -> None:
    assert "4 passed" in run_example("downstream")


@pytest.mark.slow  # a whole pytest run in a subprocess
def test_http_client_suite_modelled_on_httpx_passes() -> None:
    # tinyhttp's suite: httpx's conftest shape (a session-wide ASGI app over HTTP and over TLS
    # with a trustme CA), with harness fixtures in place of uvicorn in a thread.
    assert "25 passed" in run_example("httpclient_suite")
