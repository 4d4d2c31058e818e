"""The downstream project's app: a Starlette service in front of a third-party weather API."""

from __future__ import annotations

import ssl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def create_app(weather_api: str, *, verify: ssl.SSLContext | bool = True) -> Starlette:
    """The app, talking to the weather API at ``weather_api`` (an https:// base URL)."""

    async def forecast(request: Request) -> JSONResponse:
        city = request.path_params["city"]
        async with httpx.AsyncClient(base_url=weather_api, verify=verify, timeout=5) as client:
            try:
                upstream = await client.get("/v2/forecast", params={"city": city, "days": "1"})
            except httpx.TransportError:
                return JSONResponse({"error": "weather service unreachable"}, status_code=502)
        if upstream.status_code != 200:
            return JSONResponse({"error": "weather service failed"}, status_code=502)
        data = upstream.json()
        return JSONResponse({"city": city, "summary": f"{data['sky']}, {data['high_c']} C"})

    return Starlette(routes=[Route("/forecast/{city}", forecast)])
