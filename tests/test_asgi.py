"""App loading (MODULE:ATTR, --factory, ASGI 2 adaptation) and Mounts."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from trioserve import AppLoadError
from trioserve._asgi import as_asgi3, load_app


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "apps_for_loading.py").write_text(
        textwrap.dedent(
            """
            class Holder:
                async def app(scope, receive, send):
                    await send({"type": "done", "how": "asgi3 dotted"})

            async def app(scope, receive, send):
                await send({"type": "done", "how": "asgi3"})

            def create_app():
                return app

            def broken_factory():
                raise RuntimeError("no config")

            class ASGI2App:
                def __init__(self, scope):
                    self.scope = scope

                async def __call__(self, receive, send):
                    await send({"type": "done", "how": "asgi2 class"})

            def asgi2_function(scope):
                async def instance(receive, send):
                    await send({"type": "done", "how": "asgi2 function"})
                return instance

            class CallableASGI3:
                async def __call__(self, scope, receive, send):
                    await send({"type": "done", "how": "asgi3 instance"})

            instance = CallableASGI3()
            not_callable = 42
            """
        )
    )
    yield tmp_path
    sys.modules.pop("apps_for_loading", None)


async def run(app: Any) -> str:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http"}, receive, send)
    return str(sent[0]["how"])


@pytest.mark.parametrize(
    ("spec", "factory", "how"),
    [
        ("apps_for_loading:app", False, "asgi3"),
        ("apps_for_loading", False, "asgi3"),
        ("apps_for_loading:Holder.app", False, "asgi3 dotted"),
        ("apps_for_loading:create_app", True, "asgi3"),
        ("apps_for_loading:ASGI2App", False, "asgi2 class"),
        ("apps_for_loading:asgi2_function", False, "asgi2 function"),
        ("apps_for_loading:instance", False, "asgi3 instance"),
    ],
)
async def test_load_app_forms(app_dir: Path, spec: str, factory: bool, how: str) -> None:
    app = load_app(spec, app_dir=str(app_dir), factory=factory)
    assert await run(app) == how


@pytest.mark.parametrize(
    ("spec", "factory", "message"),
    [
        ("apps_for_loading:broken_factory", True, "raised RuntimeError: no config"),
        ("apps_for_loading:not_callable", False, "is a int, not an ASGI application"),
        (
            "apps_for_loading:not_callable",
            True,
            "--factory: 'apps_for_loading:not_callable' is a int",
        ),
        ("apps_for_loading:missing", False, "has no attribute 'missing'"),
    ],
)
def test_load_app_errors(app_dir: Path, spec: str, factory: bool, message: str) -> None:
    with pytest.raises(AppLoadError, match=message.replace("(", r"\(")):
        load_app(spec, app_dir=str(app_dir), factory=factory)


def test_as_asgi3_refuses_what_is_neither() -> None:
    def zero_arguments() -> None: ...

    with pytest.raises(AppLoadError, match="does not look like an ASGI application"):
        as_asgi3(zero_arguments)
