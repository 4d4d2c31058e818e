"""The ``host [":" port]`` grammar (RFC 3986 section 3.2), for Host fields and request targets.

Shared by both wire protocols (the HTTP/1.1 ``Host`` header, an absolute-form target's authority,
HTTP/2's ``:authority``), so that what an app receives as the host is always well-formed.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["valid_host"]

# IP-literal (IPv6 or IPvFuture in brackets) or reg-name (unreserved, sub-delims, %HH; IPv4
# addresses are reg-names too), then an optional port of digits. No userinfo ("user@"): an
# http(s) authority must not carry one (RFC 9110 section 4.2.4), and a Host field never can.
# A "%" is let through by the character class, then checked to start a %HH (one regex pass in
# the common case, which has no "%").
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(?::([0-9]*))?"
)
_BAD_PERCENT: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_MAX_PORT: Final = 65535


def valid_host(value: bytes) -> bool:
    """Whether ``value`` is ``uri-host [":" port]`` with a port up to 65535.

    An empty value is valid (RFC 9112 section 3.2: the Host of a target without an authority),
    and so is an empty port (``port = *DIGIT``).
    """
    match = _HOST.fullmatch(value)
    if match is None or (b"%" in value and _BAD_PERCENT.search(value)):
        return False
    port = match.group(1)
    if not port:
        return True
    port = port.lstrip(b"0")
    return len(port) <= 5 and int(port or b"0") <= _MAX_PORT
