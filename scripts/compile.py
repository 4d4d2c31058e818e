"""Compile trioserve's HTTP/1.1 protocol with mypyc, in place in a checkout (or undo it).

The protocol (the sans-IO parser's fast path, the server's rules, the response framing) is
about a third of trioserve's CPU per small request, and the part with the most Python per
byte; compiled with mypyc (a C extension per module, built from the same typed source) it
costs about 40% less. Python prefers an extension module to the ``.py`` beside it, so after
``python scripts/compile.py`` a checkout (or an editable install of it) runs the compiled
modules, and ``python scripts/compile.py --clean`` takes them away again. A wheel gets them
with ``TRIOSERVE_COMPILE=1`` (see ``hatch_build.py``). Needs mypy (the ``dev`` extra) and a
C compiler.

Usage: python scripts/compile.py [--clean] [--root DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: The modules compiled: plain synchronous code with full annotations, no monkeypatching in
#: production, and nothing that subclasses a builtin exception (mypyc cannot compile that).
MODULES: tuple[str, ...] = (
    "trioserve/_h11/_writers.py",
    "trioserve/_h11/_strict.py",
    "trioserve/_h11/_responding.py",
    "trioserve/_h11/_protocol.py",
    "trioserve/_h11/_fast.py",
)

# What a build leaves: an extension per module, and mypyc's shared runtime (a top-level module
# named after a hash of the group).
_PATTERNS: tuple[str, ...] = ("trioserve/_h11/*.so", "*__mypyc.*.so")


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
