"""trioserve's small error hierarchy."""

from __future__ import annotations

import errno
from typing import Final

#: OS errors that mean "the peer is gone", as opposed to a bug or a resource problem.
GONE_ERRNOS: Final = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ETIMEDOUT}
)


class TrioserveError(Exception):
    """Base class of the errors trioserve raises on purpose."""


class ConfigError(TrioserveError, ValueError):
    """A setting is invalid; the message names the setting."""


class AppLoadError(TrioserveError):
    """An ``MODULE:ATTR`` application could not be imported or is not an ASGI app."""


class ResponseError(RuntimeError):
    """The app's response cannot be sent as it is (bad status or header, wrong length).

    (Defined here, not in ``_h11/_writers.py`` where it is raised: that module may be compiled
    with mypyc, which cannot compile a subclass of ``RuntimeError``.)
    """


class RequestRefused(Exception):
    """A request the server refuses, whichever protocol carried it.

    Args:
        status: The status code to answer with.
        reason: A short, client-safe description, sent as the response body.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class ClientDisconnected(OSError):
    """Raised by ASGI ``send()`` once the client has gone (ASGI HTTP spec 2.4)."""


def only_disconnects(exc: BaseException) -> bool:
    """Whether ``exc`` is :class:`ClientDisconnected`, or a group made of nothing else."""
    if isinstance(exc, ClientDisconnected):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(only_disconnects(inner) for inner in exc.exceptions)
    return False
