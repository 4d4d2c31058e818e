"""The harness CA: created once per test session with trustme, never bundled, never stale."""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from pathlib import Path

import trustme

__all__ = ["LOOPBACK_NAMES", "CertificateAuthority", "session_authority"]

#: The names a harness server's certificate is valid for.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class CertificateAuthority:
    """A throwaway CA, a server certificate for the loopback names, and a client certificate.

    Args:
        directory: Where to write the CA certificate (``ca_path``) and the client certificate
            and key (``client_cert_path``) for clients that need files.
        ca: An existing trustme CA to issue from (default: a new one).
    """

    def __init__(self, directory: str | Path, *, ca: trustme.CA | None = None) -> None:
        self.directory = Path(directory)
        self.ca = ca if ca is not None else trustme.CA()
        self.ca_path = self.directory / "harness-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.server_cert = self.ca.issue_cert(*LOOPBACK_NAMES)
        self.client_cert = self.ca.issue_cert(
            "harness-client@example.invalid", common_name="harness client"
        )
        self.client_cert_path = self.directory / "harness-client.pem"
        self.client_cert.private_key_and_cert_chain_pem.write_to_path(str(self.client_cert_path))

    def server_context(self, *, mtls: bool = False, http2: bool = True) -> ssl.SSLContext:
        """A server context with the loopback certificate (requiring client certificates with
        ``mtls``; offering ``h2`` by ALPN with ``http2``)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
        if mtls:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A default client context (full verification) that trusts this CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


_lock = threading.Lock()
_session: CertificateAuthority | None = None


def session_authority() -> CertificateAuthority:
    """The CA shared by every harness server of this process (created on first use)."""
    global _session
    with _lock:
        if _session is None:
            directory = tempfile.mkdtemp(prefix="harness-ca-")
            atexit.register(shutil.rmtree, directory, True)
            _session = CertificateAuthority(directory)
        return _session
