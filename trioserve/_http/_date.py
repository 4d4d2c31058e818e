"""The ``Date`` header's value, formatted at most once a second.

The wire protocols take it as a callable, so that they read no clock themselves (tests pass a
fixed one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Final

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

#: The current time as an HTTP-date (RFC 9110 section 5.6.7), formatted at most once a second.
#: (The bound method itself: one call per response rather than two.)
http_date: Final[Callable[[], bytes]] = _date_cache.get
