"""Endorsements: an entry signed, as StratusLab did, with the endorser's X.509 certificate and key.

The signature is an enveloped XML signature (``ds:Signature`` the last child of ``rdf:RDF``,
one reference to the whole document, RSA or ECDSA with SHA-256, the certificate in
``ds:KeyInfo/ds:X509Data``). As StratusLab's ``signMetadataEntry`` did, signing fills the
entry's ``slreq:endorsement`` from the certificate (e-mail, subject DN, issuer DN, now) and drops
any earlier signature; verifying requires that endorsement to match the certificate, so an
entry cannot claim an endorser other than the one who signed it.

Verifying checks, in order, and each refusal says which: a signature is there (Unauthorized),
it is the only one and carries its certificate (Invalid), the certificate is valid now
(Unauthorized, expired or not yet valid), the document is the one that was signed (Unauthorized:
changed after signing) with the certificate's key (Unauthorized: another key), the endorsement
names the certificate (Unauthorized), and, when the caller gives trusted CAs, that the
certificate was issued by one of them, directly or through intermediates it carries
(Unauthorized otherwise). Only the signed bytes are read into the returned entry.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature as BadCryptoSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from stratuslab.cloud.marketplace.entry import Endorser, Entry, from_element, to_element
from stratuslab.cloud.marketplace.xmlsafe import DS, parse
from stratuslab.errors import Invalid, Unauthorized

MAX_CHAIN = 8


@dataclass(frozen=True)
class Verified:
    """A verified endorsement: the entry as signed, and who signed it."""

    entry: Entry
    subject: str
    issuer: str
    email: str
    trusted: bool  # the certificate's chain reaches one of the trusted CAs given
    not_after: dt.datetime
    # DER, the endorser's certificate first, then the intermediates the signature carried: what a
    # site's policy checks its trust store and revocation lists against, later and again.
    certificates: tuple[bytes, ...] = ()


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Invalid(f"{what} is not a PEM X.509 certificate") from None


def _email(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        emails = []
    if emails:
        return emails[0]
    attrs = cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    return str(attrs[0].value) if attrs else None


def endorser_email(cert_pem: bytes) -> str:
    """The e-mail address under which an endorsement by the holder of ``cert_pem`` is filed."""
    email = _email(_load_cert(cert_pem, "the endorser's certificate"))
    if email is None:
        raise Invalid(
            "the endorser's certificate names no e-mail address (subject emailAddress or"
            " subjectAltName rfc822Name): the Marketplace files endorsements by e-mail"
        )
    return email


def date_problem(cert: x509.Certificate, now: dt.datetime, who: str) -> str | None:
    """Why ``cert`` is not valid at ``now``, in words (``who`` names it: "the endorser's"), or
    None when it is."""
    subject = cert.subject.rfc4514_string()
    if now > cert.not_valid_after_utc:
        return (
            f"{who} certificate ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
        )
    if now < cert.not_valid_before_utc:
        return (
            f"{who} certificate ({subject}) is not valid before"
            f" {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        )
    return None


def _check_dates(cert: x509.Certificate, now: dt.datetime, who: str) -> None:
    problem = date_problem(cert, now, who)
    if problem is not None:
        raise Unauthorized(problem)


def sign(
    entry_xml: bytes, cert_pem: bytes, key_pem: bytes, *, now: dt.datetime | None = None
) -> bytes:
    """The entry endorsed by the holder of ``cert_pem``/``key_pem``: a signed XML document."""
    when = _now(now)
    root = parse(entry_xml)
    for old in root.findall(f".//{{{DS}}}Signature"):
        parent = old.getparent()
        if parent is not None:
            parent.remove(old)
    entry = from_element(root)
    cert = _load_cert(cert_pem, "the endorser's certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise Invalid("the endorser's key is not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = SignatureMethod.RSA_SHA256
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = SignatureMethod.ECDSA_SHA256
    else:
        raise Invalid("the endorser's key must be RSA or ECDSA")
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise Invalid("the key given is not the key of the certificate given")
    _check_dates(cert, when, "the endorser's")
    email = _email(cert)
    if email is None:
        raise Invalid(
            "the endorser's certificate names no e-mail address (subject emailAddress or"
            " subjectAltName rfc822Name): the Marketplace files endorsements by e-mail"
        )
    endorser = Endorser(
        email=email,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        created=when.replace(microsecond=0),
    )
    element = to_element(replace(entry, endorser=endorser))
    signer = XMLSigner(signature_algorithm=algorithm, digest_algorithm=DigestAlgorithm.SHA256)
    signed = signer.sign(element, key=key, cert=[cert])
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def _signature_certs(signature: etree._Element) -> list[x509.Certificate]:
    certs = []
    for node in signature.findall(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"):
        try:
            der = base64.b64decode("".join((node.text or "").split()), validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError):
            raise Invalid("ds:X509Certificate: not a base64 DER certificate") from None
    if not certs:
        raise Invalid("ds:KeyInfo: the signature carries no X.509 certificate")
    return certs


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``, a CA certificate, signed ``cert`` (names, CA flag and signature)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, BadCryptoSignature):
        return False
    return True


def chain_to(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> tuple[list[x509.Certificate], bool]:
    """The path from ``cert`` towards ``anchors`` and whether it reaches one: ``cert``, the
    intermediates it goes through and, when reached, the anchor last (at most ``MAX_CHAIN``
    steps). When none is reached, the path is as far as the intermediates go: its last
    certificate's issuer is the CA nobody could vouch for. Dates are not looked at (see
    :func:`date_problem`)."""
    path = [cert]
    for _ in range(MAX_CHAIN):
        current = path[-1]
        anchor = next((a for a in anchors if issued_by(current, a)), None)
        if anchor is not None:
            return [*path, anchor], True
        step = next((c for c in intermediates if issued_by(current, c)), None)
        if step is None or step in path:
            break
        path.append(step)
    return path, False


def _chain_reaches(
    cert: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime,
) -> bool:
    path, reached = chain_to(cert, intermediates, anchors)
    if not reached:
        return False
    for step in path[1:-1]:
        _check_dates(step, now, "an intermediate CA's")
    _check_dates(path[-1], now, "the trusted CA's")
    return True


def verify(
    signed_xml: bytes,
    *,
    trusted_cas: Sequence[bytes] | None,
    now: dt.datetime | None = None,
) -> Verified:
    """Check an endorsed entry (see the module's docstring for what, in which order)."""
    when = _now(now)
    root = parse(signed_xml)
    signatures = root.findall(f".//{{{DS}}}Signature")
    if not signatures:
        raise Unauthorized("the entry is not signed: it has no ds:Signature")
    if len(signatures) > 1 or signatures[0].getparent() is not root:
        raise Invalid("ds:Signature: an entry carries exactly one, as the last child of rdf:RDF")
    certs = _signature_certs(signatures[0])
    cert = certs[0]
    _check_dates(cert, when, "the endorser's")
    config = SignatureConfiguration(location="./", expect_references=1, verification_time=when)
    try:
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
    except InvalidDigest:
        raise Unauthorized(
            "the entry was changed after it was signed (its digest no longer matches)"
        ) from None
    except InvalidCertificate as e:
        raise Unauthorized(f"the endorser's certificate is refused: {e}") from None
    except InvalidSignature:
        raise Unauthorized(
            "the signature does not verify with the key of the certificate it carries"
            " (made with another key, or the signature itself was altered)"
        ) from None
    except InvalidInput as e:
        raise Invalid(f"ds:Signature: {e}") from None
    assert not isinstance(result, list)  # expect_references=1
    if result.signed_xml is None:
        raise Invalid("ds:Signature: the signed data is not XML")
    entry = from_element(result.signed_xml)
    subject, issuer, email = (
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        _email(cert),
    )
    if email is None:
        raise Unauthorized("the endorser's certificate names no e-mail address")
    claimed = entry.endorser
    if claimed is None:
        raise Unauthorized("slreq:endorsement: the signed entry names no endorser")
    for label, said, real in (
        ("email", claimed.email, email),
        ("subject", claimed.subject, subject),
        ("issuer", claimed.issuer, issuer),
    ):
        if said != real:
            raise Unauthorized(
                f"slreq:{label}: the entry says {said[:200]!r}, its certificate {real!r}"
            )
    trusted = False
    if trusted_cas is not None:
        anchors = [_load_cert(pem, "a trusted CA") for pem in trusted_cas]
        trusted = _chain_reaches(cert, certs[1:], anchors, when)
        if not trusted:
            raise Unauthorized(
                f"the endorser's certificate ({subject}) was issued by {issuer}, which is not a"
                " trusted CA (nor issued by one)"
            )
    return Verified(
        entry=entry,
        subject=subject,
        issuer=issuer,
        email=email,
        trusted=trusted,
        not_after=cert.not_valid_after_utc,
        certificates=tuple(c.public_bytes(serialization.Encoding.DER) for c in certs),
    )
