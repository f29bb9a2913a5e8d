"""The site's identity towards its nodes: a small certificate authority and the server
certificate it signs for the address nodes call.

Nodes share the bridge with other users' nodes, so a node must not send its token to whoever
answers on the gateway's address. The site CA is made once per data directory; its certificate
travels in every node's user-data, and the agent trusts no other (``deploy/agent/wire.py``).
The server certificate it signs names the bridge gateway and the host of ``agent_url``; it is
signed again whenever those names change or it nears its end, and since nodes trust the CA, not
the certificate, the nodes already running keep trusting the server.

Files, under ``<data_dir>/tls``: ``site-ca.pem`` (public), ``site-ca.key`` (0600),
``server.pem`` (the server certificate, then the CA's) and ``server.key`` (0600). Keys are
ECDSA P-256: a node's handshake costs little, and every tool call makes one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stratuslab.config import Settings
from stratuslab.errors import BackendError

log = logging.getLogger(__name__)

CA_FILE, CA_KEY = "site-ca.pem", "site-ca.key"
SERVER_FILE, SERVER_KEY = "server.pem", "server.key"
CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a leaf; renewed 30 days before its end
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class SiteCertificate:
    """What the server serves with, and what its nodes trust."""

    ca_pem: str  # the site CA's certificate: in every node's user-data
    cert_file: Path  # the server's certificate chain
    key_file: Path
    names: tuple[str, ...]  # what the server certificate names
    outcome: str = "present"  # what ensure did: 'present', 'created' or 'renewed'

    @property
    def ca_sha256(self) -> str:
        return fingerprint(self.ca_pem)

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context with the server certificate, TLS 1.2 at least."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def agent_names(settings: Settings) -> tuple[str, ...]:
    """What the server certificate must name: the host nodes call (``agent_url``) and the
    bridge gateway, where nodes call by default."""
    host = urlsplit(settings.agent_url).hostname or settings.bridge_gateway
    return tuple(dict.fromkeys((host, settings.bridge_gateway)))


def ensure(settings: Settings) -> SiteCertificate:
    """The site certificate of ``settings.data_dir``, made on first use (see :func:`ensure_in`)."""
    return ensure_in(settings.tls_dir, names=agent_names(settings))


def ca_source(settings: Settings) -> Callable[[], str]:
    """The site CA's certificate, for nodes' user-data: made on the first call, then kept (a
    renewed server certificate keeps the CA)."""

    @functools.cache
    def ca() -> str:
        return ensure(settings).ca_pem

    return ca


def ensure_in(
    folder: Path, *, names: Sequence[str], now: dt.datetime | None = None
) -> SiteCertificate:
    """The CA and a server certificate for ``names`` (IP addresses or DNS names) in
    ``folder``: the CA made if there is none, the server certificate signed again if it is
    missing, unreadable, not the CA's, does not name every one of ``names`` or ends within
    30 days. Idempotent, and safe against another process doing the same at once."""
    moment = now or dt.datetime.now(dt.UTC)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(folder / ".lock"):
        outcome = "present"
        ca_cert, ca_key = _load_ca(folder)
        if ca_cert is None or ca_key is None:
            ca_cert, ca_key = _make_ca(folder, moment)
            outcome = "created"
        if not _server_is_good(folder, ca_cert, names, moment):
            _make_server(folder, ca_cert, ca_key, names, moment)
            outcome = "renewed" if outcome == "present" else outcome
            log.info("signed a server certificate for %s", ", ".join(names))
        for key in (CA_KEY, SERVER_KEY):
            _keep_private(folder / key)
    return SiteCertificate(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        cert_file=folder / SERVER_FILE,
        key_file=folder / SERVER_KEY,
        names=tuple(names),
        outcome=outcome,
    )


def fingerprint(pem: str) -> str:
    """A certificate's SHA-256 fingerprint (of its DER bytes), for people to compare."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def read_ca(folder: Path) -> str | None:
    """The site CA's certificate in ``folder``, or None when there is none yet."""
    try:
        return (folder / CA_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


# -- the pieces --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load_ca(folder: Path) -> tuple[x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    cert_path, key_path = folder / CA_FILE, folder / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        return None, None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # Making a new CA silently would cut every running node off this server.
        raise BackendError(
            f"the site CA in {folder} cannot be read: {exc}",
            hint=f"restore {CA_FILE} and {CA_KEY}, or remove both to make a new site CA "
            "(nodes already running will then refuse this server)",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise BackendError(
            f"{key_path} is not the key of {cert_path}",
            hint="restore both, or remove both to make a new site CA",
        )
    return cert, key


def _make_ca(
    folder: Path, moment: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StratusLab site"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"StratusLab site CA {os.urandom(4).hex()}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - dt.timedelta(minutes=5))
        .not_valid_after(moment + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / CA_KEY, _private_pem(key), private=True)
    _write(folder / CA_FILE, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _server_is_good(
    folder: Path, ca: x509.Certificate, names: Sequence[str], moment: dt.datetime
) -> bool:
    try:
        chain = x509.load_pem_x509_certificates((folder / SERVER_FILE).read_bytes())
        key = serialization.load_pem_private_key((folder / SERVER_KEY).read_bytes(), None)
        cert = chain[0]
        cert.verify_directly_issued_by(ca)
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, IndexError, x509.ExtensionNotFound) as exc:
        log.info("the server certificate in %s is to be signed again: %s", folder, exc)
        return False
    except InvalidSignature:
        log.info("the server certificate in %s is not the site CA's: signed again", folder)
        return False
    return (
        key.public_key() == cert.public_key()
        and all(_general_name(n) in named for n in names)
        and cert.not_valid_after_utc - RENEW_BEFORE > moment
    )


def _make_server(
    folder: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    moment: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - dt.timedelta(minutes=5))
        .not_valid_after(min(moment + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    _write(folder / SERVER_KEY, _private_pem(key), private=True)
    _write(folder / SERVER_FILE, chain, private=False)


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``path`` whole or not at all, a private file never readable by others even for a
    moment."""
    partial = path.with_name(f".{path.name}.part")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def _keep_private(path: Path) -> None:
    """A key left readable by others (restored from a backup) is made private again."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others: made private", path)
            path.chmod(0o600)
