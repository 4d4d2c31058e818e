"""The trioserve settings of a harness server, and where its TLS certificate comes from.

A harness server is a trioserve server with test-friendly defaults (port 0, no access log, no
drain at stop, fault injection on, no websocket pings); ``config=`` replaces those defaults with
a whole :class:`trioserve.Config`, and keyword settings (any ``Config`` field) override either.
The harness owns the fields that decide where and how it listens (``host``, ``uds``, ``tls``,
``binds``), since its handle reports them, and always turns fault injection on.

``tls=`` says where the certificate comes from: ``True`` (a leaf from the session CA), a
``(certfile, keyfile)`` pair (served as is; the harness cannot tell clients what to trust), a
``trustme.CA`` (a leaf issued from it, so clients already trusting it trust the server) or a
:class:`CertificateAuthority`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Final

import trustme

import trioserve

from ._tls import CertificateAuthority, session_authority

__all__ = ["HARNESS_OWNED", "TLSOption", "build_config", "resolve_tls"]

TLSOption = (
    bool | tuple[str | os.PathLike[str], str | os.PathLike[str]] | trustme.CA | CertificateAuthority
)

#: Settings the harness decides itself: given as keywords, they are refused with the reason.
HARNESS_OWNED: Final = {
    "host": "pass host= to the harness (it is a harness option)",
    "uds": "pass uds= to the harness (it is a harness option)",
    "tls": "pass tls= to the harness: True, (certfile, keyfile) or a trustme.CA",
    "binds": "a harness server has one listener (its handle reports one address)",
    "insecure_binds": "a harness server has one listener (its handle reports one address)",
    "fault_injection": "harness servers always allow fault injection",
}
_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(trioserve.Config))


def resolve_tls(
    tls: TLSOption, authority: CertificateAuthority | None, directory: str | None
) -> tuple[CertificateAuthority | None, tuple[str, str] | None]:
    """The CA to issue from, or the certificate pair to serve, for the ``tls=`` option.

    Args:
        tls: The option (``False``: no TLS; both results are ``None``).
        authority: ``authority=`` (used with ``tls=True``; default: the session's CA).
        directory: A temporary directory for the files of a CA made from a ``trustme.CA``.
    """
    if tls is False:
        return None, None
    if tls is True:
        return authority or session_authority(), None
    if isinstance(tls, CertificateAuthority):
        return tls, None
    if isinstance(tls, trustme.CA):
        assert directory is not None
        return CertificateAuthority(directory, ca=tls), None
    if isinstance(tls, tuple) and len(tls) == 2:
        certfile, keyfile = (os.fspath(Path(item)) for item in tls)
        return None, (certfile, keyfile)
    raise TypeError(f"tls= takes True, a (certfile, keyfile) pair or a trustme.CA, not {tls!r}")


def build_config(
    *,
    config: trioserve.Config | None,
    host: str | None,
    uds: str | None,
    tls: trioserve.TLSConfig | None,
    settings: dict[str, Any],
) -> trioserve.Config:
    """The server's Config: ``config`` (or the harness defaults), then ``settings``.

    Raises:
        TypeError: a keyword is not a trioserve setting, or is one the harness owns.
    """
    for name in settings:
        if name in HARNESS_OWNED:
            raise TypeError(f"harness server setting {name!r}: {HARNESS_OWNED[name]}")
        if name not in _FIELDS:
            raise TypeError(
                f"unknown harness option or trioserve setting {name!r}; trioserve settings: "
                + ", ".join(sorted(_FIELDS - HARNESS_OWNED.keys()))
            )
    if config is None:
        base = trioserve.Config(
            host=host or "127.0.0.1",
            port=0,
            access_log=False,
            # A test server needs no drain: stopping cancels what is in flight.
            graceful_timeout=0,
            # Pings would add frames that websocket tests did not ask for.
            ws_ping_interval=None,
        )
    else:
        base = dataclasses.replace(config, host=host or config.host)
    return dataclasses.replace(
        base, uds=uds, tls=tls, binds=(), insecure_binds=(), fault_injection=True, **settings
    )
