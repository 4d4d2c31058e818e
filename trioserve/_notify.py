"""systemd's ``Type=notify`` protocol (``sd_notify``), without libsystemd.

systemd passes ``$NOTIFY_SOCKET``: the path of a unix datagram socket, or ``@name`` for one in
the abstract namespace. Each state change is one datagram of ``KEY=value`` lines: ``READY=1``
once the server accepts, ``RELOADING=1`` (with ``MONOTONIC_USEC``, which ``Type=notify-reload``
requires) then ``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when the shutdown begins.
"""

from __future__ import annotations

import logging
import socket
import time

__all__ = ["Notifier"]

error_log = logging.getLogger("trioserve.error")


class Notifier:
    """Sends state changes to systemd; does nothing when ``address`` is ``None`` or empty.

    Args:
        address: ``$NOTIFY_SOCKET`` (the command line reads it; only the main process notifies).
    """

    def __init__(self, address: str | None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        self.address = address or None

    def ready(self) -> None:
        self.send("READY=1")

    def reloading(self) -> None:
        self.send(
            f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def send(self, state: str) -> None:
        """Send one datagram; a failure is logged (systemd then times the service out), never
        raised: serving matters more than telling systemd about it."""
        if self.address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Non-blocking: a full queue on systemd's side must not stall the server.
            sock.setblocking(False)
            try:
                sock.sendto(state.encode(), self.address)
            except OSError as exc:
                error_log.warning("sd_notify %s failed: %s", state.split("\n")[0], exc)
