"""TLS: the one place that builds ``ssl.SSLContext`` objects, dev certificates, and TLS facts.

Theory of operation
-------------------
:class:`TLSConfig` says where certificates come from: files (``certfile``/``keyfile``), a ready
``ssl.SSLContext`` (Python API), or, with neither, a development certificate. The development
CA is created once with trustme and kept in a per-user state directory (so browsers and curl
that trusted it once keep trusting it); a fresh leaf certificate for ``localhost``, ``127.0.0.1``,
``::1`` and the configured host is issued from it at every start and lives only in memory.

:func:`build_context` turns a TLSConfig into a server ``SSLContext``: minimum version, ciphers,
ALPN ``http/1.1``, client-certificate verification. Every failure to read a certificate or key
becomes a :class:`~trioserve.ConfigError` whose message names the file, so the CLI can print one
line and exit 2. The server calls it again on ``reload_tls()`` (SIGHUP) and swaps the context for
new handshakes; a context that fails to build is logged and the old one stays.

:func:`tls_extension` describes an established TLS connection as the ASGI ``tls`` extension
(version, cipher suite, client certificate).
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ._errors import ConfigError

__all__ = [
    "DevCertificate",
    "TLSConfig",
    "build_context",
    "dev_certificate",
    "tls_extension",
]

ClientCert = Literal["none", "optional", "required"]

_MIN_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY_MODES: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
# IANA numbers of the TLS versions, as the ASGI TLS extension reports them.
_VERSION_NUMBERS: Final = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# A development leaf certificate is reissued at every start, so a short life costs nothing and
# keeps it acceptable to clients that cap certificate lifetimes.
_DEV_LEAF_DAYS: Final = 90
_DEV_CA_NAME: Final = "ca.pem"
_DEV_CA_KEY_NAME: Final = "ca-key.pem"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """How the server speaks TLS.

    With neither ``certfile`` nor ``context``, a development certificate is used (see
    :func:`dev_certificate`).

    Attributes:
        certfile: PEM file with the certificate chain (and the key, if ``keyfile`` is not given).
        keyfile: PEM file with the private key.
        keyfile_password_file: A file whose first line is the key's password.
        context: A ready server ``ssl.SSLContext``; the other certificate settings are ignored.
        min_version: ``"1.2"`` or ``"1.3"``.
        ciphers: An OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are not configurable).
        ca_certs: PEM file of the CAs that client certificates must chain to.
        client_cert: ``"none"``, ``"optional"`` or ``"required"``.
        handshake_timeout: Seconds a client gets to complete the TLS handshake.
        state_dir: Where the development CA is kept (default: the per-user state directory).
    """

    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password_file: str | None = None
    context: ssl.SSLContext | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str | None = None
    ca_certs: str | None = None
    client_cert: ClientCert = "none"
    handshake_timeout: float = 10.0
    state_dir: str | None = None

    def __post_init__(self) -> None:
        if self.min_version not in _MIN_VERSIONS:
            raise ConfigError(f"tls min_version must be 1.2 or 1.3, not {self.min_version!r}")
        if self.client_cert not in _VERIFY_MODES:
            raise ConfigError(
                f"client_cert must be none, optional or required, not {self.client_cert!r}"
            )
        if self.client_cert != "none" and self.ca_certs is None and self.context is None:
            # Never a silent downgrade: asking for client certificates without saying which CAs
            # to trust them from is a mistake, not a request for no verification.
            raise ConfigError(
                f"--client-cert {self.client_cert} needs --ca-certs FILE (the CAs that client "
                "certificates must chain to)"
            )
        if self.keyfile is not None and self.certfile is None:
            raise ConfigError("--keyfile needs --certfile")
        if self.keyfile_password_file is not None and self.certfile is None:
            raise ConfigError("--keyfile-password-file needs --certfile and --keyfile")
        if not self.handshake_timeout > 0:
            raise ConfigError(
                f"tls handshake_timeout must be > 0 seconds, not {self.handshake_timeout!r}"
            )

    @property
    def uses_dev_certificate(self) -> bool:
        """Whether the server makes its own development certificate."""
        return self.certfile is None and self.context is None

    def replace(self, **changes: Any) -> TLSConfig:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class DevCertificate:
    """A development certificate: the CA (on disk, to trust) and a leaf (in memory)."""

    ca_path: Path
    cert_chain_pem: bytes
    private_key_pem: bytes


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """The per-user directory where trioserve keeps its development CA."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "trioserve"


