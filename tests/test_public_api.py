"""The public surface: what trioserve and harness export, and that harness uses only that."""

from __future__ import annotations

import ast
from pathlib import Path

import harness
import trioserve

# Type aliases carry no docstring of their own; trioserve/_types.py documents them.
ASGI_TYPE_ALIASES = ("ASGIApp", "Message", "Receive", "Scope", "Send")


def test_trioserve_exports() -> None:
    assert sorted(trioserve.__all__) == sorted(
        [
            "ASGIApp",
            "AppLoadError",
            "ClientDisconnected",
            "Config",
            "ConfigError",
            "Message",
            "Mounts",
            "Receive",
            "Scope",
            "Send",
            "Server",
            "StaticFiles",
            "TLSConfig",
            "TrioserveError",
            "WSGIApp",
            "__version__",
            "as_asgi",
            "serve",
        ]
    )
    for name in trioserve.__all__:
        assert getattr(trioserve, name) is not None
        if name not in ("__version__", *ASGI_TYPE_ALIASES):
            assert getattr(trioserve, name).__doc__, f"{name} has no docstring"


def test_client_disconnected_is_an_oserror() -> None:
    # ASGI HTTP spec 2.4: send() on a closed connection raises OSError.
    assert issubclass(trioserve.ClientDisconnected, OSError)


def test_harness_imports_nothing_private_from_trioserve() -> None:
    package = Path(harness.__file__).parent
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("trioserve._"), (source, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("trioserve._"), (source, alias.name)
