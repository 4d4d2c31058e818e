"""TLS faults: servers whose TLS goes wrong in the ways clients must survive.

Each fault is its own server configuration, made with trustme from the harness CA, so that a
client configured to trust the harness (``srv.client_ssl_context()``, ``srv.ca_path``) meets
exactly one problem:

* ``expired_certificate``: the leaf's validity ended yesterday;
* ``wrong_host``: the leaf names ``wrong-host.invalid`` only;
* ``untrusted_ca``: the leaf comes from a CA nobody trusts;
* ``handshake_stall``: a listener accepts TCP connections and never says a byte, so the
  client's handshake (or connect) timeout is what ends it.

The stalling listener holds each accepted connection open, unread, until the server stops.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from typing import Final

import trio
import trustme

from ._tls import LOOPBACK_NAMES, CertificateAuthority

__all__ = ["TLS_FAULTS", "fault_context", "serve_stalling"]


def _expired(authority: CertificateAuthority) -> trustme.LeafCert:
    now = datetime.datetime.now(datetime.UTC)
    return authority.ca.issue_cert(
        *LOOPBACK_NAMES,
        not_before=now - datetime.timedelta(days=2),
        not_after=now - datetime.timedelta(days=1),
    )


def _wrong_host(authority: CertificateAuthority) -> trustme.LeafCert:
    return authority.ca.issue_cert("wrong-host.invalid")


def _untrusted(authority: CertificateAuthority) -> trustme.LeafCert:
    return trustme.CA().issue_cert(*LOOPBACK_NAMES)


#: Every TLS fault, and the leaf certificate it serves (``None``: no TLS server at all).
TLS_FAULTS: Final[dict[str, Callable[[CertificateAuthority], trustme.LeafCert] | None]] = {
    "expired_certificate": _expired,
    "wrong_host": _wrong_host,
    "untrusted_ca": _untrusted,
    "handshake_stall": None,
}


def fault_context(authority: CertificateAuthority, kind: str, *, http2: bool) -> ssl.SSLContext:
    """A server context serving the broken certificate of fault ``kind`` (for the stall, the
    ordinary one: the stalling listener is what the client is sent to)."""
    if kind not in TLS_FAULTS:
        raise ValueError(f"unknown TLS fault {kind!r}; known: {', '.join(TLS_FAULTS)}")
    issue = TLS_FAULTS[kind]
    if issue is None:
        return authority.server_context(http2=http2)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issue(authority).configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    return context


async def serve_stalling(
    host: str,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``host`` (port 0) and never answer, until ``scope`` is cancelled."""
    held: list[trio.SocketStream] = []
    with scope:
        [listener] = await trio.open_tcp_listeners(0, host=host)
        try:
            async with listener:
                task_status.started(listener.socket.getsockname()[:2])
                while True:
                    held.append(await listener.accept())
        finally:
            for stream in held:
                stream.socket.close()
