"""An entry to work on, the CAs, people and revocation lists the signing, trust and policy
tests need (made by cryptography), image tarballs, and endorsements held as the Marketplace
store holds them."""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stratuslab.cloud.marketplace.entry import Entry, to_xml
from stratuslab.cloud.marketplace.identifier import Checksums, checksums
from stratuslab.cloud.marketplace.signing import Verified, sign, verify

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


def make_ca(cn: str, *, parent: Party | None = None, not_after: dt.datetime | None = None) -> Party:
    """A root CA, or with ``parent`` an intermediate CA it issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(cn)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.cert.subject if parent else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=365))
        .not_valid_after(not_after or NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(parent.key if parent else key, hashes.SHA256())
    )
    return Party(cert, key)


def make_crl(
    ca: Party,
    revoked: Sequence[tuple[Party, dt.datetime]] = (),
    *,
    next_update: dt.datetime | None = None,
    der: bool = False,
    signer: Party | None = None,
) -> bytes:
    """A revocation list of ``ca`` (PEM, or DER), revoking each party's certificate on its
    date; signed by ``ca``, or by ``signer`` to make one whose signature does not verify."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - dt.timedelta(days=1))
        .next_update(next_update or NOW + dt.timedelta(days=30))
    )
    for party, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(party.cert.serial_number)
            .revocation_date(when)
            .build()
        )
    crl = builder.sign((signer or ca).key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


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


def der_chain(*parties: Party) -> tuple[bytes, ...]:
    """Certificates as an endorsement carries them: DER, the endorser's first."""
    return tuple(p.cert.public_bytes(serialization.Encoding.DER) for p in parties)


def image_archive(
    path: Path, payload: bytes = b"a root file system\n", *, properties: str = ""
) -> Path:
    """A small image tarball as LXD imports one (``metadata.yaml`` and ``rootfs/``), with
    ``properties`` (YAML lines, indented) added to its metadata's."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            (
                "metadata.yaml",
                b"architecture: x86_64\ncreation_date: 1777000000\n"
                b"properties:\n  description: test image\n" + properties.encode(),
            ),
            ("rootfs/etc/motd", payload),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return path


def file_checksums(path: Path) -> Checksums:
    with path.open("rb") as stream:
        return checksums(stream)


def endorse(
    sums: Checksums,
    who: Party,
    *,
    now: dt.datetime = NOW,
    trusted_cas: Sequence[bytes] | None = None,
    **changes: object,
) -> tuple[bytes, Verified]:
    """An entry about the bytes ``sums`` describes, signed by ``who`` at ``now`` (valid for 180
    days from a day before, unless ``changes`` say otherwise): its XML, and what verifying it
    gives."""
    fields: dict[str, object] = {
        "checksums": sums,
        "created": now - dt.timedelta(days=1),
        "valid": now + dt.timedelta(days=180),
        **changes,
    }
    xml = sign(to_xml(an_entry(**fields)), who.cert_pem, who.key_pem, now=now)
    return xml, verify(xml, trusted_cas=trusted_cas, now=now)


class Shelf:
    """Endorsements at hand, found by the SHA-256 of what they describe, as the Marketplace
    store finds each endorser's latest entry; counts how often it is asked."""

    def __init__(self, *endorsements: Verified) -> None:
        self.held = list(endorsements)
        self.asked: list[str] = []

    def endorsements(self, sha256: str) -> list[Verified]:
        self.asked.append(sha256)
        return [v for v in self.held if v.entry.checksums.sha256 == sha256]
