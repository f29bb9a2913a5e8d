from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.cloud.marketplace.policy import ImageFacts, Policy, refusal_message
from stratuslab.cloud.marketplace.trust import Anchors, load
from stratuslab.errors import Invalid
from tests.cloud.marketplace.support import NOW, endorse, make_ca, make_crl, make_person

BYTES = b"the bytes of webapp-base\n" * 1000
SUMS = checksums(io.BytesIO(BYTES))
IMAGE = ImageFacts("local", "webapp-base", SUMS.sha256, SUMS.size)
CA = make_ca("Site Trust CA")
OTHER = make_ca("Someone Else's CA")
JANE = make_person(CA, "Jane Tester", san_email="Jane@Example.org")
BOB = make_person(CA, "Bob Builder", subject_email="bob@example.org")
MALLORY = make_person(CA, "Mallory", san_email="mallory@example.org")
EVE = make_person(OTHER, "Eve", san_email="eve@example.net")
BY_JANE = endorse(SUMS, JANE)[1]
BY_BOB = endorse(SUMS, BOB, now=NOW - dt.timedelta(hours=1))[1]
BY_MALLORY = endorse(SUMS, MALLORY)[1]
BY_EVE = endorse(SUMS, EVE)[1]
JANE_DN = "/C=EU/O=StratusLab Project/CN=Jane Tester"


@pytest.fixture
def site(tmp_path: Path) -> Anchors:
    """The site's trust store: its CA, whose list revokes Mallory."""
    (tmp_path / "ca.pem").write_bytes(CA.cert_pem)
    (tmp_path / "ca.crl").write_bytes(make_crl(CA, [(MALLORY, NOW - dt.timedelta(days=3))]))
    return load(tmp_path / "ca.pem", [tmp_path / "ca.crl"])


def test_the_defaults_start_an_image_nobody_endorsed_as_before_the_policy() -> None:
    decision = Policy().decide(IMAGE, [], now=NOW)
    assert decision.allowed and decision.rule == "unsigned"
    assert decision.identifier is None  # no entry: its identifier is unknown
    assert decision.reasons == (
        f"no Marketplace entry endorses it (sha256 {SUMS.sha256[:8]}...); the site allows"
        " unsigned images (policy_unsigned = allow)",
    )


def test_an_unsigned_image_is_refused_naming_the_rule() -> None:
    decision = Policy(unsigned="refuse").decide(IMAGE, [], now=NOW)
    assert not decision.allowed
    assert refusal_message("debian-12", "local", decision) == (
        "image debian-12 on local refused by the site's policy (rule unsigned): no Marketplace"
        f" entry endorses it (sha256 {SUMS.sha256[:8]}...)"
    )


def test_an_image_this_site_built_counts_as_endorsed_by_the_site_unless_it_says_not() -> None:
    built = ImageFacts("local", "debian-12", SUMS.sha256, SUMS.size, {"stratus.recipe": "ab12"})
    decision = Policy(unsigned="refuse").decide(built, [], now=NOW)
    assert decision.allowed and decision.rule == "site-image"
    assert decision.reasons == ("an image this site made itself (stratus.recipe ab12)",)
    long = ImageFacts("local", "debian-12", SUMS.sha256, 1, {"stratus.recipe": "fa2ab1e8" * 8})
    assert Policy().decide(long, [], now=NOW).reasons == (
        "an image this site made itself (stratus.recipe fa2ab1e8fa2ab1e8...)",
    )
    refused = Policy(site_images="refuse").decide(built, [], now=NOW)
    assert not refused.allowed and refused.rule == "site-image"
    assert "policy_site_images = refuse" in refused.reasons[0]


def test_an_endorsed_image_starts_with_a_trust_store_and_a_revocation_list(
    site: Anchors,
) -> None:
    decision = Policy(unsigned="refuse", trust=site).decide(IMAGE, [BY_JANE], now=NOW)
    assert decision.allowed and decision.rule == "endorsed"
    assert decision.endorser == "Jane@Example.org"
    assert decision.identifier == SUMS.identifier
    assert decision.reasons[0].startswith(
        f"entry {SUMS.identifier} endorsed by Jane@Example.org (CN=Jane Tester,"
    )


