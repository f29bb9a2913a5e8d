"""/api/images/<name>/checksums: what a Marketplace entry of an image on a cloud states, for any
user of the site; on both stores."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from fastapi.testclient import TestClient

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.marketplace.identifier import checksums
from tests.cloud.connectors.test_contract import image_archive


def test_an_images_checksums_and_identifier(
    api: TestClient, fake: FakeConnector, tmp_path: Path
) -> None:
    archive = image_archive(tmp_path / "archive.tar")
    data = archive.read_bytes()
    fake.import_image(archive, name="webapp", sha256=hashlib.sha256(data).hexdigest())
    expected = checksums(io.BytesIO(data))

    answer = api.get("/api/images/webapp/checksums", params={"cloud": "local"})
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert {k: got[k] for k in ("size", "md5", "sha1", "sha256", "sha512", "identifier")} == {
        "size": expected.size,
        "md5": expected.md5,
        "sha1": expected.sha1,
        "sha256": expected.sha256,
        "sha512": expected.sha512,
        "identifier": expected.identifier,
    }
    assert (got["fingerprint"], got["cached"], got["properties"]["os"]) == (
        expected.sha256,
        False,
        "debian",
    )
    assert api.get("/api/images/webapp/checksums").json()["cached"] is True

    assert TestClient(api.app).get("/api/images/webapp/checksums").status_code == 401
    missing = api.get("/api/images/nothing/checksums")
    assert missing.status_code == 404 and "no image called 'nothing'" in missing.text
    seeded = api.get("/api/images/debian-12/checksums")
    assert seeded.status_code == 501 and "no bytes for image 'debian-12'" in seeded.text
