"""/api/images/{name}/verify and the site's trust policy at POST /api/instances."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.api.policies import JANE, TODAY, imported, policy_api, trusting
from tests.cloud.marketplace.support import Shelf, endorse, make_ca, make_person


def test_by_default_an_image_nobody_endorsed_may_start_and_verify_says_why(
    api: TestClient, fake: FakeConnector
) -> None:
    answer = api.get("/api/images/debian-12/verify")
    assert answer.status_code == 200
    body = answer.json()
    fingerprint = fake.get_image("debian-12").fingerprint
    assert body == {
        "image": "debian-12",
        "cloud": "local",
        "fingerprint": fingerprint,
        "size_bytes": 1 << 20,
        "allowed": True,
        "rule": "unsigned",
        "reasons": [
            f"no Marketplace entry endorses it (sha256 {fingerprint[:8]}...); the site allows"
            " unsigned images (policy_unsigned = allow)"
        ],
        "endorser": None,
        "identifier": None,
        "message": None,
    }
    assert api.post("/api/instances", json={"image": "debian-12"}).status_code == 202


def test_a_refused_image_is_403_with_the_rule_and_nothing_is_recorded(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    with policy_api(settings, Shelf(), policy_unsigned="refuse") as api:
        fingerprint = fake.get_image("debian-12").fingerprint
        message = (
            "image debian-12 on local refused by the site's policy (rule unsigned): no"
            f" Marketplace entry endorses it (sha256 {fingerprint[:8]}...)"
        )
        verdict = api.get("/api/images/debian-12/verify").json()
        assert (verdict["allowed"], verdict["rule"], verdict["message"]) == (
            False,
            "unsigned",
            message,
        )
        answer = api.post("/api/instances", json={"image": "debian-12", "name": "web"})
        assert answer.status_code == 403
        assert answer.json()["error"] == {"type": "Untrusted", "message": message, "hint": None}
        assert api.get("/api/instances", params={"gone": True}).json() == []
        assert fake.list_instances() == []


def test_an_endorsed_image_starts_and_verify_names_its_endorser(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    image, sums = imported(fake, tmp_path)
    shelf = Shelf(endorse(sums, JANE, now=TODAY)[1])
    with policy_api(trusting(settings, tmp_path, unsigned="refuse"), shelf) as api:
        verdict = api.get("/api/images/webapp-base/verify").json()
        assert verdict["fingerprint"] == image.fingerprint == sums.sha256
        assert (verdict["allowed"], verdict["rule"], verdict["endorser"]) == (
            True,
            "endorsed",
            "jane@example.org",
        )
        assert verdict["identifier"] == sums.identifier
        assert api.post("/api/instances", json={"image": "webapp-base"}).status_code == 202


def test_an_endorser_the_site_does_not_trust_is_refused_at_start(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    stranger = make_person(make_ca("Someone Else's CA"), "Eve", san_email="eve@example.net")
    shelf = Shelf(endorse(sums, stranger, now=TODAY)[1])
    with policy_api(trusting(settings, tmp_path), shelf) as api:
        answer = api.post("/api/instances", json={"image": "webapp-base"})
        assert answer.status_code == 403
        message = answer.json()["error"]["message"]
        assert message.startswith(
            "image webapp-base on local refused by the site's policy (rule untrusted): entry"
        )
        assert "issued by CN=Someone Else's CA,O=StratusLab Project,C=EU, which the site" in message
        assert api.get("/api/instances").json() == []


def test_verify_answers_404_for_an_unknown_image_and_refuses_what_is_out_of_bounds(
    api: TestClient,
) -> None:
    assert api.get("/api/images/no-such/verify").status_code == 404
    assert api.get("/api/images/debian-12/verify", params={"cloud": "elsewhere"}).status_code == 404
    assert api.get("/api/images/" + "x" * 300 + "/verify").status_code == 422
    assert api.get("/api/images/debian-12/verify", headers={"Authorization": ""}).status_code == 401
