"""The checksums of an image on a cloud: what a Marketplace entry of it states.

They need the image's bytes: the cloud exports the image (``Connector.export_image``: its
unified tarball) to a file under the server's data directory, which is read once for its size
and four digests (``marketplace.identifier.checksums``) and then removed. The result is kept by
SHA-256, which for an LXD image is its fingerprint, so an image is read once whatever its alias
or cloud; bytes whose SHA-256 is not the fingerprint are refused rather than described.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from stratuslab.cloud.base import Connector, Image
from stratuslab.cloud.marketplace.identifier import Checksums, checksums
from stratuslab.db.marketplace_models import ImageChecksumRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import BackendError

_LOCK = threading.Lock()
_EXPORTING: dict[str, threading.Lock] = {}  # one export of an image at a time, per process


@dataclass(frozen=True)
class ImageSums:
    cloud: str
    image: Image
    checksums: Checksums
    cached: bool  # computed before, not read again now


def image_checksums(
    engine: Engine, connector: Connector, *, cloud: str, image: Image, workdir: Path
) -> ImageSums:
    """The checksums of ``image`` (as the caller looked it up, by its name) on ``cloud``.
    Raises ``NotSupported`` (the cloud cannot give its bytes) or ``BackendError`` (they are
    not the image's: their SHA-256 is not its fingerprint)."""
    name = image.name
    known = _cached(engine, image.fingerprint)
    if known is not None:
        return ImageSums(cloud, image, known, cached=True)
    with _LOCK:
        turn = _EXPORTING.setdefault(image.fingerprint, threading.Lock())
    with turn:
        known = _cached(engine, image.fingerprint)
        if known is not None:
            return ImageSums(cloud, image, known, cached=True)
        found = _read(connector, name, image, workdir)
    if found.sha256 != image.fingerprint:
        raise BackendError(
            f"the bytes cloud {cloud} exported for image {name!r} have the SHA-256"
            f" {found.sha256[:16]}..., not the image's fingerprint {image.fingerprint[:16]}...:"
            " they are not described"
        )
    _keep(engine, found)
    return ImageSums(cloud, image, found, cached=False)


def _read(connector: Connector, name: str, image: Image, workdir: Path) -> Checksums:
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"export-{image.fingerprint[:12]}-{secrets.token_hex(4)}.tar"
    try:
        # By the name asked for, which refusals then name; had the alias moved meanwhile, the
        # digest below would not be the fingerprint.
        connector.export_image(name, dest)
        with dest.open("rb") as handle:
            return checksums(handle)
    finally:
        dest.unlink(missing_ok=True)


def _cached(engine: Engine, sha256: str) -> Checksums | None:
    with session_scope(engine) as session:
        row = session.get(ImageChecksumRecord, sha256)
        if row is None:
            return None
        return Checksums(
            size=row.bytes, md5=row.md5, sha1=row.sha1, sha256=row.sha256, sha512=row.sha512
        )


def _keep(engine: Engine, sums: Checksums) -> None:
    try:
        with session_scope(engine) as session:
            if session.get(ImageChecksumRecord, sums.sha256) is None:
                session.add(
                    ImageChecksumRecord(
                        sha256=sums.sha256,
                        bytes=sums.size,
                        md5=sums.md5,
                        sha1=sums.sha1,
                        sha512=sums.sha512,
                    )
                )
    except IntegrityError:
        pass  # another server kept the same, at the same time
