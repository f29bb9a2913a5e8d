"""Whose images are whose: the catalog of images users made (saved, baked, imported).

Backends keep one namespace of image names for the whole site, so an image a user makes is
named ``<owner>/<name>`` there: nobody can take another user's name, and a bare name is
always the site's. The store records each such image with its owner, where it came from and
whether it is public. A private image is its owner's alone: to anybody else it answers as an
image that does not exist, listed or started, by name or by fingerprint. An image the catalog
does not record is the site's, which anybody may start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine

from stratuslab.cloud.base import UNKNOWN_IMAGE_HINT, Image
from stratuslab.db.image_models import ImageRecord
from stratuslab.db.session import session_scope
from stratuslab.errors import CapacityExceeded, Conflict, Invalid, NotFound

ORIGINS = ("save", "bake", "import")
# Images one user may hold on a cloud, whatever made them: each is a backend image of tens or
# hundreds of MiB on the site's disk (`stratus image delete` and `image prune` free them).
MAX_IMAGES_PER_USER = 100
# The fingerprint of an image recorded before the backend made it (a save, a bake): so that
# from the moment it exists it is its owner's, never an unrecorded image, which is the site's.
PENDING = "pending"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def alias_for(owner: str, name: str) -> str:
    """The backend's name of ``owner``'s image ``name``; ``Invalid`` for a name that is not
    lowercase letters, digits, '.', '_' and '-' (a name given as ``owner/name`` of the same
    owner is taken as it is)."""
    if "/" in name:
        prefix, _, name = name.partition("/")
        if prefix != owner:
            raise Invalid(f"image name {prefix}/{name!r}: your images are named {owner}/NAME")
    if not _NAME.match(name):
        raise Invalid(
            f"image name {name[:80]!r}: use up to 63 lowercase letters, digits, '.', '_' and '-'"
        )
    return f"{owner}/{name}"


@dataclass(frozen=True)
class Owned:
    """A user's image as the catalog records it."""

    cloud: str
    alias: str
    fingerprint: str
    owner: str
    origin: str
    public: bool
    description: str
    details: Mapping[str, Any]
    created_at: datetime

    def visible_to(self, owner: str) -> bool:
        return self.public or self.owner == owner


def _owned(row: ImageRecord) -> Owned:
    return Owned(
        cloud=row.cloud,
        alias=row.alias,
        fingerprint=row.fingerprint,
        owner=row.owner,
        origin=row.origin,
        public=row.public,
        description=row.description,
        details=dict(row.details or {}),
        created_at=row.created_at,
    )