def test_an_entry_signed_by_an_untrusted_certificate_is_refused(site: Anchors) -> None:
    decision = Policy(trust=site).decide(IMAGE, [BY_EVE], now=NOW)
    assert not decision.allowed and decision.rule == "untrusted"
    assert decision.reasons == (
        f"entry {SUMS.identifier} endorsed by eve@example.net: certificate CN=Eve,O=StratusLab"
        " Project,C=EU is issued by CN=Someone Else's CA,O=StratusLab Project,C=EU, which the"
        " site does not trust",
    )
    # A site without a trust store takes the signature checked at upload as it is.
    assert Policy().decide(IMAGE, [BY_EVE], now=NOW).rule == "endorsed"


def test_an_entry_signed_by_a_revoked_certificate_is_refused(site: Anchors) -> None:
    decision = Policy(trust=site).decide(IMAGE, [BY_MALLORY], now=NOW)
    assert not decision.allowed and decision.rule == "revoked"
    assert decision.reasons[0].endswith(
        f"certificate serial {MALLORY.cert.serial_number} (CN=Mallory,O=StratusLab Project,C=EU)"
        " revoked by CN=Site Trust CA,O=StratusLab Project,C=EU on 2026-04-28"
    )


def test_an_expired_entry_is_refused_unless_the_site_allows_them() -> None:
    lapsed = endorse(
        SUMS, JANE, created=NOW - dt.timedelta(days=200), valid=NOW - dt.timedelta(days=1)
    )[1]
    decision = Policy().decide(IMAGE, [lapsed], now=NOW)
    assert not decision.allowed and decision.rule == "expired"
    assert decision.reasons == (
        f"entry {SUMS.identifier} endorsed by Jane@Example.org: the entry expired on"
        " 2026-04-30 12:00Z",
    )
    assert Policy(expired="allow").decide(IMAGE, [lapsed], now=NOW).rule == "endorsed"


def test_a_deprecated_entry_is_refused_with_its_reason() -> None:
    gone = endorse(SUMS, JANE, deprecated="openssl CVE-2026-0001: use webapp-base-2")[1]
    decision = Policy().decide(IMAGE, [gone], now=NOW)
    assert not decision.allowed and decision.rule == "deprecated"
    assert decision.reasons[0].endswith(
        "the entry is deprecated: openssl CVE-2026-0001: use webapp-base-2"
    )


def test_an_image_whose_size_is_not_the_entrys_is_refused() -> None:
    bigger = ImageFacts("local", "webapp-base", SUMS.sha256, SUMS.size + 1)
    decision = Policy().decide(bigger, [BY_JANE], now=NOW)
    assert not decision.allowed and decision.rule == "size"
    assert decision.reasons[0].endswith(
        f"the bytes do not match the entry: the size is {SUMS.size + 1} bytes, the entry says"
        f" {SUMS.size}"
    )


def test_a_tampered_image_file_is_refused_naming_the_checksums_that_differ() -> None:
    tampered = bytearray(BYTES)
    tampered[100] ^= 1
    sums = checksums(io.BytesIO(bytes(tampered)))
    facts = ImageFacts("file", "webapp-base.tar.gz", sums.sha256, sums.size, checksums=sums)
    decision = Policy().decide(facts, [BY_JANE], now=NOW)
    assert not decision.allowed and decision.rule == "size"
    (reason,) = decision.reasons
    for name in ("MD5", "SHA-1", "SHA-256", "SHA-512"):
        assert f"the {name} is " in reason
    assert "the size is" not in reason  # one byte changed, none added


def test_endorsers_are_denied_or_allowed_by_e_mail_or_dn_in_either_form() -> None:
    for listed in ("jane@example.org", JANE_DN, "CN=Jane Tester, O=StratusLab Project, c=EU"):
        denied = Policy(endorsers_deny=[listed]).decide(IMAGE, [BY_JANE], now=NOW)
        assert (denied.allowed, denied.rule) == (False, "endorsers.deny"), listed
        assert denied.reasons[0].endswith("the site denies this endorser")
    allowed = Policy(endorsers_allow=["bob@example.org"])
    assert allowed.decide(IMAGE, [BY_BOB], now=NOW).rule == "endorsed"
    refused = allowed.decide(IMAGE, [BY_JANE], now=NOW)
    assert (refused.allowed, refused.rule) == (False, "endorsers.allow")
    assert refused.reasons[0].endswith("not one of the endorsers the site allows")


