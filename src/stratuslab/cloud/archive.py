"""Image archives from elsewhere: what their ``metadata.yaml`` claims, and what the server
takes out of it.

An LXD image is a tarball (plain, or compressed with gzip, bzip2, xz or zstd) holding
``metadata.yaml`` and ``rootfs/``. Its properties become the image's on the backend, and some
properties are the server's word: ``stratus.recipe`` says an image is the site's base image
built from a recipe, ``stratus.*`` keys say who saved or baked an image from what. An image
from elsewhere may not claim them, so :func:`without_server_properties` writes the archive
again without them (as a plain tarball, every other member as it was).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO, Any

import yaml
import zstandard

from stratuslab.errors import Invalid, TooLarge

SERVER_PREFIX = "stratus."
MAX_METADATA = 1 << 20  # bytes of metadata.yaml
_NAMES = ("metadata.yaml", "./metadata.yaml")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


@dataclass(frozen=True)
class Metadata:
    """What an archive's metadata.yaml says."""

    compression: str  # none, gzip, bzip2, xz, zstd
    data: dict[str, Any]

    @property
    def properties(self) -> dict[str, str]:
        found = self.data.get("properties") or {}
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    @property
    def claimed(self) -> list[str]:
        """The properties only the server may set."""
        return sorted(k for k in self.properties if k.startswith(SERVER_PREFIX))


def compression_of(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(512)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "none"
    raise Invalid(
        "not an image archive: an LXD image is a tarball (plain, gzip, bzip2, xz or zstd) "
        "holding metadata.yaml and rootfs/"
    )


def read_metadata(path: Path) -> Metadata:
    """The archive's metadata.yaml; ``Invalid`` when it has none or it is not YAML."""
    compression = compression_of(path)
    with _members(path, compression) as tar:
        for member in tar:
            if member.name in _NAMES and member.isfile():
                return Metadata(compression, _parse(_read(tar, member)))
    raise Invalid("the archive has no metadata.yaml: it is not an LXD image")


def without_server_properties(path: Path, out: Path) -> tuple[Path, list[str]]:
    """The archive to import: ``path`` itself when its metadata claims nothing of the
    server's, else ``out``, a plain tarball of the same members whose metadata.yaml has the
    ``stratus.*`` properties taken out; and the keys taken out."""
    metadata = read_metadata(path)
    claimed = metadata.claimed
    if not claimed:
        return path, []
    cleaned = dict(metadata.data)
    cleaned["properties"] = {k: v for k, v in metadata.properties.items() if k not in claimed}
    text = yaml.safe_dump(cleaned, sort_keys=False).encode()
    try:
        with (
            _members(path, metadata.compression) as source,
            tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as target,
        ):
            for member in source:
                if member.name in _NAMES and member.isfile():
                    member.size = len(text)
                    target.addfile(member, BytesIO(text))
                elif member.isfile():
                    target.addfile(member, source.extractfile(member))
                else:
                    target.addfile(member)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, claimed


@contextmanager
def _members(path: Path, compression: str) -> Iterator[tarfile.TarFile]:
    """The archive's members in order, read once from start to end (a stream: a tarball
    of gigabytes is never held)."""
    with path.open("rb") as raw:
        stream: (
            IO[bytes]
            | gzip.GzipFile
            | bz2.BZ2File
            | lzma.LZMAFile
            | zstandard.ZstdDecompressionReader
        )
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw)
        elif compression == "bzip2":
            stream = bz2.BZ2File(raw)
        elif compression == "xz":
            stream = lzma.LZMAFile(raw)  # noqa: SIM115 - closed below, with the others
        elif compression == "zstd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        else:
            stream = raw
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                yield tar
        except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
            raise Invalid(f"the image archive cannot be read ({compression}): {exc}") from None
        finally:
            stream.close()


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MAX_METADATA:
        raise TooLarge(f"metadata.yaml of {member.size} bytes: at most {MAX_METADATA}")
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def _parse(text: bytes) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid(f"metadata.yaml is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise Invalid("metadata.yaml must be a mapping (architecture, properties, ...)")
    return data
