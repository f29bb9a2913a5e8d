from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from stratuslab.cloud.base import Image
from stratuslab.cloud.marketplace.gate import ImagePolicy
from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.cloud.marketplace.policy import Policy
from stratuslab.cloud.marketplace.signing import Verified
from stratuslab.cloud.marketplace.trust import TrustStore
from stratuslab.config import Settings
from stratuslab.errors import BackendUnavailable, Untrusted
from tests.cloud.marketplace.support import NOW, Shelf, endorse, make_ca, make_crl, make_person

SUMS = checksums(io.BytesIO(b"webapp-base" * 999))
IMAGE = Image(name="webapp-base", fingerprint=SUMS.sha256.upper(), size_bytes=SUMS.size)
CA = make_ca("Site Trust CA")
JANE = make_person(CA, "Jane Tester", san_email="jane@example.org")
BY_JANE = endorse(SUMS, JANE)[1]


def at_now() -> dt.datetime:
    return NOW


def test_without_a_marketplace_every_image_starts_as_before() -> None:
    gate = ImagePolicy(Policy())
    assert gate.refusal("local", IMAGE) is None
    assert gate.decide_image("local", IMAGE).rule == "unsigned"


def test_the_source_is_asked_for_the_images_sha256_and_its_endorsement_decides() -> None:
    shelf = Shelf(BY_JANE)
    gate = ImagePolicy(Policy(unsigned="refuse"), source=shelf, clock=at_now)
    assert gate.refusal("local", IMAGE) is None
    assert shelf.asked == [SUMS.sha256]
    other = Image(name="debian-12", fingerprint="498ad0f0" + "0" * 56, size_bytes=10)
    refusal = gate.refusal("local", other)
    assert isinstance(refusal, Untrusted) and refusal.exit_code == 77
    assert refusal.http_status == 403
    assert refusal.message == (
        "image debian-12 on local refused by the site's policy (rule unsigned): no Marketplace"
        " entry endorses it (sha256 498ad0f0...)"
    )


def test_a_trust_store_that_cannot_be_read_refuses_the_endorsements_it_should_check(
    tmp_path: Path,
) -> None:
    store = TrustStore(tmp_path / "missing.pem")
    gate = ImagePolicy(Policy(), source=Shelf(BY_JANE), trust=store, clock=at_now)
    decision = gate.decide_image("local", IMAGE)
    assert (decision.allowed, decision.rule) == (False, "untrusted")
    assert decision.reasons[0].endswith(
        f"the site's trust store cannot be used: trust store {tmp_path / 'missing.pem'}: cannot"
        " be read: No such file or directory"
    )
    (tmp_path / "missing.pem").write_bytes(CA.cert_pem)
    store.recheck_s = 0
    assert gate.refusal("local", IMAGE) is None  # read once it is there


def test_the_lists_of_a_policy_hold_with_a_trust_store(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(CA.cert_pem)
    listed = Policy(
        endorsers_allow=["JANE@example.org", "/C=EU/O=StratusLab Project/CN=Jane Tester"]
    )
    gate = ImagePolicy(
        listed, source=Shelf(BY_JANE), trust=TrustStore(tmp_path / "ca.pem"), clock=at_now
    )
    assert gate.policy.endorsers_allow == listed.endorsers_allow
    assert gate.decide_image("local", IMAGE).rule == "endorsed"


def test_the_gate_is_made_from_the_settings(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(CA.cert_pem)
    (tmp_path / "ca.crl").write_bytes(make_crl(CA, [(JANE, NOW - dt.timedelta(days=1))]))
    gate = ImagePolicy.from_settings(
        settings.with_overrides(
            policy_unsigned="refuse",
            policy_trust_store=str(tmp_path / "ca.pem"),
            policy_crls=(str(tmp_path / "ca.crl"),),
        ),
        source=Shelf(BY_JANE),
    )
    gate.clock = at_now
    assert gate.decide_image("local", IMAGE).rule == "revoked"


def test_a_source_that_fails_refuses_with_its_own_error() -> None:
    class Down:
        def endorsements(self, sha256: str) -> list[Verified]:
            raise BackendUnavailable("the Marketplace store is not answering")

    refusal = ImagePolicy(Policy(), source=Down()).refusal("local", IMAGE)
    assert isinstance(refusal, BackendUnavailable)


def test_an_image_a_public_cloud_names_by_its_own_id_is_judged_unsigned_not_looked_up() -> None:
    """An AMI is named ``ami-...``, no SHA-256: no entry can endorse it, so it is what the
    policy says of unsigned images, and the Marketplace is not asked."""
    ami = Image(name="debian-12", fingerprint="ami-0cd7065c642ad54f5", size_bytes=None)
    shelf = Shelf(BY_JANE)
    assert ImagePolicy(Policy(), source=shelf, clock=at_now).refusal("aws", ami) is None
    refusal = ImagePolicy(Policy(unsigned="refuse"), source=shelf, clock=at_now).refusal("aws", ami)
    assert isinstance(refusal, Untrusted) and "(rule unsigned)" in refusal.message
    assert shelf.asked == []
