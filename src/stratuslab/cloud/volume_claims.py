"""Attachments claimed in the store before the backend is asked to attach anything.

The rule a shared volume keeps: one writer or many readers. A volume attached read-write to an
instance is attached nowhere else; a volume attached read-only anywhere is attached read-write
nowhere. An attachment counts while its instance is not gone: an instance destroyed (by us, by
its run's teardown, or behind our back) no longer holds its volumes, and the attachment record
left behind is dropped by the next claim that meets it.

A claim is made holding the volume's row lock: its first statement writes the volume's row,
which on PostgreSQL locks it until the transaction ends and on SQLite takes the database's
write lock (this process's transactions queue before that, see ``db.session``). So two
attaches racing for one volume are decided one after the other, and the second sees the first.
The functions take the session the caller holds, so that the caller decides what one
transaction is (the instance service claims a run's volumes in the transaction that records
its instances).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from stratuslab.cloud.base import Mount
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import InstanceRecord, utcnow
from stratuslab.db.volume_models import VolumeAttachmentRecord, VolumeRecord
from stratuslab.errors import Conflict, NotFound

ATTACHING, ATTACHED, DETACHING = "attaching", "attached", "detaching"
READY = "ready"


@dataclass(frozen=True)
class VolumeClaim:
    """A volume an instance is to be created with: its record's id and how it is mounted (the
    mount names the volume's backend name)."""

    volume_id: str
    mount: Mount
    label: str  # how users name it, for messages: "alice/pgdata"


class RunRequestLike(Protocol):
    @property
    def volumes(self) -> tuple[VolumeClaim, ...]: ...


@dataclass(frozen=True)
class Holder:
    """An instance a volume is attached to, as a claim meets it."""

    instance_id: str
    instance_name: str
    path: str
    read_only: bool
    state: str
    owner: str  # the instance's

    def describe(self, viewer: str | None = None, volume_owner: str | None = None) -> str:
        """Where it is, to ``viewer`` (None: one who sees everything). Another user's instance
        is named only to the volume's owner: who else holds a public volume, and where, is
        not its readers' business."""
        mode = "read-only" if self.read_only else "read-write"
        if viewer is not None and viewer not in (self.owner, volume_owner):
            return f"an instance of another user ({mode})"
        return f"{self.instance_id} at {self.path} ({mode})"


