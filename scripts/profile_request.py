"""Where one request's CPU goes: the measurements behind issue 14's "instructions per request".

Two ways to look at a server under a fixed keep-alive load (``h2load --h1 -c50``), each the
difference between a run of 2,000 requests and one of 12,000, so that start-up, the warm-up
and shutdown cancel out and what is left is 10,000 requests' worth:

* ``instructions``: user-space instructions per request under callgrind (``valgrind``), in
  total and per C function (the interpreter's own functions included). Instruction counts do
  not depend on the machine's load, so two changes can be compared to a few tenths of a percent
  on a shared, noisy machine where req/s cannot. Works for any server command::

      python scripts/profile_request.py instructions -- \\
          .venv/bin/python -m trioserve scripts.bench_apps:hello --port {port} --no-access-log
      python scripts/profile_request.py instructions --tls -- \\
          .venv/bin/python -m uvicorn --http httptools --loop uvloop --port {port} \\
          --ssl-certfile {cert} --ssl-keyfile {key} scripts.bench_apps:hello

* ``opcodes``: Python bytecodes executed per request, per function, and the calls (and
  coroutine resumes) into each; with ``--unspecialized``, the hot bytecodes that Python 3.11's
  specializing interpreter left generic (an attribute or call it could not specialize costs
  several times a specialized one). trioserve only (it runs in this process, traced)::

      python scripts/profile_request.py opcodes -- scripts.bench_apps:hello --no-access-log

For ``instructions``, ``{port}`` in the command is replaced by a free port (it must be there),
and with ``--tls`` ``{cert}`` and ``{key}`` by a trustme certificate for 127.0.0.1; for
``opcodes``, ``--host 127.0.0.1 --port N`` is added to trioserve's arguments. Needs ``h2load``
(``apt-get install nghttp2-client``), and for ``instructions`` ``valgrind``; ``--tls`` needs
``trustme`` (the ``test`` extra), ``--unspecialized`` Python 3.11 (its opcode names). Run from
the repository root. A callgrind run of 12,000 requests takes about a minute. The server runs
in a session of its own (a terminal's resize or Ctrl-C reaches only this script, which stops
it); a server left behind by a killed script is the one process to stop by hand.
"""

from __future__ import annotations

import argparse
import collections
import dis
import gc
import importlib.util
import json
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

# (Run as a script, scripts/ is on the path: the benchmark's helpers are shared.)
from bench import free_port, make_tls_files

SMALL, LARGE = 2_000, 12_000  # requests in the two runs; their difference is what is reported
CONNECTIONS = 50
START_TIMEOUT = 120.0  # seconds for a server to listen (valgrind starts Python slowly)
STOP_TIMEOUT = 60.0  # seconds for it to exit after SIGINT (callgrind then writes its file)
_ANNOTATED = re.compile(r"\s*([\d,]+) \([^)]*\)\s+(\S.*)$")


class ProfileError(Exception):
    """The measurement could not be made (said in one line)."""


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ProfileError(f"needs {', '.join(missing)} on the PATH (see the docstring)")


def log_tail(log: Path) -> str:
    """The server's last words, for an error line."""
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else ""


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``cmd`` in a session of its own (SIGWINCH is this script's signal to it, not the
    terminal's), its output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProfileError(
                f"the server exited ({process.returncode}) before it listened{log_tail(log)}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise ProfileError(f"the server did not listen on port {port} within {START_TIMEOUT:.0f} s")


def load(url: str, requests: int) -> None:
    """``requests`` keep-alive GETs over ``CONNECTIONS`` connections; every one must be 2xx."""
    cmd = ["h2load", "--h1", f"-c{CONNECTIONS}", f"-n{requests}", url]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = re.search(r"status codes: (\d+) 2xx", done.stdout)
    if found is None or int(found.group(1)) != requests:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["nothing"]
        raise ProfileError(
            f"h2load did not get {requests} 2xx responses (exit {done.returncode}): {said[0]}"
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGKILL after STOP_TIMEOUT (without raising: this runs in ``finally``, and
    the error that got us here is the one to report; a callgrind file a kill cut short is
    missing, and said so when read)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def fill(command: list[str], port: int, tls: tuple[Path, Path] | None) -> list[str]:
    values = {"port": str(port)}
    if tls is not None:
        values |= {"cert": str(tls[0]), "key": str(tls[1])}
    return [
        re.sub(r"\{(port|cert|key)\}", lambda m: values.get(m.group(1), m.group(0)), arg)
        for arg in command
    ]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """bench.py's certificate (a temporary CA's leaf for localhost and 127.0.0.1)."""
    if importlib.util.find_spec("trustme") is None:
        raise ProfileError("--tls needs trustme (pip install -e '.[test]')")
    files = make_tls_files(directory)
    return files.cert, files.key


# -- instructions ---------------------------------------------------------------------------


def callgrind_run(
    command: list[str], requests: int, out: Path, tls: tuple[Path, Path] | None, path: str
) -> None:
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *fill(command, port, tls)]
    log = out.with_name(out.name + ".log")
    process = start(cmd, log)
    try:
        wait_listening(port, process, log)
        load(f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}", requests)
    finally:
        stop(process)


def self_costs(callgrind_file: Path) -> collections.Counter[str]:
    """Instructions per function (self cost), from ``callgrind_annotate``."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(callgrind_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        match = _ANNOTATED.match(line)
        if match is not None and "PROGRAM TOTALS" not in line:
            # "file:function [object]": the object's path says nothing per request.
            costs[match.group(2).split(" [")[0].rsplit("/", 1)[-1]] += int(
                match.group(1).replace(",", "")
            )
    return costs


def instructions(args: argparse.Namespace) -> None:
    require("h2load", "valgrind", "callgrind_annotate")
    if not any("{port}" in arg for arg in args.command):
        raise ProfileError("the server command must say where to listen: put {port} in it")
    if not args.tls and any(re.search(r"\{(cert|key)\}", arg) for arg in args.command):
        raise ProfileError("{cert} and {key} are filled in with --tls only")
    with tempfile.TemporaryDirectory(prefix="profile-request-") as workdir:
        tls = make_certificate(Path(workdir)) if args.tls else None
        files = []
        for requests in (SMALL, LARGE):
            out = Path(workdir) / f"callgrind.{requests}"
            callgrind_run(args.command, requests, out, tls, args.path)
            files.append(out)
        small, large = (self_costs(f) for f in files)
    per_request = {
        name: (large[name] - small[name]) / (LARGE - SMALL) for name in small.keys() | large.keys()
    }
    total = sum(per_request.values())
    if total <= 0:
        raise ProfileError("callgrind_annotate gave no costs to compare")
    print(f"instructions per request: {total:,.0f} (the {LARGE - SMALL:,} requests between runs)")
    for name, cost in sorted(per_request.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{cost:9,.0f} {cost / total:6.1%}  {name}")


# -- opcodes ----------------------------------------------------------------------------------


def _name_of(code: types.CodeType) -> str:
    where = code.co_filename.split("/site-packages/")[-1].replace(os.getcwd() + "/", "")
    return f"{where}:{code.co_firstlineno}:{code.co_name}"


def _dump(path: str, content: object) -> None:
    # Written under another name, then renamed: the driver reads only a whole file.
    part = Path(path + ".part")
    part.write_text(json.dumps(content))
    part.rename(path)


def opcode_child(mode: str, dump_to: str, trioserve_args: list[str]) -> None:
    """The server process. ``count``: traced, bytecodes per (function, offset) and calls per
    function, written out on each SIGWINCH. ``adaptive``: untraced (tracing keeps Python 3.11
    from specializing), each function's bytecode as the specializer left it, written out on
    SIGWINCH."""
    ops: collections.Counter[tuple[str, int]] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    dumps = 0

    def tracer(frame: types.FrameType, event: str, arg: object) -> object:
        frame.f_trace_opcodes = True
        key = _name_of(frame.f_code)
        calls[key] += 1

        def local(frame: types.FrameType, event: str, arg: object) -> object:
            if event == "opcode":
                ops[key, frame.f_lasti] += 1
            return local

        return local

    def dump_counts(signum: int, frame: object) -> None:
        nonlocal dumps
        dumps += 1
        counted, called = list(ops.items()), list(calls.items())  # (no Python code between)
        sys.settrace(None)
        _dump(f"{dump_to}.{dumps}", {"ops": counted, "calls": called})
        sys.settrace(tracer)

    def dump_adaptive(signum: int, frame: object) -> None:
        adaptive: dict[str, dict[int, str]] = {}
        for obj in gc.get_objects():
            if isinstance(obj, types.FunctionType):
                adaptive[_name_of(obj.__code__)] = {
                    op.offset: op.opname for op in dis.get_instructions(obj, adaptive=True)
                }
        _dump(f"{dump_to}.adaptive", adaptive)

    signal.signal(signal.SIGWINCH, dump_counts if mode == "count" else dump_adaptive)
    sys.argv = ["trioserve", *trioserve_args]
    if mode == "count":
        sys.settrace(tracer)
    runpy.run_module("trioserve", run_name="__main__", alter_sys=True)


_PRECALLS_THEN_CALL = {"PRECALL_ADAPTIVE", "PRECALL", "PRECALL_PYFUNC", "PRECALL_BOUND_METHOD"}
_GENERIC = {"LOAD_ATTR", "STORE_ATTR", "LOAD_GLOBAL", "LOAD_METHOD", "BINARY_SUBSCR", "COMPARE_OP"}


def _served(mode: str, workdir: str, command: list[str], path: str, runs: tuple[int, ...]) -> str:
    """Start a child in ``mode``, warm it up with SMALL requests, then for each of ``runs``
    load that many requests and ask for a dump; returns where the dumps go."""
    dump_to = str(Path(workdir) / mode)
    port = free_port()
    cmd = [sys.executable, __file__, "_child", mode, dump_to, "--", *command]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    log = Path(workdir) / f"{mode}.log"
    process = start(cmd, log)
    try:
        wait_listening(port, process, log)
        url = f"http://127.0.0.1:{port}{path}"
        load(url, SMALL)
        for number, requests in enumerate(runs, 1):
            if requests:
                load(url, requests)
            process.send_signal(signal.SIGWINCH)
            dumped = Path(f"{dump_to}.{number if mode == 'count' else 'adaptive'}")
            deadline = time.monotonic() + START_TIMEOUT
            while not dumped.exists():
                if process.poll() is not None:
                    raise ProfileError(
                        f"the server exited ({process.returncode}) before it wrote its "
                        f"counts{log_tail(log)}"
                    )
                if time.monotonic() > deadline:
                    raise ProfileError("the server wrote no counts")
                time.sleep(0.1)
    finally:
        stop(process)
    return dump_to


def opcodes(args: argparse.Namespace) -> None:
    require("h2load")
    if args.unspecialized and sys.version_info[:2] != (3, 11):
        raise ProfileError("--unspecialized reads Python 3.11's opcode names: run it on 3.11")
    with tempfile.TemporaryDirectory(prefix="profile-request-") as workdir:
        counts = _served("count", workdir, args.command, args.path, (0, LARGE - SMALL))
        first, second = (json.loads(Path(f"{counts}.{i}").read_text()) for i in (1, 2))
        adaptive: dict[str, dict[str, str]] = {}
        if args.unspecialized:
            where = _served("adaptive", workdir, args.command, args.path, (LARGE,))
            adaptive = json.loads(Path(f"{where}.adaptive").read_text())
    n = LARGE - SMALL
    base = {(k, o): c for (k, o), c in first["ops"]}
    per_site = {(k, o): (c - base.get((k, o), 0)) / n for (k, o), c in second["ops"]}
    base_calls = dict(first["calls"])
    calls = {k: (c - base_calls.get(k, 0)) / n for k, c in second["calls"]}
    per_function: collections.Counter[str] = collections.Counter()
    for (key, _), count in per_site.items():
        per_function[key] += count
    print(
        f"bytecodes per request: {sum(per_function.values()):,.0f}; "
        f"calls and resumes: {sum(calls.values()):.1f}"
    )
    print("bytecodes  calls  function")
    for key, count in per_function.most_common(args.top):
        print(f"{count:9.1f} {calls.get(key, 0):6.2f}  {key}")
    if args.unspecialized:
        print("\nexecuted at least once per request, left generic by the specializer:")
        for (key, offset), count in sorted(per_site.items(), key=lambda item: -item[1]):
            ops = adaptive.get(key, {})
            name = ops.get(str(offset), "")
            if count < 1 or not (name.endswith("_ADAPTIVE") or name in _GENERIC):
                continue
            # A CALL after a PRECALL specialized for a builtin or a method descriptor is never
            # reached: that PRECALL makes the call. (After PRECALL_PYFUNC, PRECALL_BOUND_METHOD
            # or an unspecialized PRECALL, the CALL runs.)
            before = ops.get(str(offset - 4), "")
            made = before.startswith("PRECALL") and before not in _PRECALLS_THEN_CALL
            if name == "CALL_ADAPTIVE" and made:
                continue
            print(f"{count:6.2f}  {key} @{offset} {name}")


def main() -> None:
    if len(sys.argv) > 4 and sys.argv[1] == "_child" and sys.argv[4] == "--":
        opcode_child(sys.argv[2], sys.argv[3], sys.argv[5:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, helps in (
        ("instructions", "callgrind instructions per request of a server command"),
        ("opcodes", "Python bytecodes per request per function (trioserve only)"),
    ):
        one = sub.add_parser(name, help=helps)
        one.add_argument("--path", default="/", help="the request target (default /)")
        one.add_argument("--top", type=int, default=40, help="functions listed (default 40)")
        if name == "instructions":
            one.add_argument("--tls", action="store_true", help="https; {cert} {key} filled in")
        else:
            one.add_argument(
                "--unspecialized", action="store_true", help="list generic hot bytecodes too"
            )
        one.add_argument("command", nargs="+", help="after --: the server command or arguments")
    args = parser.parse_args()
    try:
        if args.what == "instructions":
            instructions(args)
        else:
            opcodes(args)
    except (ProfileError, OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"profile_request.py: {exc}")


if __name__ == "__main__":
    main()