def test_a_denied_checksum_or_identifier_refuses_whatever_endorses_it() -> None:
    for listed in (SUMS.md5.upper(), SUMS.sha1, SUMS.sha256, SUMS.sha512):
        decision = Policy(checksums_deny=[listed]).decide(IMAGE, [BY_JANE], now=NOW)
        assert (decision.allowed, decision.rule) == (False, "checksums.deny")
        assert decision.reasons == (
            f"the site denies the checksum {listed.lower()[:16]}... (policy_checksums_deny),"
            " whatever endorses it",
        )
    decision = Policy(identifiers_deny=[SUMS.identifier]).decide(IMAGE, [BY_JANE], now=NOW)
    assert (decision.allowed, decision.rule) == (False, "identifiers.deny")
    assert decision.identifier == SUMS.identifier


def test_an_allowed_checksum_or_identifier_starts_without_an_acceptable_entry() -> None:
    strict = {"unsigned": "refuse"}
    decision = Policy(**strict, checksums_allow=[SUMS.sha256]).decide(IMAGE, [], now=NOW)
    assert (decision.allowed, decision.rule) == (True, "checksums.allow")
    lapsed = endorse(SUMS, JANE, valid=NOW - dt.timedelta(hours=1))[1]
    decision = Policy(identifiers_allow=[SUMS.identifier]).decide(IMAGE, [lapsed], now=NOW)
    assert (decision.allowed, decision.rule) == (True, "identifiers.allow")
    assert "the entry expired on" in decision.reasons[1]  # and what the entry lacked


def test_one_acceptable_endorsement_is_enough_and_a_refusal_lists_every_one(
    site: Anchors,
) -> None:
    policy = Policy(trust=site)
    decision = policy.decide(IMAGE, [BY_MALLORY, BY_BOB], now=NOW)
    assert (decision.allowed, decision.rule, decision.endorser) == (
        True,
        "endorsed",
        "bob@example.org",
    )
    assert "revoked by" in decision.reasons[1]
    bob_lapsed = endorse(
        SUMS, BOB, now=NOW - dt.timedelta(hours=3), valid=NOW - dt.timedelta(hours=1)
    )[1]
    refused = policy.decide(IMAGE, [bob_lapsed, BY_MALLORY, BY_EVE], now=NOW)
    assert not refused.allowed
    assert len(refused.reasons) == 3
    assert [r.split(":")[0] for r in refused.reasons] == [
        f"entry {SUMS.identifier} endorsed by {who}"
        for who in ("mallory@example.org", "eve@example.net", "bob@example.org")
    ]
    assert refused.rule == "revoked"  # the newest endorsement's (Mallory's, then Eve's)


def test_an_endorsement_of_other_bytes_is_not_accepted() -> None:
    other = checksums(io.BytesIO(b"another image"))
    decision = Policy().decide(IMAGE, [endorse(other, JANE)[1]], now=NOW)
    assert (decision.allowed, decision.rule) == (False, "size")
    assert decision.identifier is None  # no entry about these bytes


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unsigned": "maybe"}, "policy unsigned: allow or refuse"),
        ({"endorsers_deny": ["jane"]}, "neither an e-mail address nor a certificate DN"),
        ({"endorsers_allow": ["/O=Grid/XX=Jane"]}, "unknown DN attribute 'XX'"),
        ({"checksums_allow": ["abc"]}, "not a hexadecimal MD5, SHA-1, SHA-256 or SHA-512"),
        ({"identifiers_deny": ["not-an-id"]}, "not a Marketplace identifier"),
    ],
)
def test_a_policy_refuses_what_it_cannot_compare(changes: dict[str, object], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        Policy(**changes)  # type: ignore[arg-type]
