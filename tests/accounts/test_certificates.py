"""Certificate DNs: the forms users write them in, and the identity a certificate or a proxy
of it stands for."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import NameOID

from stratuslab.accounts.certificates import dn_of, identities, is_proxy, normalized
from stratuslab.errors import Invalid
from tests.accounts import pki

ALICE = pki.name(
    (NameOID.DOMAIN_COMPONENT, "org"),
    (NameOID.DOMAIN_COMPONENT, "example"),
    (NameOID.ORGANIZATION_NAME, "Grid"),
    (NameOID.COMMON_NAME, "Alice Smith"),
)
ALICE_DN = "/DC=org/DC=example/O=Grid/CN=Alice Smith"


def test_a_dn_reads_in_the_grid_form_and_in_rfc_4514_alike() -> None:
    assert dn_of(ALICE) == ALICE_DN
    assert normalized(ALICE_DN) == ALICE_DN
    assert normalized("CN=Alice Smith, O=Grid,DC=example,DC=org") == ALICE_DN
    assert normalized("/dc=org/dc=example/o=Grid/cn=Alice Smith") == ALICE_DN


@pytest.mark.parametrize("text", ["", "Alice", "/CN", "/XX=1/CN=a", "/CN=" + "a" * 600])
def test_what_is_not_a_dn_is_refused(text: str) -> None:
    with pytest.raises(Invalid):
        normalized(text)


def test_a_proxy_stands_for_its_end_entity_certificate_only_where_proxies_are_allowed() -> None:
    authority = pki.ca("Test CA")
    alice = pki.issue(authority, ALICE)
    first = pki.proxy(alice)
    second = pki.proxy(first, "7654321")
    assert not is_proxy(alice.certificate) and is_proxy(first.certificate)
    assert identities(alice.certificate, allow_proxies=False) == [ALICE_DN]
    assert identities(first.certificate, allow_proxies=False) == []
    assert identities(first.certificate, allow_proxies=True) == [ALICE_DN]
    # A proxy of a proxy: its issuer is the first proxy, whose numeric CN is taken off.
    assert identities(second.certificate, allow_proxies=True) == [
        ALICE_DN + "/CN=1234567",
        ALICE_DN,
    ]
    # A DN's own last CN is never taken off: no shorter DN somebody registered matches it.
    assert "/DC=org/DC=example/O=Grid" not in identities(second.certificate, allow_proxies=True)
