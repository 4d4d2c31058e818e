"""``scripts/profile_request.py opcodes``: the per-request bytecode counts behind issue 14's
figures, run end to end against a real trioserve (traced, then untraced) under h2load.

About 50 s (14,000 traced requests, then 14,000 untraced), hence ``slow``; skipped without
h2load (``scripts/test-deps.sh`` installs it) and in the compiled build, whose request path is no
Python bytecode to count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trioserve._h11._fast import COMPILED

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("h2load") is None, reason="needs h2load (nghttp2-client)"),
    pytest.mark.skipif(COMPILED, reason="the compiled request path runs no bytecode"),
]

REPO = Path(__file__).resolve().parents[1]


def test_opcodes_counts_a_hello_request() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "scripts/profile_request.py",
            "opcodes",
            "--top",
            "60",
            "--unspecialized",
            "--",
            "scripts.bench_apps:hello",
            "--no-access-log",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    total = re.search(r"bytecodes per request: ([\d,]+); calls and resumes: ([\d.]+)", out)
    assert total is not None, out[:2000]
    bytecodes = int(total.group(1).replace(",", ""))
    # A hello request is some two thousand bytecodes (2026-12-06: 1,974): a count far outside
    # this range means the difference between the two snapshots went wrong, not the server.
    assert 500 < bytecodes < 20_000
    # Every request goes through the connection's loop, its parse and its response framing,
    # once each, and the app runs once.
    for function in ("_head_event", "_check_request", "frame_response", "hello"):
        line = re.search(rf"^\s*([\d.]+)\s+([\d.]+)\s+\S+:\d+:{function}$", out, re.MULTILINE)
        assert line is not None, f"{function} not listed:\n{out[:3000]}"
        assert float(line.group(2)) == pytest.approx(1.0, abs=0.05)
    assert "left generic by the specializer:" in out


def test_a_server_that_does_not_start_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/profile_request.py", "opcodes", "--", "no_such_module:app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("profile_request.py: the server exited")
    assert result.stderr.count("\n") == 1