def dev_certificate(state_dir: str | os.PathLike[str], hosts: list[str]) -> DevCertificate:
    """Load (or create once) the development CA and issue a leaf certificate for ``hosts``.

    Raises:
        ConfigError: the state directory or the CA files cannot be read or written.
    """
    import trustme  # only needed here: keep it off the import path of plain-HTTP servers

    directory = Path(state_dir)
    ca_path = directory / _DEV_CA_NAME
    key_path = directory / _DEV_CA_KEY_NAME
    try:
        if ca_path.exists() and key_path.exists():
            ca = trustme.CA.from_pem(ca_path.read_bytes(), key_path.read_bytes())
        else:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            ca = trustme.CA(organization_name="trioserve development CA")
            _write_private(key_path, ca.private_key_pem.bytes())
            _write_public(ca_path, ca.cert_pem.bytes())
    except OSError as exc:
        raise ConfigError(f"development CA in {directory}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"development CA in {directory} is unreadable: {exc}") from exc
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(
        *dict.fromkeys(hosts),  # de-duplicated, order kept
        not_before=now - datetime.timedelta(hours=1),
        not_after=now + datetime.timedelta(days=_DEV_LEAF_DAYS),
    )
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return DevCertificate(ca_path, chain, leaf.private_key_pem.bytes())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def dev_hosts(host: str) -> list[str]:
    """The names a development certificate covers: loopback names plus the bound host."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    if host not in ("", "0.0.0.0", "::"):
        hosts.append(host)
    return hosts


def build_context(
    tls: TLSConfig, *, dev: DevCertificate | None = None, http2: bool = False
) -> ssl.SSLContext:
    """A server ``SSLContext`` for ``tls`` (``dev`` supplies the certificate in dev mode).

    With ``http2``, ALPN offers ``h2`` before ``http/1.1``.

    Raises:
        ConfigError: a file is missing or unreadable, the key does not match the certificate, the
            password is wrong, or the cipher string selects nothing. The message names the file.
    """
    if tls.context is not None:
        return tls.context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MIN_VERSIONS[tls.min_version]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
    if tls.ciphers is not None:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"--ciphers {tls.ciphers!r} selects no usable cipher") from None
    if tls.certfile is not None:
        password = _read_password(tls.keyfile_password_file)
        _load_cert_chain(context, tls.certfile, tls.keyfile, password)
    elif dev is not None:
        _load_dev_chain(context, dev)
    else:
        raise ConfigError("TLS needs a certificate: --certfile, or the development certificate")
    context.verify_mode = _VERIFY_MODES[tls.client_cert]
    if tls.ca_certs is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except OSError as exc:
            raise ConfigError(_file_problem("--ca-certs", tls.ca_certs, exc)) from None
        except ssl.SSLError:
            raise ConfigError(
                f"--ca-certs {tls.ca_certs}: no PEM CA certificate could be read from it"
            ) from None
    return context


def _read_password(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.readline().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(_file_problem("--keyfile-password-file", path, exc)) from None


def _load_cert_chain(
    context: ssl.SSLContext, certfile: str, keyfile: str | None, password: bytes | None
) -> None:
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(_file_problem(flag, path, exc)) from None
    key_source = keyfile if keyfile is not None else certfile
    encrypted = _key_is_encrypted(key_source)
    if encrypted and password is None:
        raise ConfigError(f"--keyfile {key_source} is encrypted: give --keyfile-password-file")
    try:
        # A password callback rather than a plain value: an encrypted key must never make
        # OpenSSL stop the server to ask for a password on the terminal.
        context.load_cert_chain(certfile, keyfile, password=lambda: password or b"")
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "KEY_VALUES_MISMATCH" in reason:
            raise ConfigError(
                f"--keyfile {key_source} does not match the certificate in {certfile}"
            ) from None
        if encrypted:
            raise ConfigError(
                f"--keyfile {key_source}: wrong password (see --keyfile-password-file)"
            ) from None
        raise ConfigError(
            f"--certfile {certfile} / --keyfile {key_source}: not a PEM certificate and key "
            f"({exc.reason or exc})"
        ) from None


def _key_is_encrypted(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            text = file.read(1 << 20)
    except OSError:
        return False
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in text or b"Proc-Type: 4,ENCRYPTED" in text


def _load_dev_chain(context: ssl.SSLContext, dev: DevCertificate) -> None:
    # ssl can only load certificates from files: write them to a private temporary file.
    fd, name = tempfile.mkstemp(prefix="trioserve-dev-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(dev.private_key_pem + dev.cert_chain_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)


def _file_problem(flag: str, path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"{flag} {path}: no such file"
    if exc.errno == errno.EACCES:
        return f"{flag} {path}: permission denied"
    if exc.errno == errno.EISDIR:
        return f"{flag} {path}: is a directory"
    return f"{flag} {path}: {exc.strerror or exc}"


def tls_extension(ssl_object: Any, context: ssl.SSLContext) -> dict[str, Any]:
    """The ASGI ``tls`` extension for an established connection.

    ``ssl_object`` is an ``ssl.SSLObject`` or anything that forwards its methods
    (``trio.SSLStream`` does).

    Keys (ASGI TLS extension): ``server_cert`` (``None``: Python cannot give it back),
    ``client_cert_chain`` (PEM strings; the verified chain on Python 3.13+, else the leaf),
    ``client_cert_name`` (RFC 4514 subject or ``None``), ``client_cert_error`` (``None``: a failed
    verification ends the handshake), ``tls_version`` and ``cipher_suite`` (IANA numbers).
    """
    chain: list[str] = []
    name: str | None = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        # Python 3.13+ can give the verified chain (DER bytes); before, only the leaf.
        verified = getattr(ssl_object, "get_verified_chain", None)
        chain_der = verified() if verified is not None else [der]
        chain = [ssl.DER_cert_to_PEM_cert(bytes(cert)) for cert in chain_der]
        name = _rfc4514(ssl_object.getpeercert())
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _VERSION_NUMBERS.get(ssl_object.version() or ""),
        "cipher_suite": None if cipher is None else _cipher_number(context, cipher[0]),
    }


def _cipher_number(context: ssl.SSLContext, name: str) -> int | None:
    for cipher in context.get_ciphers():
        if cipher["name"] == name:
            return int(cipher["id"]) & 0xFFFF
    return None


def _rfc4514(peercert: Any) -> str | None:
    if not peercert:
        return None
    short = {
        "commonName": "CN",
        "countryName": "C",
        "localityName": "L",
        "stateOrProvinceName": "ST",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "domainComponent": "DC",
        "streetAddress": "STREET",
        "userId": "UID",
    }
    parts = [
        "+".join(f"{short.get(key, key)}={_escape_rdn(value)}" for key, value in rdn)
        for rdn in reversed(peercert.get("subject", ()))
    ]
    return ",".join(parts) or None


def _escape_rdn(value: str) -> str:
    escaped = "".join("\\" + char if char in ',+"\\<>;=' else char for char in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped
