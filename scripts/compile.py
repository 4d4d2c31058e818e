"""Compile trioserve's HTTP/1.1 request path with mypyc, in place in a checkout (or undo it).

The request path of a plain HTTP/1.1 request (see MODULES) is, in Python, mostly the
interpreter's dispatch: some sixty calls per request between small functions. Compiled with
mypyc (a C extension per module, built from the same typed source) the protocol costs about
40% less and the whole path about as much (callgrind, hello keep-alive: 147,700 -> 87,400
instructions per request). Python prefers an extension module to the ``.py`` beside it, so
after ``python scripts/compile.py`` a checkout (or an editable install of it) runs the
compiled modules, and ``python scripts/compile.py --clean`` takes them away again. A wheel
gets them with ``TRIOSERVE_COMPILE=1`` (see ``hatch_build.py``). Needs mypy (the ``dev``
extra) and a C compiler; compiling takes about a minute.

Usage: python scripts/compile.py [--clean] [--root DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The modules compiled: fully annotated code with no monkeypatching in production, no
#: subclass of a builtin exception mypyc cannot compile one of (``RuntimeError``, ``OSError``;
#: ``Exception`` is fine) and no class an interpreted module subclasses. First the HTTP/1.1
#: protocol (the fast path, the server's rules, the response framing), then the rest of a
#: plain HTTP/1.1 request's path: the connection's loop and keep-alive wait, the server's
#: epoll watch, the transport and TLS stream, the exchange and the ASGI request cycle with its
#: scope (the last two serve HTTP/2 too).
MODULES: tuple[str, ...] = (
    "trioserve/_h11/_writers.py",
    "trioserve/_h11/_strict.py",
    "trioserve/_h11/_responding.py",
    "trioserve/_h11/_protocol.py",
    "trioserve/_h11/_fast.py",
    "trioserve/_h11/_exchange.py",
    "trioserve/_h11/_keepalive.py",
    "trioserve/_h11/_connection.py",
    "trioserve/_http/_events.py",
    "trioserve/_http/_date.py",
    "trioserve/_http/_idle.py",
    "trioserve/_http/_scope.py",
    "trioserve/_http/_response_state.py",
    "trioserve/_http/_cycle.py",
    "trioserve/_readiness.py",
    "trioserve/_transport.py",
    "trioserve/_tls_stream.py",
)

# What a build leaves: an extension per module, and mypyc's shared runtime (a top-level module
# named after a hash of the group).
_PATTERNS: tuple[str, ...] = (
    "trioserve/_h11/*.so",
    "trioserve/_http/*.so",
    "trioserve/*.so",
    "*__mypyc.*.so",
)


def compiled_files(root: Path) -> list[Path]:
    """The extension modules a compile left under ``root``."""
    return sorted(path for pattern in _PATTERNS for path in root.glob(pattern))


def clean(root: Path) -> None:
    """Remove what :func:`compile_in_place` made under ``root``."""
    for path in compiled_files(root):
        path.unlink()


def build(root: Path, into: Path) -> list[Path]:
    """Compile :data:`MODULES` of the checkout ``root``; the extension modules, placed under
    ``into`` as they sit in the package (``into`` may be ``root`` itself).

    mypyc builds in a copy of the package (its build runs setuptools, which would read the
    checkout's ``pyproject.toml`` and refuse its PEP 639 license field).

    Raises:
        SystemExit: mypyc failed (its output says why).
    """
    made = []
    with tempfile.TemporaryDirectory(prefix="trioserve-mypyc-") as work:
        shutil.copytree(
            root / "trioserve", Path(work) / "trioserve", ignore=shutil.ignore_patterns("*.so")
        )
        # The compiled modules are checked as strictly as ever (``nox -s typecheck``); here
        # only their own errors stop the build, not those of modules they import, and a
        # library without type information is taken as untyped.
        (Path(work) / "mypy.ini").write_text(
            "[mypy]\nfollow_imports = silent\nignore_missing_imports = True\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "mypyc", *MODULES], cwd=work, capture_output=True, text=True
        )
        if result.returncode != 0:
            sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
            raise SystemExit(f"compile.py: mypyc failed (exit {result.returncode})")
        for built in compiled_files(Path(work)):
            target = into / built.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, target)
            made.append(target)
    if len(made) != len(MODULES) + 1:  # one per module, and mypyc's shared runtime
        raise SystemExit(
            f"compile.py: mypyc left {len(made)} extension modules, expected {len(MODULES) + 1}"
        )
    return made


def compile_in_place(root: Path) -> list[Path]:
    """Compile :data:`MODULES` beside their sources in the checkout ``root``."""
    clean(root)
    return build(root, root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the checkout (default: this script's)",
    )
    args = parser.parse_args()
    if args.clean:
        clean(args.root)
        print("compile.py: removed the compiled modules")
        return
    made = compile_in_place(args.root)
    print(f"compile.py: {len(made)} extension modules under {args.root}")


if __name__ == "__main__":
    main()
