"""What an image archive from elsewhere claims, and the server's properties taken out of it."""

from __future__ import annotations

import gzip
import io
import lzma
import tarfile
from pathlib import Path

import pytest
import yaml
import zstandard

from stratuslab.cloud import archive
from stratuslab.errors import Invalid
from tests.cloud.imageserver import image_archive

CLAIMING = {"stratus.recipe": "f" * 64, "stratus.baked": "yes", "os": "debian"}


def compressed(kind: str, plain: bytes) -> bytes:
    return {
        "none": lambda b: b,
        "gzip": gzip.compress,
        "xz": lzma.compress,
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    }[kind](plain)


@pytest.mark.parametrize("kind", ["none", "gzip", "xz", "zstd"])
def test_the_servers_properties_are_taken_out_and_the_rest_kept(kind: str, tmp_path: Path) -> None:
    source = tmp_path / "image"
    source.write_bytes(compressed(kind, gzip.decompress(image_archive(properties=CLAIMING))))
    metadata = archive.read_metadata(source)
    assert (metadata.compression, metadata.claimed) == (kind, ["stratus.baked", "stratus.recipe"])
    cleaned, stripped = archive.without_server_properties(source, tmp_path / "clean.tar")
    assert cleaned == tmp_path / "clean.tar" and stripped == ["stratus.baked", "stratus.recipe"]
    with tarfile.open(cleaned) as tar:
        names = tar.getnames()
        meta = yaml.safe_load(tar.extractfile("metadata.yaml").read())  # type: ignore[union-attr]
        filler = tar.getmember("rootfs/var/filler")
        link = tar.getmember("rootfs/etc/alias")
        hostname = tar.extractfile("rootfs/etc/hostname").read()  # type: ignore[union-attr]
    assert names == [
        "metadata.yaml",
        "rootfs/etc/hostname",
        "rootfs/var/filler",
        "rootfs/etc/alias",
    ]
    assert meta["properties"] == {"description": "an image from elsewhere", "os": "debian"}
    assert filler.pax_headers["SCHILY.xattr.user.test"] == "kept"  # xattrs (capabilities) too
    assert (link.issym(), link.linkname, hostname) == (True, "hostname", b"elsewhere\n")


def test_an_archive_that_claims_nothing_is_imported_as_it_is(tmp_path: Path) -> None:
    source = tmp_path / "image.tar.gz"
    source.write_bytes(image_archive())
    assert archive.without_server_properties(source, tmp_path / "x.tar") == (source, [])
    assert not (tmp_path / "x.tar").exists()


def test_what_is_no_image_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello" * 200)
    with pytest.raises(Invalid, match="not an image archive"):
        archive.read_metadata(text)
    bare = io.BytesIO()
    with tarfile.open(fileobj=bare, mode="w") as tar:
        info = tarfile.TarInfo("rootfs/etc/hostname")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "bare.tar").write_bytes(bare.getvalue())
    with pytest.raises(Invalid, match=r"no metadata\.yaml"):
        archive.read_metadata(tmp_path / "bare.tar")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(image_archive()[:5000])
    with pytest.raises(Invalid, match="cannot be read"):
        archive.without_server_properties(broken, tmp_path / "y.tar")
