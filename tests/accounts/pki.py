"""A small PKI made for a test: CAs, a server certificate for 127.0.0.1, users' end-entity
certificates and RFC 3820 proxies of them, with the cryptography library."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stratuslab.accounts.certificates import PROXY_CERT_INFO

# ProxyCertInfo ::= SEQUENCE { ProxyPolicy ::= SEQUENCE { policyLanguage id-ppl-inheritAll } }
_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")


@dataclass
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, folder: Path, name: str, *, chain: list[Issued] = ()) -> tuple[Path, Path]:  # type: ignore[assignment]
        cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
        pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        for above in chain:
            pem += above.certificate.public_bytes(serialization.Encoding.PEM)
        cert_file.write_bytes(pem)
        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


def _usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates; an end entity (or a proxy) signs and agrees keys in TLS."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not signs_certificates,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def name(*parts: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in parts])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )


def ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name((NameOID.ORGANIZATION_NAME, "Test Grid"), (NameOID.COMMON_NAME, common_name))
    certificate = (
        _builder(subject, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _usage(signs_certificates=True),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(authority: Issued, subject: x509.Name, *, server: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, authority.certificate.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _usage(signs_certificates=False),
            critical=True,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return Issued(builder.sign(authority.key, hashes.SHA256()), key)


def proxy(of: Issued, number: str = "1234567") -> Issued:
    """An RFC 3820 proxy of ``of``: signed by its key, its subject plus one numeric CN."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            *of.certificate.subject.rdns,
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, number)]),
        ]
    )
    certificate = (
        _builder(subject, of.certificate.subject, key)
        .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, _INHERIT_ALL), critical=True)
        .add_extension(
            _usage(signs_certificates=False),
            critical=True,
        )
        .sign(of.key, hashes.SHA256())
    )
    return Issued(certificate, key)