def lock(session: Session, volume_id: str) -> VolumeRecord:
    """The volume's record, its row locked until the transaction ends (``NotFound`` when
    there is no such record)."""
    session.execute(
        update(VolumeRecord).where(VolumeRecord.id == volume_id).values(updated_at=utcnow())
    )
    row = session.get(VolumeRecord, volume_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no volume {volume_id}")
    return row


def holders(session: Session, volume_id: str) -> list[Holder]:
    """The live instances ``volume_id`` is attached to (or being attached to), by instance
    id; records whose instance is gone (or was never recorded) are deleted."""
    rows = session.execute(
        select(
            VolumeAttachmentRecord, InstanceRecord.name, InstanceRecord.state, InstanceRecord.owner
        )
        .outerjoin(InstanceRecord, InstanceRecord.id == VolumeAttachmentRecord.instance_id)
        .where(VolumeAttachmentRecord.volume_id == volume_id)
        .order_by(VolumeAttachmentRecord.instance_id)
    ).all()
    found, stale = [], []
    for attachment, name, state, whose in rows:
        if name is None or state == InstanceState.GONE.value:
            stale.append(attachment.instance_id)
            continue
        found.append(
            Holder(
                attachment.instance_id,
                name,
                attachment.path,
                attachment.read_only,
                attachment.state,
                whose,
            )
        )
    if stale:
        session.execute(
            delete(VolumeAttachmentRecord).where(
                VolumeAttachmentRecord.volume_id == volume_id,
                VolumeAttachmentRecord.instance_id.in_(stale),
            )
        )
    return found


def claim(
    session: Session,
    volume: VolumeRecord,
    *,
    instance_id: str,
    path: str,
    read_only: bool,
    label: str,
    pending_instance: bool = False,
    viewer: str | None = None,
) -> bool:
    """Record that ``volume`` is being attached to ``instance_id`` at ``path``; whether there
    was anything to record (False: it is attached there already, at that path and mode).

    Call it after :func:`lock`. Raises ``Conflict`` naming where the volume is attached when
    the one-writer rule refuses it, when it is attached to that instance at another path or
    mode, and when the volume is not ready (being created, deleted, or gone); another
    user's instance is named in it only when ``viewer`` (the caller; None for one who sees
    everything) owns the volume. With ``pending_instance`` the instance is being recorded in
    the same transaction (a run's node instance): its record does not exist yet.
    """
    if volume.state != READY:
        raise Conflict(f"volume {label} is {volume.state}: only a ready volume can be attached")
    found = holders(session, volume.id)
    if pending_instance:
        found = [h for h in found if h.instance_id != instance_id]
    mine = next((h for h in found if h.instance_id == instance_id), None)
    if mine is not None:
        if (mine.path, mine.read_only) == (path, read_only) and mine.state != DETACHING:
            return False
        raise Conflict(
            f"volume {label} is attached to instance {mine.describe(viewer, volume.owner)} already"
        )
    others = [h for h in found if h.instance_id != instance_id]
    writers = [h for h in others if not h.read_only]
    if writers or (others and not read_only):
        where = "; ".join(h.describe(viewer, volume.owner) for h in (writers or others)[:5])
        raise Conflict(
            f"volume {label} is attached to {where}: a volume attached read-write is attached "
            "nowhere else",
            hint=f"detach it first (stratus volume detach {label} INSTANCE), or attach it "
            "read-only where every attachment is read-only",
        )
    # A record of this instance's left behind by a gone one (ids are not reused, but a record
    # whose instance was never recorded is) was deleted by holders(): the key is free.
    session.add(
        VolumeAttachmentRecord(
            volume_id=volume.id,
            instance_id=instance_id,
            path=path,
            read_only=read_only,
            state=ATTACHING,
        )
    )
    session.flush()
    return True


def claim_volumes(
    session: Session,
    request: RunRequestLike,
    instances: Sequence[Mapping[str, Any]],
    *,
    viewer: str | None,
) -> Conflict | None:
    """Claim ``request``'s volumes for each of ``instances`` (the records about to be made, by
    their values): None when every claim holds, else the first refusal, with no claim of
    theirs left behind."""
    made: list[tuple[str, str]] = []
    try:
        for values in instances:
            for wanted in request.volumes:
                volume = lock(session, wanted.volume_id)
                if claim(
                    session,
                    volume,
                    instance_id=values["id"],
                    path=wanted.mount.path,
                    read_only=wanted.mount.read_only,
                    label=wanted.label,
                    pending_instance=True,
                    viewer=viewer,
                ):
                    made.append((wanted.volume_id, values["id"]))
    except (Conflict, NotFound) as exc:
        for volume_id, instance_id in made:
            release(session, volume_id, instance_id)
        return exc if isinstance(exc, Conflict) else Conflict(str(exc))
    return None


def settle(session: Session, volume_id: str, instance_ids: Sequence[str]) -> None:
    """Mark the attachments of ``volume_id`` to ``instance_ids`` attached (the backend did)."""
    if instance_ids:
        session.execute(
            update(VolumeAttachmentRecord)
            .where(
                VolumeAttachmentRecord.volume_id == volume_id,
                VolumeAttachmentRecord.instance_id.in_(list(instance_ids)),
            )
            .values(state=ATTACHED)
        )


def settle_instances(session: Session, instance_ids: Sequence[str]) -> None:
    """Mark every attachment of ``instance_ids`` attached: they were created with them."""
    session.execute(
        update(VolumeAttachmentRecord)
        .where(
            VolumeAttachmentRecord.instance_id.in_(list(instance_ids)),
            VolumeAttachmentRecord.state == ATTACHING,
        )
        .values(state=ATTACHED)
    )


def release(session: Session, volume_id: str, instance_id: str) -> None:
    """Forget the attachment of ``volume_id`` to ``instance_id`` (the backend detached it, or
    never attached it)."""
    session.execute(
        delete(VolumeAttachmentRecord).where(
            VolumeAttachmentRecord.volume_id == volume_id,
            VolumeAttachmentRecord.instance_id == instance_id,
        )
    )
