"""An entry to work on, and the certificates the signing tests need, made by cryptography."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stratuslab.cloud.marketplace.entry import Entry
from stratuslab.cloud.marketplace.identifier import checksums

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def an_entry(**changes: object) -> Entry:
    fields: dict[str, object] = {
        "checksums": checksums(io.BytesIO(b"an image's bytes" * 1000)),
        "os": "debian",
        "os_version": "12",
        "os_arch": "x86_64",
        "format": "lxd",
        "title": "webapp-base",
        "description": "Debian 12 with nginx & <friends>",
        "creator": "Jane Tester",
        "created": NOW - dt.timedelta(days=1),
        "valid": NOW + dt.timedelta(days=180),
        "locations": ("https://images.example.org/webapp-base.tar.xz",),
        "tags": ("webapp", "nginx"),
    }
    fields.update(changes)
    return Entry(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Party:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(cn: str, email: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "EU"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StratusLab Project"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def make_ca(cn: str) -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=365))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Party(cert, key)


def make_person(
    ca: Party,
    cn: str,
    *,
    san_email: str | None = None,
    subject_email: str | None = None,
    not_after: dt.datetime | None = None,
) -> Party:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, subject_email))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if san_email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(san_email)]), critical=False
        )
    return Party(builder.sign(ca.key, hashes.SHA256()), key)
