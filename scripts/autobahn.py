#!/usr/bin/env python3
"""Run Autobahn|Testsuite's fuzzing client against an echo app served by trioserve.

Usage (from the repository root, with the project's virtualenv)::

    .venv/bin/python scripts/autobahn.py              # case families 1-7 and 10
    .venv/bin/python scripts/autobahn.py 12 13        # permessage-deflate (slow: many minutes)
    .venv/bin/python scripts/autobahn.py 5.19 6.4.*   # single cases or patterns

A plain number N stands for every case ``N.*``; anything with a dot is passed to wstest as is.

Autobahn|Testsuite (PyPI ``autobahntestsuite``) is Python 2 code. On the first run the script
builds it an environment under ``.autobahn/`` (git-ignored; ``--cache-dir`` to move it): a small
Python 3 venv holding ``virtualenv<20.22`` (the last series that can still create Python 2.7
environments), then a Python 2.7 environment made with it, into which ``autobahntestsuite`` is
installed (about a minute). The Python 2.7 interpreter is ``--python2``, else the newest
``~/.pyenv/versions/2.7*``, else ``python2.7`` on the PATH. Later runs reuse the environment.

trioserve runs in this process on 127.0.0.1, port 0, with an echo app (text and binary messages
are sent back as they came); wstest runs as a subprocess against it. Its HTML and JSON report is
written to ``.autobahn/reports/`` (index.html; ``--outdir`` to change), with its output
(``wstest.log``) and the spec it ran (``fuzzingclient.json``).

The summary counts, per case family, each result (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED,
FAILED) and the cases whose close behaviour is wrong (anything but OK or INFORMATIONAL: WRONG
CODE, UNCLEAN, FAILED BY CLIENT), then lists those cases. The exit status is 1 when any case
FAILED, is UNIMPLEMENTED (for 12/13: permessage-deflate was not negotiated) or closed wrongly.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import trioserve

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FAMILIES = ("1", "2", "3", "4", "5", "6", "7", "10")
# The version this script was last run with; the suite's own pins (autobahn 0.10.9, Twisted 19.10)
# come with it.
AUTOBAHN_REQUIREMENT = "autobahntestsuite==25.10.1"
AGENT = "trioserve"
RESULTS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
GOOD_CLOSE = ("OK", "INFORMATIONAL")
# Cases 1-7/10 take about a minute, 12 and 13 (thousands of large compressed messages) far longer;
# this only stops a wedged run.
DEFAULT_TIMEOUT = 3 * 3600.0


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Accept every websocket and send each message back unchanged."""
    if scope["type"] == "lifespan":
        for reply in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
            await receive()
            await send({"type": reply})
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


# -- the Python 2 environment ---------------------------------------------------------------------


def find_python2() -> str:
    candidates = sorted((Path.home() / ".pyenv" / "versions").glob("2.7*/bin/python"))
    if candidates:
        return str(candidates[-1])
    found = shutil.which("python2.7")
    if found is None:
        sys.exit(
            "autobahn.py: no Python 2.7 found (~/.pyenv/versions/2.7*, python2.7 on the PATH);"
            " install one (pyenv install 2.7.18) or pass --python2 /path/to/python2.7"
        )
    return found


def _run_step(what: str, command: list[str]) -> None:
    """Run one install step; on failure, exit with one line saying which (its output above)."""
    if subprocess.run(command, stdin=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"autobahn.py: {what} failed: {' '.join(command)}")


