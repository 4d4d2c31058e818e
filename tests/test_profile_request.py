"""``scripts/profile_request.py opcodes``: the per-request bytecode counts behind issue 14's
figures, run end to end against a real trioserve (traced, then untraced) under h2load.

The counting run takes about 30 s (12,000 traced requests, then 14,000 untraced for the
specializer's view), hence ``slow``, and is skipped in the compiled build, whose request path is
no Python bytecode to count. Both tests need h2load (``scripts/test-deps.sh`` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trioserve._h11._fast import COMPILED

pytestmark = pytest.mark.skipif(
    shutil.which("h2load") is None, reason="needs h2load (nghttp2-client)"
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(COMPILED, reason="the compiled request path runs no bytecode")
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
    # The specializer's view: sites listed as "count  file:line:function @offset OPNAME".
    _, _, generic = out.partition("left generic by the specializer:\n")
    sites = re.findall(r"^\s*[\d.]+\s+\S+:\d+:\S+ @\d+ [A-Z_]+$", generic, re.MULTILINE)
    assert sites, out[-2000:]


def test_a_server_that_does_not_start_is_one_line_saying_why() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/profile_request.py", "opcodes", "--", "no_such_module:app"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("profile_request.py: the server exited (2) before it listened")
    # The server's own last line, so that the reason is on the screen.
    assert "could not import module 'no_such_module'" in result.stderr
    assert result.stderr.count("\n") == 1
