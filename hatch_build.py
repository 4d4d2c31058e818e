"""Build hook: with ``TRIOSERVE_COMPILE=1``, a wheel carries the HTTP/1.1 request path compiled.

``TRIOSERVE_COMPILE=1 pip install .`` (or ``pip wheel``) compiles the modules listed in
``scripts/compile.py`` with mypyc and puts the extension modules in the wheel beside their
sources (Python imports an extension module before the ``.py`` of the same name); the wheel is
then specific to the platform and Python version. Without the variable, or for an editable
install (run ``python scripts/compile.py`` in the checkout instead), nothing happens and the
wheel stays pure Python. Needs a C compiler; mypy is fetched into the build environment only
when compiling. pip caches built wheels by name and version, not by this variable: install
from an index or an sdist with ``--no-cache-dir --no-binary trioserve`` (a directory is
always built afresh).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CompileHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def _compiling(self) -> bool:
        return os.environ.get("TRIOSERVE_COMPILE") == "1" and self.target_name == "wheel"

    def dependencies(self) -> list[str]:
        if not self._compiling():
            return []
        # mypyc, its setuptools build, and trioserve's own dependencies (their types make
        # the compiled code's calls into them direct).
        return ["mypy>=1.11", "setuptools>=69", *self.metadata.core.dependencies]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if not self._compiling() or version == "editable":
            return
        root = Path(self.root)
        spec = importlib.util.spec_from_file_location("_compile", root / "scripts" / "compile.py")
        assert spec is not None
        assert spec.loader is not None
        compile_script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compile_script)
        # Built outside the output directory (nothing but the wheel may land there), and
        # removed once the wheel is written (finalize).
        self._built = Path(tempfile.mkdtemp(prefix="trioserve-wheel-"))
        for built in compile_script.build(root, self._built):
            build_data["force_include"][str(built)] = str(built.relative_to(self._built))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        built: Path | None = getattr(self, "_built", None)
        if built is not None:
            shutil.rmtree(built, ignore_errors=True)
            self._built = None
