"""Behind a proxy: trusted peers, X-Forwarded-* / RFC 7239 Forwarded, and the PROXY protocol.

Theory of operation
-------------------
Only peers listed in ``forwarded_allow_ips`` (addresses, CIDR networks, ``*``, or ``unix`` for
unix-socket peers) are believed. For them:

* ``proxy_headers="x-forwarded"`` reads ``X-Forwarded-For``, ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host``; ``"forwarded"`` reads RFC 7239 ``Forwarded`` (one mode, never both:
  mixing them lets a client choose whichever its proxy does not rewrite). The client is the
  right-most address of the chain that is not itself a trusted proxy, so a client cannot
  spoof its address by sending the header itself. The scope's ``client``, ``scheme`` and
  ``Host`` header are rewritten.
* ``proxy_protocol=True`` expects a PROXY protocol header (version 1, text, or 2, binary) at
  the start of every connection, before TLS, from a trusted peer; its addresses become the
  connection's ``client`` and ``server``. A connection without one, or from an untrusted peer,
  is closed.

The pure functions here are unit-tested without sockets; the connection calls them.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ForwardedInfo",
    "ProxyHeaderError",
    "TrustedPeers",
    "parse_proxy_header",
    "read_forwarded",
]

_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: Bytes a PROXY header can take: 107 for version 1; 16 + 216 for version 2 with addresses
#: (TLVs beyond are allowed by the spec; we read up to this much and refuse longer headers).
MAX_PROXY_HEADER: Final = 536

Address = tuple[str, int]


class ProxyHeaderError(ValueError):
    """A PROXY protocol header is missing or malformed."""


class TrustedPeers:
    """The set of peers whose proxy information is believed.

    Args:
        spec: Comma-separated addresses, CIDR networks, ``*`` (anyone) and ``unix``
            (unix-socket peers).

    Raises:
        ValueError: an entry is none of those.
    """

    def __init__(self, spec: str | Iterable[str]) -> None:
        entries = [part.strip() for part in (spec.split(",") if isinstance(spec, str) else spec)]
        self.anyone = "*" in entries
        self.unix = "unix" in entries
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry in ("*", "unix", ""):
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"not an IP address, CIDR network, '*' or 'unix': {entry!r}"
                ) from None

    def trusts(self, host: str | None) -> bool:
        """Whether a peer at ``host`` (``None``: a unix-socket peer) is trusted."""
        if self.anyone:
            return True
        if host is None:
            return self.unix
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class ForwardedInfo:
    """What a trusted proxy said about the original request."""

    client: str | None = None
    scheme: str | None = None
    host: str | None = None


def read_forwarded(
    headers: Sequence[tuple[bytes, bytes]], mode: str, trusted: TrustedPeers
) -> ForwardedInfo:
    """The original client, scheme and host, from the proxy headers of ``mode``.

    Args:
        headers: The request headers (lowercase names).
        mode: ``"x-forwarded"`` or ``"forwarded"``.
        trusted: The trusted proxies (to find the right-most untrusted hop).
    """
    if mode == "forwarded":
        hops: list[dict[str, str]] = []
        for name, value in headers:
            if name == b"forwarded":
                parsed = _parse_forwarded(value.decode("latin-1"))
                if parsed is None:
                    return ForwardedInfo()  # malformed: believe none of it
                hops.extend(parsed)
        chain = [hop.get("for", "") for hop in hops]
        index = _client_index(chain, trusted)
        if index is None:
            return ForwardedInfo()
        hop = hops[index]
        return ForwardedInfo(
            client=_ip_or_none(_node_host(hop.get("for", ""))),
            scheme=(hop.get("proto") or "").lower() or None,
            host=hop.get("host") or None,
        )
    forwarded_for: list[str] = []
    proto = host = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded_for.extend(part.strip() for part in value.decode("latin-1").split(","))
        elif name == b"x-forwarded-proto":
            proto = value.decode("latin-1").split(",")[-1].strip().lower()
        elif name == b"x-forwarded-host":
            host = value.decode("latin-1").split(",")[-1].strip()
    index = _client_index(forwarded_for, trusted)
    return ForwardedInfo(
        client=None if index is None else _ip_or_none(_node_host(forwarded_for[index])),
        scheme=proto or None,
        host=host or None,
    )


def _client_index(chain: list[str], trusted: TrustedPeers) -> int | None:
    """The right-most hop that is not a trusted proxy (or the left-most, if all are)."""
    for index in range(len(chain) - 1, -1, -1):
        if not trusted.trusts(_node_host(chain[index])):
            return index
    return 0 if chain else None


def _ip_or_none(text: str) -> str | None:
    """``text`` if it is an IP address; ``None`` for anything else (``unknown``, obfuscated
    identifiers, junk), so that no client-written text ever becomes the scope's client."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _node_host(node: str) -> str:
    """The address part of a node: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``"[::1]"``."""
    node = node.strip().strip('"')
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    if node.count(":") == 1:
        return node.split(":", 1)[0]
    return node


