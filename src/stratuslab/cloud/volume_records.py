"""Volumes as the store keeps them and as users see them, and who reaches which.

A record (``VolumeRecord``) is written before the backend is asked for anything and outlives
the volume (state ``gone``); a :class:`VolumeView` is the frozen copy handed out once a
transaction ends, with the attachments that count (those of instances that are not gone).

Who reaches what, the one rule every method of the volume service applies through
:func:`find`: a user reaches their own volumes and everybody's public ones; an administrator
every volume. Another user's private volume is not found, with the very words of a volume
that does not exist, whichever way it is named (its name, ``owner/name`` or its id).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_values import parse_ref
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.volume_models import VolumeAttachmentRecord, VolumeRecord
from stratuslab.errors import Forbidden, NotFound

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stratuslab.cloud.base import Connector
    from stratuslab.cloud.instances import InstanceService

PENDING, READY, DELETING, GONE, ERROR = "pending", "ready", "deleting", "gone", "error"
_ID = re.compile(r"^vol-[0-9a-f]{8}$")
LIST_HINT = "see `stratus volume list` (and --public for others' public volumes)"


@dataclass(frozen=True)
class AttachmentView:
    """Where a volume is attached: an instance that is not gone."""

    instance: str  # instance id
    instance_name: str
    path: str
    read_only: bool
    state: str  # attaching | attached | detaching

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VolumeView:
    """A volume as users see it."""

    id: str
    owner: str
    name: str
    cloud: str
    size_bytes: int
    public: bool
    description: str
    state: str  # pending | ready | deleting | gone | error
    source: str | None  # "alice/base" or "alice/base/snap1" it was cloned from
    run_id: str | None  # made by a run for a node instance: deleted by its teardown
    created_at: datetime
    error: str | None
    attachments: tuple[AttachmentView, ...]  # live instances only
    recovered: bool = False

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        out["ref"] = self.ref
        out["attachments"] = [a.to_dict() for a in self.attachments]
        return out


@dataclass(frozen=True)
class VolumeSnapshotView:
    """One snapshot of one volume."""

    volume: str  # the volume's ref, "owner/name"
    volume_id: str
    name: str
    created_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "volume_id": self.volume_id,
            "name": self.name,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


@dataclass(frozen=True)
class AttachmentOfInstance:
    """A volume attached to an instance, as `instance show` and `run show` list them."""

    volume: str  # the volume's ref, "owner/name"
    volume_id: str
    path: str
    read_only: bool
    state: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def new_id() -> str:
    return f"vol-{secrets.token_hex(4)}"


def backend_name_of(volume_id: str) -> str:
    """The backend's name of a volume: from its id, never from what users call it (names are
    unique per owner, backend names per backend)."""
    return f"stratus-{volume_id}"


def attachments_of(
    session: Session, volume_ids: Sequence[str]
) -> dict[str, tuple[AttachmentView, ...]]:
    """Per volume, its attachments to instances that are not gone, by path."""
    if not volume_ids:
        return {}
    rows = session.execute(
        select(VolumeAttachmentRecord, InstanceRecord.name)
        .join(InstanceRecord, InstanceRecord.id == VolumeAttachmentRecord.instance_id)
        .where(
            VolumeAttachmentRecord.volume_id.in_(list(volume_ids)),
            InstanceRecord.state != InstanceState.GONE.value,
        )
        .order_by(VolumeAttachmentRecord.path, VolumeAttachmentRecord.instance_id)
    ).all()
    found: dict[str, list[AttachmentView]] = {}
    for attachment, name in rows:
        found.setdefault(attachment.volume_id, []).append(
            AttachmentView(
                instance=attachment.instance_id,
                instance_name=name,
                path=attachment.path,
                read_only=attachment.read_only,
                state=attachment.state,
            )
        )
    return {volume_id: tuple(views) for volume_id, views in found.items()}


def view_of(row: VolumeRecord, attachments: tuple[AttachmentView, ...] = ()) -> VolumeView:
    return VolumeView(
        id=row.id,
        owner=row.owner,
        name=row.name,
        cloud=row.cloud,
        size_bytes=row.size_bytes,
        public=row.public,
        description=row.description,
        state=row.state,
        source=row.source,
        run_id=row.run_id,
        created_at=row.created_at,
        error=row.error,
        attachments=attachments if row.state != GONE else (),
        recovered=row.recovered,
    )


def views_of(session: Session, rows: Sequence[VolumeRecord]) -> list[VolumeView]:
    """Views of ``rows`` with their attachments (one query for them all)."""
    attached = attachments_of(session, [row.id for row in rows])
    return [view_of(row, attached.get(row.id, ())) for row in rows]


def not_found(ref: str) -> NotFound:
    """What a volume the caller does not reach answers: the same for one that does not exist
    and for another user's private one."""
    return NotFound(f"no volume {ref[:80]!r}", hint=LIST_HINT)


def find(session: Session, ref: str, *, owner: str, sees_all: bool) -> VolumeRecord:
    """The volume ``ref`` names that ``owner`` reaches: an id, ``name`` (``owner``'s own live
    volume) or ``owner/name`` (that owner's live volume). A volume is reached by its owner,
    by everybody when it is public, and by an administrator (``sees_all``); any other is
    ``NotFound`` as one that does not exist. A gone volume is found by its id only."""
    if _ID.match(ref):
        row = session.get(VolumeRecord, ref)
        if row is not None and reaches(row, owner=owner, sees_all=sees_all):
            return row
    if len(ref) > 140:
        raise not_found(ref)
    parsed = parse_ref(ref)
    whose = parsed.owner if parsed.owner is not None else owner
    row = session.scalars(
        select(VolumeRecord).where(
            VolumeRecord.owner == whose, VolumeRecord.live_name == parsed.name
        )
    ).first()
    if row is None or not reaches(row, owner=owner, sees_all=sees_all):
        raise not_found(ref)
    return row


def reaches(row: VolumeRecord, *, owner: str, sees_all: bool) -> bool:
    return sees_all or row.owner == owner or row.public


def mark_gone(row: VolumeRecord, *, error: str | None = None) -> None:
    """The record of a volume that no longer exists: its name is free again; an earlier
    reason is kept."""
    row.state, row.live_name, row.deleted_at = GONE, None, utcnow()
    row.error = error or row.error


class VolumeReach:
    """What every part of the volume service shares: who it acts for, and the rule."""

    engine: Engine
    owner: str
    sees_all: bool
    instances: InstanceService
    _connector: Callable[[str], Connector]

    def _find(self, session: Session, ref: str) -> VolumeRecord:
        return find(session, ref, owner=self.owner, sees_all=self.sees_all)

    def _may_change(self, row: VolumeRecord, what: str, *, hint: str | None = None) -> None:
        """Forbidden, unless the caller owns ``row`` or is an administrator (the caller
        reaches it: it is theirs or public)."""
        if not (self.sees_all or row.owner == self.owner):
            raise Forbidden(
                f"volume {row.owner}/{row.name} is {row.owner}'s: others may read it and attach "
                f"it read-only; only its owner may {what}",
                hint=hint,
            )
