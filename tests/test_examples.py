"""The examples/ folder is a downstream project's test suite: it must pass as one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow  # a whole pytest run in a subprocess
def test_downstream_example_project_passes() -> None:
    project = EXAMPLES / "downstream"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(project), "-c", str(project / "pytest.ini"), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