class Catalog:
    """The images users made, on every cloud."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self,
        *,
        cloud: str,
        image: Image,
        owner: str,
        origin: str,
        public: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> Owned:
        """Record ``image`` (named ``<owner>/<name>`` on ``cloud``) as ``owner``'s."""
        if origin not in ORIGINS:
            raise Invalid(f"origin {origin!r}: one of {', '.join(ORIGINS)}")
        if not image.name.startswith(owner + "/"):
            raise Invalid(f"{owner}'s image must be named {owner}/NAME, not {image.name!r}")
        with session_scope(self.engine) as session:
            if session.get(ImageRecord, (cloud, image.name)) is not None:
                raise Conflict(f"an image called {image.name!r} exists already on {cloud}")
            held = session.scalar(
                select(func.count())
                .select_from(ImageRecord)
                .where(ImageRecord.cloud == cloud, ImageRecord.owner == owner)
            )
            if (held or 0) >= MAX_IMAGES_PER_USER:
                raise CapacityExceeded(
                    f"{owner} holds {held} images on {cloud}, the most one user may",
                    hint="delete some with `stratus image delete` or `stratus image prune`",
                )
            row = ImageRecord(
                cloud=cloud,
                alias=image.name,
                fingerprint=image.fingerprint,
                owner=owner,
                origin=origin,
                public=public,
                description=image.description,
                details=dict(details or {}),
            )
            session.add(row)
            session.flush()
            return _owned(row)

    def reserve(
        self,
        *,
        cloud: str,
        alias: str,
        owner: str,
        origin: str,
        public: bool = False,
        description: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> Owned:
        """Record ``owner``'s image ``alias`` before the backend makes it (its fingerprint
        ``PENDING`` until :meth:`settle`): from the moment it exists it is theirs."""
        planned = Image(name=alias, fingerprint=PENDING, description=description)
        return self.record(
            cloud=cloud, image=planned, owner=owner, origin=origin, public=public, details=details
        )

    def settle(self, *, cloud: str, alias: str, fingerprint: str) -> Owned:
        """The record of an image made after it was recorded (see ``PENDING``), given the
        fingerprint the backend gave it."""
        return self._change(cloud, alias, fingerprint=fingerprint)

    def amend(self, *, cloud: str, alias: str, details: Mapping[str, Any]) -> Owned:
        """The record with ``details`` in place of what it said."""
        return self._change(cloud, alias, details=dict(details))

    def _change(self, cloud: str, alias: str, **values: Any) -> Owned:
        with session_scope(self.engine) as session:
            row = session.get(ImageRecord, (cloud, alias))
            if row is None:
                raise NotFound(f"no image called {alias!r} is recorded on {cloud}")
            for key, value in values.items():
                setattr(row, key, value)
            session.flush()
            return _owned(row)

    def forget(self, *, cloud: str, alias: str) -> None:
        with session_scope(self.engine) as session:
            row = session.get(ImageRecord, (cloud, alias))
            if row is not None:
                session.delete(row)

    def find(self, *, cloud: str, alias: str, owner: str) -> Owned:
        """``owner``'s view of the image ``alias``: ``NotFound`` when it is another user's
        private image or not a user's image at all."""
        with session_scope(self.engine) as session:
            row = session.get(ImageRecord, (cloud, alias))
            owned = _owned(row) if row is not None else None
        if owned is None or not owned.visible_to(owner):
            raise NotFound(f"no image called {alias!r}", hint=UNKNOWN_IMAGE_HINT)
        return owned

    def owned(self, *, cloud: str, owner: str | None, origin: str | None = None) -> list[Owned]:
        """The images ``owner`` made on ``cloud`` (every user's for None), newest first."""
        query = select(ImageRecord).where(ImageRecord.cloud == cloud)
        if owner is not None:
            query = query.where(ImageRecord.owner == owner)
        if origin is not None:
            query = query.where(ImageRecord.origin == origin)
        with session_scope(self.engine) as session:
            rows = session.scalars(query.order_by(ImageRecord.created_at.desc()))
            return [_owned(r) for r in rows]

    def records_of(self, cloud: str, images: Iterable[Image]) -> list[Owned]:
        """The records naming any of ``images`` on ``cloud``, by alias or fingerprint. One
        query."""
        wanted = {i.fingerprint for i in images}
        names = {i.name for i in images}
        if not wanted:
            return []
        with session_scope(self.engine) as session:
            rows = session.scalars(
                select(ImageRecord).where(
                    ImageRecord.cloud == cloud,
                    or_(ImageRecord.fingerprint.in_(wanted), ImageRecord.alias.in_(names)),
                )
            )
            return [_owned(r) for r in rows]

    def hidden_from(self, owner: str, cloud: str, images: Iterable[Image]) -> set[str]:
        """The fingerprints among ``images`` that ``owner`` may not see: images only other
        users' private records name (by the record's alias, or its fingerprint)."""
        wanted = list(images)
        return hidden(owner, wanted, self.records_of(cloud, wanted))

    def startable(self, owner: str, cloud: str, image: Image) -> NotFound | None:
        """Why ``owner`` may not start ``image``, answered as an image that does not exist;
        None when they may."""
        if hidden(owner, [image], self.records_of(cloud, [image])):
            return NotFound(f"no image called {image.name!r}", hint=UNKNOWN_IMAGE_HINT)
        return None


def hidden(owner: str, images: Iterable[Image], records: Iterable[Owned]) -> set[str]:
    """The fingerprints of ``images`` that ``records`` name (by alias or fingerprint: a record
    made before its image still bears ``PENDING``) and none of which ``owner`` may see."""
    found = list(records)
    refused = set()
    for image in images:
        naming = [r for r in found if image.fingerprint == r.fingerprint or image.name == r.alias]
        if naming and not any(r.visible_to(owner) for r in naming):
            refused.add(image.fingerprint)
    return refused
