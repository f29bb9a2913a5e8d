from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from stratuslab.cloud.marketplace.entry import to_xml
from stratuslab.cloud.marketplace.signing import sign, verify
from stratuslab.cloud.marketplace.xmlsafe import DS
from stratuslab.errors import Invalid, Unauthorized
from tests.cloud.marketplace.support import NOW, Party, an_entry, make_ca, make_person

CA = make_ca("Site Trust CA")
OTHER_CA = make_ca("Someone Else's CA")
JANE = make_person(CA, "Jane Tester", san_email="jane@example.org")
OLD = make_person(
    CA, "Old Timer", san_email="old@example.org", not_after=NOW - dt.timedelta(days=1)
)
STRANGER = make_person(OTHER_CA, "Stranger", subject_email="stranger@example.net")


def signed_by(who: Party) -> bytes:
    return sign(to_xml(an_entry()), who.cert_pem, who.key_pem, now=NOW)


def test_a_signed_entry_verifies_and_names_its_endorser() -> None:
    got = verify(signed_by(JANE), trusted_cas=[CA.cert_pem], now=NOW)
    assert got.entry.identifier == an_entry().identifier
    assert got.entry.title == "webapp-base"
    assert got.email == "jane@example.org"
    assert got.subject == "CN=Jane Tester,O=StratusLab Project,C=EU"
    assert got.issuer == "CN=Site Trust CA,O=StratusLab Project,C=EU"
    assert got.trusted is True
    assert got.entry.endorser is not None
    assert got.entry.endorser.email == "jane@example.org"
    assert got.entry.endorser.created == NOW


def test_without_trusted_cas_the_signature_is_checked_and_trust_is_not_claimed() -> None:
    got = verify(signed_by(STRANGER), trusted_cas=None, now=NOW)
    assert got.trusted is False
    assert got.email == "stranger@example.net"  # from the subject's emailAddress


def test_a_signed_entry_is_stratuslabs_enveloped_signature() -> None:
    xml = signed_by(JANE).decode()
    assert xml.rstrip().endswith("</ds:Signature></rdf:RDF>")
    assert "<ds:X509Certificate>" in xml
    assert "<slreq:email>jane@example.org</slreq:email>" in xml


def test_signing_again_replaces_the_endorsement_and_the_signature() -> None:
    twice = sign(signed_by(STRANGER), JANE.cert_pem, JANE.key_pem, now=NOW)
    assert twice.count(b"</ds:Signature>") == 1
    assert verify(twice, trusted_cas=[CA.cert_pem], now=NOW).email == "jane@example.org"


def test_a_tampered_entry_is_refused() -> None:
    tampered = signed_by(JANE).replace(b"webapp-base", b"webapp-evil")
    with pytest.raises(Unauthorized, match="changed after it was signed"):
        verify(tampered, trusted_cas=[CA.cert_pem], now=NOW)


def test_an_endorsement_claimed_for_someone_else_is_refused() -> None:
    tampered = signed_by(JANE).replace(
        b"jane@example.org</slreq:email>", b"boss@example.org</slreq:email>"
    )
    with pytest.raises(Unauthorized, match="changed after it was signed"):
        verify(tampered, trusted_cas=[CA.cert_pem], now=NOW)


def test_a_signature_by_another_key_is_refused() -> None:
    # Signed with the stranger's key, but carrying Jane's certificate.
    root = etree.fromstring(signed_by(STRANGER))
    (node,) = root.iter(f"{{{DS}}}X509Certificate")
    node.text = base64.b64encode(JANE.cert.public_bytes(serialization.Encoding.DER)).decode()
    forged = etree.tostring(root)
    with pytest.raises(Unauthorized, match="does not verify with the key of the certificate"):
        verify(forged, trusted_cas=None, now=NOW)


def test_an_expired_certificate_is_refused() -> None:
    with pytest.raises(Unauthorized, match="expired on"):
        signed_by(OLD)
    made_when_valid = sign(
        to_xml(an_entry()), OLD.cert_pem, OLD.key_pem, now=NOW - dt.timedelta(days=10)
    )
    with pytest.raises(
        Unauthorized, match=r"the endorser's certificate \(CN=Old Timer.*expired on"
    ):
        verify(made_when_valid, trusted_cas=[CA.cert_pem], now=NOW)


def test_a_certificate_from_an_untrusted_ca_is_refused() -> None:
    with pytest.raises(Unauthorized, match=r"issued by CN=Someone Else's CA.*not a trusted CA"):
        verify(signed_by(STRANGER), trusted_cas=[CA.cert_pem], now=NOW)
    # A CA named like the trusted one but with another key is no better.
    impostor_ca = make_ca("Site Trust CA")
    impostor = make_person(impostor_ca, "Jane Tester", san_email="jane@example.org")
    with pytest.raises(Unauthorized, match="not a trusted CA"):
        verify(signed_by(impostor), trusted_cas=[CA.cert_pem], now=NOW)


def test_a_missing_signature_is_refused() -> None:
    with pytest.raises(Unauthorized, match="not signed: it has no ds:Signature"):
        verify(to_xml(an_entry()), trusted_cas=[CA.cert_pem], now=NOW)


def test_two_signatures_are_refused() -> None:
    signed = signed_by(JANE)
    start = signed.index(b"<ds:Signature")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    doubled = signed[:end] + signed[start:end] + signed[end:]
    with pytest.raises(Invalid, match="exactly one"):
        verify(doubled, trusted_cas=None, now=NOW)


def test_signing_refuses_a_key_that_is_not_the_certificates_and_a_certificate_without_email() -> (
    None
):
    with pytest.raises(Invalid, match="not the key of the certificate"):
        sign(to_xml(an_entry()), JANE.cert_pem, STRANGER.key_pem, now=NOW)
    nobody = make_person(CA, "No Mail")
    with pytest.raises(Invalid, match="names no e-mail address"):
        sign(to_xml(an_entry()), nobody.cert_pem, nobody.key_pem, now=NOW)
    with pytest.raises(Invalid, match="not a PEM X\\.509 certificate"):
        sign(to_xml(an_entry()), b"junk", JANE.key_pem, now=NOW)


def test_a_verified_endorsement_carries_the_certificates_it_was_signed_with() -> None:
    got = verify(signed_by(JANE), trusted_cas=None, now=NOW)
    leaf = x509.load_der_x509_certificate(got.certificates[0])
    assert leaf == x509.load_pem_x509_certificate(JANE.cert_pem)
    assert leaf.subject.rfc4514_string() == got.subject
