"""Integration tests of weather_app, as the downstream project writes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from weather_app import create_app

import harness
from harness import Fault, HarnessServer


def test_forecast_calls_the_weather_api_over_tls(
    https_server: HarnessServer, server_factory: Callable[..., HarnessServer]
) -> None:
    # The third-party API: a stub over real TLS, trusted through the harness CA.
    https_server.expect("GET", "/v2/forecast", query={"city": "Oslo", "days": "1"}).respond(
        200, json={"sky": "snow", "high_c": -3}
    )
    # The project's own app, on a real socket, pointed at the stub.
    app = create_app(https_server.url, verify=https_server.client_ssl_context())
    service = server_factory(app=app)

    response = httpx.get(service.url_for("/forecast/Oslo"))

    assert response.status_code == 200
    assert response.json() == {"city": "Oslo", "summary": "snow, -3 C"}


def test_forecast_survives_a_failing_weather_api(
    https_server: HarnessServer, server_factory: Callable[..., HarnessServer]
) -> None:
    https_server.expect("GET", "/v2/forecast", times=None).respond(503)
    app = create_app(https_server.url, verify=https_server.client_ssl_context())
    service = server_factory(app=app)

    assert httpx.get(service.url_for("/forecast/Rome")).status_code == 502


def test_forecast_survives_a_reset_connection(
    https_server: HarnessServer, server_factory: Callable[..., HarnessServer]
) -> None:
    https_server.expect("GET", "/v2/forecast").respond(200).fault(Fault.reset())
    app = create_app(https_server.url, verify=https_server.client_ssl_context())
    service = server_factory(app=app)

    response = httpx.get(service.url_for("/forecast/Lima"))

    assert response.json() == {"error": "weather service unreachable"}


async def test_forecast_in_a_trio_test(trio_server_factory: Callable[..., Any]) -> None:
    weather = await trio_server_factory(tls=True)
    weather.expect("GET", "/v2/forecast").respond(200, json={"sky": "sun", "high_c": 31})
    async with (
        harness.open_server(
            app=create_app(weather.url, verify=weather.client_ssl_context())
        ) as service,
        httpx.AsyncClient(base_url=service.url) as client,
    ):
        response = await client.get("/forecast/Cairo")
    assert response.json()["summary"] == "sun, 31 C"
