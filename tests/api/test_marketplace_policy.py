"""The Marketplace and the site's trust policy together, as a site runs them: entries uploaded to
`/metadata` are what endorses an image at its start, and a newer entry deprecating it refuses
the next start."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.config import Settings
from tests.api.policies import JANE, imported, trusting
from tests.cloud.marketplace.support import endorse, make_ca, make_person

XML = {"Content-Type": "application/xml"}


def test_an_uploaded_entry_endorses_the_start_and_a_newer_deprecating_one_refuses_it(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    chosen = trusting(settings, tmp_path, unsigned="refuse").with_overrides(token="test-token")
    with TestClient(create_app(chosen), headers={"Authorization": "Bearer test-token"}) as api:
        refused = api.post("/api/instances", json={"image": "webapp-base"})
        assert (
            refused.status_code == 403 and "(rule unsigned)" in refused.json()["error"]["message"]
        )
        xml, _ = endorse(sums, JANE, now=now - dt.timedelta(seconds=5))
        assert api.post("/metadata", content=xml, headers=XML).status_code == 201
        verdict = api.get("/api/images/webapp-base/verify").json()
        assert (verdict["allowed"], verdict["rule"], verdict["endorser"]) == (
            True,
            "endorsed",
            "jane@example.org",
        )
        assert api.post("/api/instances", json={"image": "webapp-base"}).status_code == 202
        newer, _ = endorse(sums, JANE, now=now, deprecated="a hole in its openssh")
        assert api.post("/metadata", content=newer, headers=XML).status_code == 201
        again = api.post("/api/instances", json={"image": "webapp-base"})
        assert again.status_code == 403
        message = again.json()["error"]["message"]
        assert "(rule deprecated)" in message and "a hole in its openssh" in message


def test_an_entry_by_someone_the_site_does_not_trust_endorses_nothing(
    settings: Settings, fake: FakeConnector, tmp_path: Path
) -> None:
    _, sums = imported(fake, tmp_path)
    stranger = make_person(make_ca("Someone Else's CA"), "Stranger", san_email="s@example.net")
    chosen = trusting(settings, tmp_path, unsigned="refuse").with_overrides(token="test-token")
    with TestClient(create_app(chosen), headers={"Authorization": "Bearer test-token"}) as api:
        xml, _ = endorse(sums, stranger, now=dt.datetime.now(dt.UTC))
        assert api.post("/metadata", content=xml, headers=XML).status_code == 201  # kept
        refused = api.post("/api/instances", json={"image": "webapp-base"})
        assert refused.status_code == 403
        assert "(rule untrusted)" in refused.json()["error"]["message"]
