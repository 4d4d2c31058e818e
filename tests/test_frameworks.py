"""Real frameworks, unchanged, over real sockets: Starlette, FastAPI (on trio through anyio) and
Django (asyncio-only, through --asyncio-app). Clients: httpx and the websockets library.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
runtime, and the endpoints below are defined inside functions.
"""

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from websockets.sync.client import connect

from ._helpers import in_thread, serving


class Spy:
    """Wraps an app and records the types of the messages it sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def spying_send(message: Any) -> None:
            self.sent.append(message["type"])
            await send(message)

        await self.app(scope, receive, spying_send)


# -- Starlette ----------------------------------------------------------------------------------


def starlette_app(tmp_path: Path, background_log: list[str]) -> Any:
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import (
        FileResponse,
        JSONResponse,
        PlainTextResponse,
        StreamingResponse,
    )
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    (tmp_path / "report.bin").write_bytes(os.urandom(200_000))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "connected at startup"}

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"home, db {request.state.db}")

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {"id": int(request.path_params["id"]), "q": request.query_params.get("q")}
        )

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"received": (await request.body()).decode()})

    async def stream(request: Request) -> StreamingResponse:
        async def numbers() -> AsyncIterator[bytes]:
            for number in range(5):
                yield f"{number}\n".encode()
                await trio.sleep(0)

        return StreamingResponse(numbers(), media_type="text/plain")

    async def report(request: Request) -> FileResponse:
        return FileResponse(tmp_path / "report.bin")

    async def later(request: Request) -> PlainTextResponse:
        def record() -> None:
            background_log.append("ran after the response")

        return PlainTextResponse("accepted", background=BackgroundTask(record))

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        name = await websocket.receive_text()
        await websocket.send_json({"hello": name, "db": websocket.state.db})
        await websocket.close()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/items/{id:int}", item),
            Route("/echo", echo, methods=["POST"]),
            Route("/stream", stream),
            Route("/report", report),
            Route("/later", later),
            WebSocketRoute("/ws", ws),
        ],
        lifespan=lifespan,
    )


async def test_starlette_app_runs_unchanged(tmp_path: Path) -> None:
    background_log: list[str] = []
    spy = Spy(starlette_app(tmp_path, background_log))
    async with serving(spy) as (_, address):

        def client() -> dict[str, Any]:
            with httpx.Client(base_url=f"http://{address}", timeout=10) as http:
                with connect(f"ws://{address}/ws") as ws:
                    ws.send("trio")
                    ws_reply = ws.recv(timeout=10)
                return {
                    "home": http.get("/").text,
                    "item": http.get("/items/7", params={"q": "x"}).json(),
                    "missing": http.get("/items/nope").status_code,
                    "echo": http.post("/echo", content=b"payload").json(),
                    "stream": http.get("/stream").text,
                    "report": http.get("/report").content,
                    "later": http.get("/later").text,
                    "ws": ws_reply,
                }

        got = await in_thread(client)
    assert got["home"] == "home, db connected at startup"
    assert got["item"] == {"id": 7, "q": "x"}
    assert got["missing"] == 404
    assert got["echo"] == {"received": "payload"}
    assert got["stream"] == "0\n1\n2\n3\n4\n"
    assert got["report"] == (tmp_path / "report.bin").read_bytes()
    assert "http.response.pathsend" in spy.sent  # FileResponse used the server's sendfile
    assert got["later"] == "accepted"
    assert background_log == ["ran after the response"]
    assert got["ws"] == '{"hello":"trio","db":"connected at startup"}'


# -- FastAPI ------------------------------------------------------------------------------------


def fastapi_app() -> Any:
    from fastapi import Depends, FastAPI, Header, HTTPException, WebSocket
    from pydantic import BaseModel

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.greeting = "ready"
        yield

    app = FastAPI(lifespan=lifespan)

    class Item(BaseModel):
        name: str
        price: float

    def token(x_token: str = Header(...)) -> str:
        if x_token != "secret":
            raise HTTPException(status_code=401, detail="bad token")
        return x_token

    @app.get("/status")
    async def status() -> dict[str, str]:
        return {"greeting": app.state.greeting}

    @app.post("/items")
    async def create(item: Item, _: str = Depends(token)) -> dict[str, Any]:
        return {"name": item.name, "total": item.price * 2}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, bool]:  # runs in a worker thread
        return {"sync": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        data = await websocket.receive_json()
        await websocket.send_json({"doubled": data["n"] * 2})
        await websocket.close(code=1000)

    return app


async def test_fastapi_app_runs_unchanged() -> None:
    async with serving(fastapi_app()) as (_, address):

        def client() -> dict[str, Any]:
            with httpx.Client(base_url=f"http://{address}", timeout=10) as http:
                ok = http.post(
                    "/items", json={"name": "pen", "price": 1.5}, headers={"x-token": "secret"}
                )
                bad_token = http.post(
                    "/items", json={"name": "pen", "price": 1.5}, headers={"x-token": "guess"}
                )
                invalid = http.post("/items", json={"name": "pen"}, headers={"x-token": "secret"})
                with connect(f"ws://{address}/ws") as ws:
                    ws.send('{"n": 21}')
                    ws_reply = ws.recv(timeout=10)
                return {
                    "status": http.get("/status").json(),
                    "ok": (ok.status_code, ok.json()),
                    "bad_token": (bad_token.status_code, bad_token.json()),
                    "invalid": (invalid.status_code, invalid.json()["detail"][0]["loc"]),
                    "sync": http.get("/sync").json(),
                    "ws": ws_reply,
                }

        got = await in_thread(client)
    assert got["status"] == {"greeting": "ready"}
    assert got["ok"] == (200, {"name": "pen", "total": 3.0})
    assert got["bad_token"] == (401, {"detail": "bad token"})
    assert got["invalid"] == (422, ["body", "price"])
    assert got["sync"] == {"sync": True}
    assert got["ws"] == '{"doubled":42}'


# -- Django (asyncio-only: through trio-asyncio) --------------------------------------------------


@pytest.fixture(scope="module")
def django_app() -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="test-only-" + "x" * 40,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
        )
        django.setup()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _django_views() -> list[Any]:
    from django.http import HttpRequest, HttpResponse, JsonResponse
    from django.urls import path

    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse("hello from django")

    def sync_view(request: HttpRequest) -> JsonResponse:  # sync: asgiref's thread executor
        return JsonResponse({"method": request.method, "body": request.body.decode()})

    return [path("", hello), path("sync", sync_view)]


def __getattr__(name: str) -> Any:
    # Django reads urlpatterns from ROOT_URLCONF (this module) lazily, once it is configured.
    if name == "urlpatterns":
        return _django_views()
    raise AttributeError(name)


async def test_django_app_runs_through_asyncio_app(django_app: Any) -> None:
    async with serving(django_app, asyncio_app=True) as (_, address):

        def client() -> tuple[str, Any]:
            with httpx.Client(base_url=f"http://{address}", timeout=10) as http:
                return http.get("/").text, http.post("/sync", content=b"data").json()

        home, sync = await in_thread(client)
    assert home == "hello from django"
    assert sync == {"method": "POST", "body": "data"}
