"""The ``Date`` header's value, formatted at most once a second.

The wire protocols take it as a callable, so that they read no clock themselves (tests pass a
fixed one).
"""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = ["http_date"]


class _DateCache:
    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


_date_cache = _DateCache()


def http_date() -> bytes:
    """The current time as an HTTP-date (RFC 9110 section 5.6.7), cached for one second."""
    return _date_cache.get()
