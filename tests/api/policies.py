"""The API in-process with a site trust policy of the test's and endorsements at hand (the
Marketplace store's seam, ``Services(endorsements=...)``), on the fake cloud."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from stratuslab.api.app import create_app
from stratuslab.cloud.base import Image
from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.marketplace.identifier import Checksums
from stratuslab.config import Settings
from stratuslab.db.session import engine_for
from stratuslab.services import Services
from tests.cloud.marketplace.support import (
    Party,
    Shelf,
    file_checksums,
    image_archive,
    make_ca,
    make_person,
)

TODAY = dt.datetime.now(dt.UTC)
CA = make_ca("Site Trust CA")
JANE = make_person(
    CA, "Jane Tester", san_email="jane@example.org", not_after=TODAY + dt.timedelta(days=30)
)


def trusting(settings: Settings, folder: Path, ca: Party = CA, **policy: Any) -> Settings:
    """``settings`` with ``ca`` as the trust store and the ``policy_*`` settings given."""
    (folder / "trust.pem").write_bytes(ca.cert_pem)
    return settings.with_overrides(
        policy_trust_store=str(folder / "trust.pem"),
        **{f"policy_{name}": value for name, value in policy.items()},
    )


def imported(
    fake: FakeConnector, folder: Path, name: str = "webapp-base"
) -> tuple[Image, Checksums]:
    """An image tarball imported into the fake cloud under its SHA-256, as LXD does."""
    archive = image_archive(folder / f"{name}.tar.gz")
    sums = file_checksums(archive)
    return fake.import_image(archive, name=name, sha256=sums.sha256), sums


@contextmanager
def policy_api(settings: Settings, shelf: Shelf, **overrides: Any) -> Iterator[TestClient]:
    """The API with the site token ``test-token``; ``overrides`` are settings."""
    chosen = settings.with_overrides(token="test-token", report_grace_s=1, **overrides)
    services = Services(
        chosen, engine_for(chosen.database_url), token="test-token", endorsements=shelf
    )
    app = create_app(chosen, services=services)
    with TestClient(app, headers={"Authorization": "Bearer test-token"}) as client:
        yield client
