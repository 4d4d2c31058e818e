"""Access log lines: the default one, ``--access-log-format`` atoms, and ``--access-log-json``.

Atoms, in ``str.format`` syntax: ``{client}`` ``{method}`` ``{target}`` ``{path}`` ``{query}``
``{status}`` ``{bytes}`` ``{duration_us}`` ``{duration_ms}`` ``{http_version}`` ``{scheme}``
``{tls_version}`` ``{request_id}`` (the request's ``X-Request-ID``, or a fresh one) ``{time}``
(ISO 8601, UTC), and any header: ``{request_header[user-agent]}``,
``{response_header[content-type]}`` (``-`` when absent).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

__all__ = ["ATOMS", "AccessRecord", "check_format"]

ATOMS: Final = (
    "client",
    "method",
    "target",
    "path",
    "query",
    "status",
    "bytes",
    "duration_us",
    "duration_ms",
    "http_version",
    "scheme",
    "tls_version",
    "request_id",
    "time",
)
_TLS_NAMES: Final = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


class _Headers(Mapping[str, str]):
    """Header lookup by lowercase name, ``-`` for a missing one (first value wins)."""

    def __init__(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self._headers = list(headers)

    def __getitem__(self, name: str) -> str:
        key = name.lower().encode("latin-1")
        for header, value in self._headers:
            if header.lower() == key:
                return value.decode("latin-1")
        return "-"

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self._headers)

    def __len__(self) -> int:
        return len(self._headers)


class AccessRecord:
    """What one request's access line is made of."""

    def __init__(
        self,
        *,
        client: str,
        method: str,
        target: str,
        status: int,
        bytes_sent: int,
        duration: float,
        http_version: str,
        scheme: str,
        tls_version: int | None,
        request_headers: Iterable[tuple[bytes, bytes]],
        response_headers: Iterable[tuple[bytes, bytes]],
    ) -> None:
        self.request_headers = _Headers(request_headers)
        self.response_headers = _Headers(response_headers)
        path, _, query = target.partition("?")
        request_id = self.request_headers["x-request-id"]
        self.fields: dict[str, Any] = {
            "client": client,
            "method": method,
            "target": target,
            "path": path,
            "query": query,
            "status": status,
            "bytes": bytes_sent,
            "duration_us": round(duration * 1_000_000),
            "duration_ms": round(duration * 1000, 3),
            "http_version": http_version,
            "scheme": scheme,
            "tls_version": _TLS_NAMES.get(tls_version or 0, "-"),
            "request_id": uuid.uuid4().hex if request_id == "-" else request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def format(self, template: str) -> str:
        """The line for a ``--access-log-format`` template."""
        return template.format_map(
            {
                **self.fields,
                "request_header": self.request_headers,
                "response_header": self.response_headers,
            }
        )

    def json(self) -> str:
        """The line as one JSON object (the atoms, plus user agent and referer)."""
        record = dict(self.fields)
        record["user_agent"] = self.request_headers["user-agent"]
        record["referer"] = self.request_headers["referer"]
        return json.dumps(record, separators=(",", ":"))


def check_format(template: str) -> None:
    """Raise ``ValueError`` (naming the problem) if ``template`` uses an unknown atom."""
    sample = AccessRecord(
        client="127.0.0.1:1",
        method="GET",
        target="/",
        status=200,
        bytes_sent=0,
        duration=0.0,
        http_version="1.1",
        scheme="http",
        tls_version=None,
        request_headers=[],
        response_headers=[],
    )
    try:
        sample.format(template)
    except KeyError as exc:
        raise ValueError(
            f"unknown atom {exc.args[0]!r} (known: {', '.join(ATOMS)}, "
            "request_header[NAME], response_header[NAME])"
        ) from None
    except (IndexError, ValueError, AttributeError) as exc:
        raise ValueError(f"bad format: {exc}") from None
