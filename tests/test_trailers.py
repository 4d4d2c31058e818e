"""Response trailers (the ASGI ``http.response.trailers`` extension) on both wire protocols:
trailer fields after the last chunk of a chunked HTTP/1.1 body when the client said
``TE: trailers``, a final HEADERS frame with END_STREAM over HTTP/2, dropped elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h2.events
import pytest
import trio
import trio.testing

from .conftest import connection
from .h2_helpers import GET, h2_connection, request

TRAILERS = [(b"grpc-status", b"0"), (b"x-checksum", b"abc")]


def trailer_app(
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    more_trailers: bool = False,
    scopes: list[dict[str, Any]] | None = None,
) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scopes is not None:
            scopes.append(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": headers or [],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
        if more_trailers:
            await send(
                {"type": "http.response.trailers", "headers": TRAILERS[:1], "more_trailers": True}
            )
            await send({"type": "http.response.trailers", "headers": TRAILERS[1:]})
        else:
            await send(
                {"type": "http.response.trailers", "headers": TRAILERS, "more_trailers": False}
            )

    return app


async def raw_exchange(app: Any, head: bytes) -> bytes:
    """Send a raw HTTP/1.1 request (it asks to close); everything the server wrote."""
    async with connection(app) as (client, _):
        await client.send_raw(head)
        return await client.read_until_eof()


# -- HTTP/1.1 ------------------------------------------------------------------------------------


async def test_scope_advertises_the_trailers_extension() -> None:
    scopes: list[dict[str, Any]] = []
    await raw_exchange(
        trailer_app(scopes=scopes), b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    assert scopes[0]["extensions"]["http.response.trailers"] == {}


async def test_http11_chunked_body_ends_with_trailer_fields_for_te_trailers() -> None:
    wire = await raw_exchange(
        trailer_app(),
        b"GET / HTTP/1.1\r\nhost: t\r\nte: trailers\r\nconnection: close\r\n\r\n",
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == (b"6\r\nhello \r\n5\r\nworld\r\n0\r\ngrpc-status: 0\r\nx-checksum: abc\r\n\r\n")


async def test_http11_trailers_sent_in_several_messages_go_out_together() -> None:
    wire = await raw_exchange(
        trailer_app(more_trailers=True),
        b"GET / HTTP/1.1\r\nhost: t\r\nte: deflate;q=0.5, trailers\r\nconnection: close\r\n\r\n",
    )
    assert wire.endswith(b"0\r\ngrpc-status: 0\r\nx-checksum: abc\r\n\r\n")


async def test_http11_trailers_are_dropped_without_te_trailers() -> None:
    wire = await raw_exchange(
        trailer_app(), b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    assert wire.endswith(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n")
    assert b"grpc-status" not in wire


async def test_http11_trailers_are_dropped_from_a_content_length_response() -> None:
    wire = await raw_exchange(
        trailer_app(headers=[(b"content-length", b"11")]),
        b"GET / HTTP/1.1\r\nhost: t\r\nte: trailers\r\nconnection: close\r\n\r\n",
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"content-length: 11" in head
    assert body == b"hello world"


async def test_http11_keep_alive_carries_on_after_trailers() -> None:
    async with connection(trailer_app()) as (client, _):
        await client.request(headers=[("te", "trailers")])
        response, body = await client.response()
        await client.request(headers=[("te", "trailers")])
        again, body_again = await client.response()
    assert (response.status_code, body) == (200, b"hello world")
    assert (again.status_code, body_again) == (200, b"hello world")


async def test_http11_app_that_never_sends_its_trailers_leaves_the_body_unfinished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"partial"})

    wire = await raw_exchange(
        app, b"GET / HTTP/1.1\r\nhost: t\r\nte: trailers\r\nconnection: close\r\n\r\n"
    )
    assert wire.endswith(b"7\r\npartial\r\n")  # no last chunk: the client sees a cut body
    assert "returned before finishing its response" in caplog.text


async def test_trailers_out_of_order_are_errors() -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        try:
            await send({"type": "http.response.trailers", "headers": TRAILERS})
        except RuntimeError as exc:
            errors.append(str(exc))
        await send({"type": "http.response.body", "body": b"x"})
        await send({"type": "http.response.trailers", "headers": []})
        try:
            await send({"type": "http.response.trailers", "headers": []})
        except RuntimeError as exc:
            errors.append(str(exc))

    await raw_exchange(app, b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
    assert errors == [
        "ASGI app sent 'http.response.trailers' before the end of the response body",
        "ASGI app sent 'http.response.trailers' without announcing trailers",
    ]


# -- HTTP/2 --------------------------------------------------------------------------------------


async def test_http2_trailers_are_a_final_headers_frame_with_end_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(trailer_app(more_trailers=True)) as (client, _, _):
        stream_id = await client.request(request(b"GET", b"/", (b"te", b"trailers")))
        response = await client.response(stream_id)
        events = client.stream_events(stream_id)
    assert (response.status, response.body) == (200, b"hello world")
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert len(trailers) == 1
    assert [(bytes(k), bytes(v)) for k, v in trailers[0].headers or ()] == TRAILERS
    assert trailers[0].stream_ended is not None
    assert not any(isinstance(e, h2.events.StreamReset) for e in events)


async def test_http2_trailers_need_no_te_header(autojump_clock: trio.testing.MockClock) -> None:
    async with h2_connection(trailer_app()) as (client, _, _):
        stream_id = await client.request(GET)
        await client.response(stream_id)
        events = client.stream_events(stream_id)
    assert any(isinstance(e, h2.events.TrailersReceived) for e in events)


async def test_http2_head_response_ends_with_its_head_and_drops_trailers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with h2_connection(trailer_app()) as (client, _, _):
        stream_id = await client.request(request(b"HEAD"))
        response = await client.response(stream_id)
        events = client.stream_events(stream_id)
    assert (response.status, response.body, response.reset) == (200, b"", None)
    assert not any(isinstance(e, h2.events.TrailersReceived) for e in events)


async def test_http2_file_body_drops_trailers_and_ends_whole(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"file body")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.pathsend", "path": str(path)})
        await send({"type": "http.response.trailers", "headers": TRAILERS})

    async with h2_connection(app) as (client, _, _):
        response = await client.get()
    assert (response.status, response.body, response.reset) == (200, b"file body", None)


async def test_http2_app_that_never_sends_its_trailers_gets_its_stream_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"partial"})

    async with h2_connection(app) as (client, _, _):
        response = await client.get()
    assert response.body == b"partial"
    assert response.reset == 0x2  # INTERNAL_ERROR: not a whole response
