"""The checksums of an image on a cloud, through the instance service: read from the exported
bytes once, kept by fingerprint, and refused when the bytes are not the image's."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from stratuslab.cloud.connectors.fake import FakeConnector
from stratuslab.cloud.instances import InstanceService
from stratuslab.cloud.marketplace.identifier import checksums
from stratuslab.errors import BackendError, NotFound, NotSupported
from tests.cloud.connectors.test_contract import image_archive


def test_an_imported_images_checksums_are_its_bytes_and_are_read_once(
    instances: InstanceService, fake: FakeConnector, tmp_path: Path
) -> None:
    archive = image_archive(tmp_path / "archive.tar")
    data = archive.read_bytes()
    fake.import_image(archive, name="webapp", sha256=hashlib.sha256(data).hexdigest())
    workdir = tmp_path / "exports"

    found = instances.image_checksums("local", "webapp", workdir=workdir)
    assert found.checksums == checksums(io.BytesIO(data))
    assert (found.cached, found.image.name, found.cloud) == (False, "webapp", "local")
    assert list(workdir.iterdir()) == []  # the exported file is gone

    fake.ex_fail_next("export_image", BackendError("exported again"))
    again = instances.image_checksums("local", found.image.fingerprint, workdir=workdir)
    assert (again.cached, again.checksums) == (True, found.checksums)


def test_bytes_that_are_not_the_images_are_refused(
    instances: InstanceService, fake: FakeConnector, tmp_path: Path
) -> None:
    archive = image_archive(tmp_path / "archive.tar")
    fake.import_image(archive, name="liar", sha256="ab" * 32)  # the backend's word, wrong
    with pytest.raises(BackendError, match="not the image's fingerprint abababab"):
        instances.image_checksums("local", "liar", workdir=tmp_path / "exports")
    with pytest.raises(NotSupported, match="no bytes for image 'debian-12'"):
        instances.image_checksums("local", "debian-12", workdir=tmp_path / "exports")
    with pytest.raises(NotFound, match="no image called 'nothing'"):
        instances.image_checksums("local", "nothing", workdir=tmp_path / "exports")
    with pytest.raises(NotFound, match="no cloud called 'elsewhere'"):
        instances.image_checksums("elsewhere", "debian-12", workdir=tmp_path / "exports")
    assert list((tmp_path / "exports").iterdir()) == []
