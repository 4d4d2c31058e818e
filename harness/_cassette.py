"""Record and replay: talk to a real upstream once, then serve its answers back.

Theory of operation
-------------------
:func:`recording` starts a harness server whose app forwards every request to ``upstream_url``
(one HTTP/1.1 request per upstream connection, ``Connection: close``, TLS when the URL says
``https``) and answers with what came back; when the block ends, the exchanges are written to
``cassette`` as JSON (bodies as UTF-8 text when they decode, else base64). :func:`replaying`
starts a harness server with one expectation per recorded exchange, in order (method, path,
query, and the body when there was one), each answering once with its recorded response: a
request the cassette does not have fails the strict check with the usual diff, and so does a
recorded exchange the test no longer makes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, unquote, urlsplit

import h11
import trio

from trioserve import Receive, Scope, Send

from ._faults import Response
from ._server import HarnessServer, serving

__all__ = ["recording", "replaying"]

# An upstream response body is held whole to be written to the cassette.
MAX_BODY: Final = 16 * 1024 * 1024
# Hop-by-hop and framing fields: the server sending the replay makes its own.
_NOT_REPLAYED: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)


def _encode(body: bytes) -> dict[str, str]:
    try:
        return {"text": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(body).decode("ascii")}


def _decode(field: dict[str, str]) -> bytes:
    if "base64" in field:
        return base64.b64decode(field["base64"])
    return field.get("text", "").encode("utf-8")


class _Forwarder:
    """The ASGI app of a recording server: forward, answer, remember."""

    def __init__(self, upstream: str, verify: ssl.SSLContext | None) -> None:
        self.upstream: SplitResult = urlsplit(upstream)
        if self.upstream.scheme not in ("http", "https") or not self.upstream.hostname:
            raise ValueError(f"upstream_url must be an http(s) URL, not {upstream!r}")
        self.verify = verify or ssl.create_default_context()
        self.exchanges: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan (served without it) and no websockets to record
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        status, response_headers, response_body = await self._fetch(
            scope["method"], target, headers, body
        )
        with self._lock:
            self.exchanges.append(
                {
                    "request": {
                        "method": scope["method"],
                        "target": target,
                        "headers": headers,
                        "body": _encode(body),
                    },
                    "response": {
                        "status": status,
                        "headers": response_headers,
                        "body": _encode(response_body),
                    },
                }
            )
        kept = [(k, v) for k, v in response_headers if k.lower() not in _NOT_REPLAYED]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in kept],
            }
        )
        await send({"type": "http.response.body", "body": response_body})

    async def _fetch(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = self.upstream
        secure = upstream.scheme == "https"
        host = upstream.hostname
        assert host is not None
        port = upstream.port or (443 if secure else 80)
        prefix = upstream.path.rstrip("/")
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        if secure:
            stream = trio.SSLStream(stream, self.verify, server_hostname=host)
        sent = [
            (k, v)
            for k, v in headers
            if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")
        ]
        sent += [
            ("host", upstream.netloc),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        client = h11.Connection(h11.CLIENT)
        async with stream:
            await stream.send_all(
                client.send(h11.Request(method=method, target=prefix + target, headers=sent))
                + client.send(h11.Data(data=body))
                + client.send(h11.EndOfMessage())
            )
            status = 0
            response_headers: list[tuple[str, str]] = []
            parts: list[bytes] = []
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = [
                        (k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers
                    ]
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                    if sum(map(len, parts)) > MAX_BODY:
                        raise ValueError(f"upstream response body over {MAX_BODY} bytes")
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, response_headers, b"".join(parts)


@contextlib.contextmanager
def recording(
    upstream_url: str,
    cassette: str | os.PathLike[str],
    *,
    verify: ssl.SSLContext | None = None,
    **options: Any,
) -> Iterator[HarnessServer]:
    """A harness server (in a thread) forwarding to ``upstream_url``; the exchanges are
    written to ``cassette`` when the block ends (also when it fails, to see what happened).

    Args:
        upstream_url: Where to forward (``https://api.example.com``; a path is a prefix).
        cassette: The JSON file to write.
        verify: The client context for an https upstream (default: the system's trust).
        options: :func:`harness.serving` options (``tls=``, settings...).
    """
    forwarder = _Forwarder(upstream_url, verify)
    try:
        with serving(app=forwarder, **options) as server:
            yield server
    finally:
        document = {"upstream": upstream_url, "exchanges": forwarder.exchanges}
        Path(cassette).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def replaying(cassette: str | os.PathLike[str], **options: Any) -> Iterator[HarnessServer]:
    """A harness server (in a thread) answering with the exchanges of ``cassette``, each once,
    strict on requests it does not have (see the module docstring)."""
    document = json.loads(Path(cassette).read_text(encoding="utf-8"))
    with serving(**options) as server:
        for exchange in document["exchanges"]:
            request, response = exchange["request"], exchange["response"]
            path, _, query = request["target"].partition("?")
            body = _decode(request["body"])
            answer = Response(
                response["status"],
                [(k, v) for k, v in response["headers"] if k.lower() not in _NOT_REPLAYED],
                _decode(response["body"]),
            )
            route = server.expect(request["method"], unquote(path), query=query, body=body or None)
            route.respond_seq([answer])
        yield server
