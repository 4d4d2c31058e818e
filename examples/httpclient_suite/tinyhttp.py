"""tinyhttp: a small HTTP/1.1 client on the standard library's http.client.

A downstream project of its own (see README.md): ``Client`` sends requests one connection at a
time, follows redirects, bounds every socket operation by a timeout, retries idempotent requests
whose connection failed, uploads iterables chunked, and streams responses. Failures surface as
one small hierarchy: ``ConnectError``, ``Timeout``, ``RemoteProtocolError``, ``TooManyRedirects``.
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

__all__ = [
    "Client",
    "ConnectError",
    "HTTPError",
    "RemoteProtocolError",
    "Response",
    "Timeout",
    "TooManyRedirects",
]

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HTTPError(Exception):
    """Anything that kept a request from getting a whole response."""


class ConnectError(HTTPError):
    """The server could not be reached."""


class Timeout(HTTPError):
    """The server took longer than the client's timeout to connect, answer or send."""


class RemoteProtocolError(HTTPError):
    """The server broke off or answered with something that is not HTTP."""


class TooManyRedirects(HTTPError):
    """More redirects than ``max_redirects``."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    url: str
    content: bytes = b""
    history: list[Response] = field(default_factory=list)
    _raw: http.client.HTTPResponse | None = None

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> object:
        return jsonlib.loads(self.content)

    def iter_bytes(self, size: int = 4096) -> Iterator[bytes]:
        """The body as it arrives (a streamed response only)."""
        assert self._raw is not None, "iter_bytes() is for client.stream(...) responses"
        with _mapped(self.url):
            while chunk := self._raw.read1(size):
                yield chunk


@contextlib.contextmanager
def _mapped(url: str) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise Timeout(f"timed out talking to {url}") from exc
    except (ConnectionRefusedError, ssl.SSLCertVerificationError) as exc:
        raise ConnectError(f"cannot connect to {url}: {exc}") from exc
    except (http.client.HTTPException, ConnectionError) as exc:
        raise RemoteProtocolError(f"{url}: {exc!r}") from exc


class Client:
    """Send requests: ``Client(base_url, timeout=5.0, retries=0, ssl_context=None)``."""

    def __init__(
        self,
        base_url: str = "",
        *,
        timeout: float = 5.0,
        retries: int = 0,
        max_redirects: int = 5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.retries = retries
        self.max_redirects = max_redirects
        self.ssl_context = ssl_context

    def get(self, url: str, **options: Any) -> Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> Response:
        return self.request("POST", url, **options)

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | Iterable[bytes] | None = None,
        json: object = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """Send a request and read the whole response (following redirects unless told not to)."""
        fields = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            fields.setdefault("Content-Type", "application/json")
        history: list[Response] = []
        target = urljoin(self.base_url, url)
        while True:
            response = self._with_retries(method, target, content, fields)
            if not (follow_redirects and response.status in _REDIRECTS):
                response.history = history
                return response
            if len(history) == self.max_redirects:
                raise TooManyRedirects(f"more than {self.max_redirects} redirects from {url}")
            history.append(response)
            target = urljoin(target, response.headers["location"])
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, content = "GET", None

    @contextlib.contextmanager
    def stream(self, method: str, url: str) -> Iterator[Response]:
        """A response whose body is read with ``iter_bytes()`` as it arrives."""
        target = urljoin(self.base_url, url)
        connection, raw = self._send(method, target, None, {})
        try:
            yield Response(raw.status, _headers(raw), target, _raw=raw)
        finally:
            connection.close()

    def _with_retries(
        self, method: str, url: str, content: bytes | Iterable[bytes] | None, fields: dict[str, str]
    ) -> Response:
        attempts = 1 + (self.retries if method in _IDEMPOTENT else 0)
        for attempt in range(attempts):
            try:
                connection, raw = self._send(method, url, content, fields)
                try:
                    with _mapped(url):
                        return Response(raw.status, _headers(raw), url, raw.read())
                finally:
                    connection.close()
            except (ConnectError, RemoteProtocolError):
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _send(
        self, method: str, url: str, content: bytes | Iterable[bytes] | None, fields: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        parts = urlsplit(url)
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                parts.netloc, timeout=self.timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        chunked = content is not None and not isinstance(content, bytes)
        try:
            with _mapped(url):
                connection.request(method, target, content, fields, encode_chunked=chunked)
                return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise


def _headers(raw: http.client.HTTPResponse) -> dict[str, str]:
    return {name.lower(): value for name, value in raw.getheaders()}
