"""Reconciliation of volumes: bring the store in line with what a backend has, both ways.

A recorded volume the backend lost becomes gone ("deleted outside StratusLab"); a backend
volume carrying our tags (``id``, ``owner``, ``name``) that the store lacks is recorded again
from them (``recovered``); a pending record older than ``PENDING_GRACE`` becomes ready when its
volume exists (the process that made it died before saying so) and gone ("never created") when
it does not; a record wrongly gone whose volume exists is shown again. A record changed after
the listing was taken is left alone, as for instances (:mod:`stratuslab.cloud.reconcile`):
the listing cannot speak for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stratuslab.cloud.base import Connector, Volume
from stratuslab.cloud.volume_records import DELETING, GONE, PENDING, READY, mark_gone
from stratuslab.db.models import utcnow
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord

PENDING_GRACE = timedelta(minutes=1)  # a pending record this young may still be being created
_TAGS = ("id", "owner", "name")


@dataclass(frozen=True)
class VolumeReconcileReport:
    """What one reconciliation changed, by volume id."""

    vanished: list[str] = field(default_factory=list)  # recorded, lost by the backend: gone
    recovered: list[str] = field(default_factory=list)  # on the backend, lost by the store
    settled: list[str] = field(default_factory=list)  # pending, found: ready
    failed: list[str] = field(default_factory=list)  # pending, never made: gone
    reappeared: list[str] = field(default_factory=list)  # recorded gone, still there

    @property
    def changed(self) -> bool:
        return any((self.vanished, self.recovered, self.settled, self.failed, self.reappeared))


def reconcile_cloud(engine: Engine, cloud: str, connector: Connector) -> VolumeReconcileReport:
    """List ``cloud``'s volumes and apply the listing to the store in one transaction."""
    listed_at = utcnow()  # what changes after this, the listing cannot speak for
    listing = connector.list_volumes()
    backend = {v.tags["id"]: v for v in listing if v.tags.get("id")}
    report = VolumeReconcileReport()
    with session_scope(engine) as session:
        rows = {
            row.id: row
            for row in session.scalars(
                select(VolumeRecord).where(
                    VolumeRecord.cloud == cloud,
                    or_(VolumeRecord.state != GONE, VolumeRecord.id.in_(sorted(backend))),
                )
            )
        }
        now = utcnow()
        for row in list(rows.values()):
            if row.updated_at > listed_at:
                del rows[row.id]  # changed since the listing: the next one will judge it
                backend.pop(row.id, None)
        for row in rows.values():
            if row.id in backend or row.state == GONE:
                continue
            if row.state == PENDING:
                if now - row.created_at >= PENDING_GRACE:
                    mark_gone(row, error="never created")
                    report.failed.append(row.id)
                continue
            mark_gone(row, error=None if row.state == DELETING else "deleted outside StratusLab")
            report.vanished.append(row.id)
        for volume_id, volume in backend.items():
            found = rows.get(volume_id)
            if found is None:
                recoverable = all(volume.tags.get(t) for t in _TAGS)
                if recoverable and session.get(VolumeRecord, volume_id) is None:
                    _recover(session, cloud, volume)
                    report.recovered.append(volume_id)
            elif found.state == PENDING and now - found.created_at >= PENDING_GRACE:
                found.state, found.size_bytes = READY, volume.size_bytes
                report.settled.append(volume_id)
            elif found.state == GONE:
                found.state, found.deleted_at = READY, None
                found.live_name = _free_name(session, found.owner, found.name)
                found.error = f"recorded as gone but still exists ({found.error})"
                report.reappeared.append(volume_id)
            elif found.state == READY and found.size_bytes != volume.size_bytes:
                found.size_bytes = volume.size_bytes
    return report


def _recover(session: Session, cloud: str, volume: Volume) -> None:
    """A record for a tagged volume the store lost, from its tags."""
    owner, name = volume.tags["owner"][:64], volume.tags["name"][:63]
    live_name = _free_name(session, owner, name)
    session.add(
        VolumeRecord(
            id=volume.tags["id"][:32],
            owner=owner,
            name=name,
            live_name=live_name,
            cloud=cloud,
            backend_name=volume.name,
            size_bytes=volume.size_bytes,
            public=volume.tags.get("public") == "true",
            description="",
            state=READY,
            run_id=volume.tags.get("run"),
            recovered=True,
            error=None
            if live_name is not None
            else f"recovered; {owner} has another volume called {name!r}: reach this one by id",
            created_at=volume.created_at or utcnow(),
        )
    )
    session.flush()


def _free_name(session: Session, owner: str, name: str) -> str | None:
    """``name`` when ``owner`` has no live volume of that name; None when one has it."""
    taken = select(VolumeRecord.id).where(
        VolumeRecord.owner == owner, VolumeRecord.live_name == name
    )
    return None if session.scalar(taken) is not None else name