def ensure_wstest(cache: Path, python2: str | None) -> Path:
    """The wstest executable, installed under ``cache`` unless it already is."""
    env = cache / "py2"
    wstest = env / "bin" / "wstest"
    if wstest.exists():
        return wstest
    interpreter = python2 or find_python2()
    # A pyenv shim or a broken install is found but cannot run: say so in one line.
    probe = subprocess.run(
        [interpreter, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if probe.returncode != 0:
        sys.exit(f"autobahn.py: {interpreter} is not a working Python 2.7; pass --python2")
    tools = cache / "tools"
    virtualenv = tools / "bin" / "virtualenv"
    if not virtualenv.exists():
        print(f"autobahn.py: creating {tools} (virtualenv<20.22)", flush=True)
        _run_step("creating the tools venv", [sys.executable, "-m", "venv", str(tools)])
        pip = [str(tools / "bin" / "python"), "-m", "pip", "install", "-q"]
        _run_step("installing virtualenv", [*pip, "virtualenv<20.22"])
    print(f"autobahn.py: creating {env} with {interpreter}, installing {AUTOBAHN_REQUIREMENT}")
    _run_step("creating the Python 2.7 env", [str(virtualenv), "-q", "-p", interpreter, str(env)])
    _run_step(
        f"installing {AUTOBAHN_REQUIREMENT}",
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", AUTOBAHN_REQUIREMENT],
    )
    return wstest


# -- the run --------------------------------------------------------------------------------------


def case_patterns(families: Sequence[str]) -> list[str]:
    return [family if "." in family else f"{family}.*" for family in families]


async def run_suite(wstest: Path, patterns: list[str], reports: Path) -> None:
    # No keepalive pings: they would show up in the middle of a case's traffic.
    config = trioserve.Config(
        host="127.0.0.1", port=0, access_log=False, ws_ping_interval=None, graceful_timeout=1
    )
    server = trioserve.Server(echo_app, config)
    async with trio.open_nursery() as nursery:
        [(host, port)] = await nursery.start(server.serve)
        spec = {
            "outdir": str(reports),
            "servers": [{"agent": AGENT, "url": f"ws://{host}:{port}"}],
            "cases": patterns,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        spec_path = reports / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        log_path = reports / "wstest.log"
        print(f"autobahn.py: wstest against ws://{host}:{port}, cases {' '.join(patterns)}")
        print(f"autobahn.py: wstest output in {log_path}", flush=True)
        with log_path.open("wb") as log:
            await trio.run_process(
                [str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)],
                cwd=str(reports),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        nursery.cancel_scope.cancel()


# -- the report -----------------------------------------------------------------------------------


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def summarise(results: dict[str, dict[str, Any]], reports: Path) -> tuple[str, list[str]]:
    """A table of counts per family, and one line per case that failed or closed wrongly."""
    families: dict[int, Counter[str]] = {}
    bad: list[str] = []
    for case in sorted(results, key=_case_key):
        result = results[case]
        counts = families.setdefault(_case_key(case)[0], Counter())
        counts[result["behavior"]] += 1
        wrong_close = result["behaviorClose"] not in GOOD_CLOSE
        counts["wrong close"] += wrong_close
        if result["behavior"] in ("FAILED", "UNIMPLEMENTED") or wrong_close:
            detail = json.loads((reports / result["reportfile"]).read_text())
            bad.append(
                f"  {case}: {result['behavior']} / close {result['behaviorClose']}"
                f" (close code {result.get('remoteCloseCode')}): {detail.get('result', '')}"
                f" {detail.get('resultClose', '')}".rstrip()
            )
    columns = [*RESULTS, "wrong close"]
    lines = ["family " + " ".join(f"{name:>13}" for name in columns)]
    total: Counter[str] = Counter()
    for family, counts in sorted(families.items()):
        total.update(counts)
        lines.append(f"{family:>6} " + " ".join(f"{counts[name]:>13}" for name in columns))
    lines.append(" total " + " ".join(f"{total[name]:>13}" for name in columns))
    return "\n".join(lines), bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "cases",
        nargs="*",
        default=list(DEFAULT_FAMILIES),
        help="case families (N for N.*) or wstest case patterns; default: 1-7 and 10",
    )
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".autobahn")
    parser.add_argument("--python2", help="the Python 2.7 interpreter for Autobahn")
    parser.add_argument(
        "--outdir",
        type=Path,
        help="for the report, spec and log (emptied first); default: CACHE_DIR/reports",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="trioserve %(levelname)s %(message)s")

    cache: Path = args.cache_dir.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    wstest = ensure_wstest(cache, args.python2)
    reports: Path = (args.outdir or cache / "reports").resolve()
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    started = time.monotonic()

    async def bounded_run() -> None:
        with trio.fail_after(args.timeout):
            await run_suite(wstest, case_patterns(args.cases), reports)

    trio.run(bounded_run)
    elapsed = time.monotonic() - started

    index = json.loads((reports / "index.json").read_text())
    table, bad = summarise(index[AGENT], reports)
    print(table)
    print(f"{sum(1 for _ in index[AGENT])} cases in {elapsed:.0f} s; report: {reports}/index.html")
    if bad:
        print(f"{len(bad)} cases failed or closed wrongly:")
        print("\n".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