def _parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The hops of a ``Forwarded`` header, or ``None`` if it is malformed (an unterminated
    quote, say: a client could use one to swallow what its proxy appended)."""
    if not _quotes_balanced(value):
        return None
    hops = []
    for element in _split_quoted(value, ","):
        pairs: dict[str, str] = {}
        for pair in _split_quoted(element, ";"):
            key, sep, item = pair.partition("=")
            if sep:
                item = item.strip()
                if len(item) >= 2 and item[0] == item[-1] == '"':
                    item = item[1:-1].replace('\\"', '"')
                pairs[key.strip().lower()] = item
        hops.append(pairs)
    return hops


def _quotes_balanced(text: str) -> bool:
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
    return not quoted


def _split_quoted(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in (p.strip() for p in parts) if part]


def parse_proxy_header(data: bytes) -> tuple[int, Address | None, Address | None]:
    """Parse a PROXY protocol header at the start of ``data``.

    Returns:
        ``(length, source, destination)``: how many bytes the header takes, and the addresses
        it carries (``None`` for ``UNKNOWN``/``LOCAL`` connections, which keep the socket's).

    Raises:
        ProxyHeaderError: not a valid header (or not complete within ``MAX_PROXY_HEADER``).
    """
    if data.startswith(_V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(b"PROXY "):
        return _parse_v1(data)
    raise ProxyHeaderError("the connection does not start with a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[int, Address | None, Address | None]:
    end = data.find(b"\r\n", 0, 108)
    if end < 0:
        raise ProxyHeaderError("PROXY v1 header without CRLF within 107 bytes")
    parts = data[:end].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return end + 2, None, None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 header: {data[:end]!r}")
    family = socket.AF_INET if parts[1] == "TCP4" else socket.AF_INET6
    try:
        for host in (parts[2], parts[3]):
            socket.inet_pton(family, host)
        source_port, destination_port = int(parts[4]), int(parts[5])
    except (OSError, ValueError):
        raise ProxyHeaderError(f"malformed PROXY v1 header: {data[:end]!r}") from None
    if not (0 <= source_port <= 65535 and 0 <= destination_port <= 65535):
        raise ProxyHeaderError(f"PROXY v1 port out of range: {data[:end]!r}")
    return end + 2, (parts[2], source_port), (parts[3], destination_port)


def _parse_v2(data: bytes) -> tuple[int, Address | None, Address | None]:
    if len(data) < 16:
        raise ProxyHeaderError("PROXY v2 header too short")
    version_command, family_protocol, length = struct.unpack("!BBH", data[12:16])
    total = 16 + length
    if version_command >> 4 != 2:
        raise ProxyHeaderError("PROXY v2 header with an unknown version")
    if total > MAX_PROXY_HEADER or len(data) < total:
        raise ProxyHeaderError("PROXY v2 header incomplete or too long")
    command = version_command & 0x0F
    if command == 0:  # LOCAL: a health check from the proxy itself
        return total, None, None
    if command != 1:
        raise ProxyHeaderError("PROXY v2 header with an unknown command")
    body = data[16:total]
    family = family_protocol >> 4
    if family == 1 and len(body) >= 12:  # AF_INET
        source = socket.inet_ntop(socket.AF_INET, body[0:4])
        destination = socket.inet_ntop(socket.AF_INET, body[4:8])
        source_port, destination_port = struct.unpack("!HH", body[8:12])
    elif family == 2 and len(body) >= 36:  # AF_INET6
        source = socket.inet_ntop(socket.AF_INET6, body[0:16])
        destination = socket.inet_ntop(socket.AF_INET6, body[16:32])
        source_port, destination_port = struct.unpack("!HH", body[32:36])
    elif family in (0, 3):  # UNSPEC, UNIX: keep the socket's addresses
        return total, None, None
    else:
        raise ProxyHeaderError("PROXY v2 header with a malformed address block")
    return total, (source, source_port), (destination, destination_port)
