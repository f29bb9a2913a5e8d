"""Snapshots of volumes, and the sources clones are made from: the part of the volume service
that reads and writes a volume's saved states.

A snapshot lives with its volume on the backend and goes with it (LXD deletes them together),
so the store records none: the volume's record, with its tags on the backend, is what keeps
it tracked. What the service adds to the connector's operations: the rights (the owner, or an
administrator, takes, restores and deletes them; anybody who reaches a public volume lists
them and clones from them), names that are safe on every backend (as instance snapshots'), a
bound on how many a volume holds, and no restore under a running instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from stratuslab.cloud import volume_claims
from stratuslab.cloud.snapshots import check_name as check_snapshot_name
from stratuslab.cloud.snapshots import default_name
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_records import (
    READY,
    VolumeReach,
    VolumeSnapshotView,
    VolumeView,
    not_found,
)
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.errors import CapacityExceeded, Conflict, Invalid, NotFound

_LOCKS = [threading.Lock() for _ in range(16)]  # one volume's count and take, one at a time


@dataclass(frozen=True)
class Origin:
    """What a clone is made from: a volume, or one of its snapshots."""

    volume_id: str
    label: str  # "alice/base" or "alice/base/snap1", as the clone records it
    backend_source: str  # the backend's "stratus-vol-…" or "stratus-vol-…/snap1"
    size_bytes: int


class VolumeSnapshots(VolumeReach):
    """The snapshot operations of :class:`~stratuslab.cloud.volumes.VolumeService`."""

    max_snapshots: int

    if TYPE_CHECKING:

        def get(self, ref: str) -> VolumeView: ...

    def snapshot(self, ref: str, name: str | None = None) -> VolumeSnapshotView:
        """Snapshot volume ``ref`` (attached or not) as ``name`` (default: the time, UTC).

        Raises ``NotFound`` for a volume the caller does not reach, ``Forbidden`` for another
        user's public one, ``Conflict`` for one not ready or a name it has already,
        ``CapacityExceeded`` when it holds ``max_snapshots`` (nothing is taken then)."""
        name = check_snapshot_name(name) if name is not None else default_name()
        row = self._changing(ref, "snapshot it")
        label = f"{row.owner}/{row.name}"
        connector = self._connector(row.cloud)
        with _LOCKS[hash(row.id) % len(_LOCKS)]:
            held = connector.list_volume_snapshots(row.backend_name)
            if len(held) >= self.max_snapshots:
                raise CapacityExceeded(
                    f"volume {label} has {len(held)} snapshots, the most a volume may hold",
                    hint=f"delete one: stratus volume snapshot delete {label} {held[0].name}",
                )
            try:
                made = connector.create_volume_snapshot(row.backend_name, name)
            except Conflict as exc:
                raise Conflict(f"volume {label} has a snapshot called {name!r}") from exc
        return VolumeSnapshotView(label, row.id, made.name, made.created_at)

    def snapshots(self, ref: str) -> list[VolumeSnapshotView]:
        """Volume ``ref``'s snapshots, oldest first (none for a volume that is not ready:
        a gone one's went with it)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
        if row.state != READY:
            return []
        label = f"{row.owner}/{row.name}"
        found = self._connector(row.cloud).list_volume_snapshots(row.backend_name)
        return [VolumeSnapshotView(label, row.id, s.name, s.created_at) for s in found]

    def restore(self, ref: str, snapshot: str) -> VolumeView:
        """Put volume ``ref``'s files back as they were at ``snapshot`` (kept); the volume as
        it is after. ``Conflict`` naming the instances while it is attached to a running one;
        ``NotFound`` for a snapshot it does not have."""
        check_snapshot_name(snapshot)
        row = self._changing(ref, "restore it")
        label = f"{row.owner}/{row.name}"
        with session_scope(self.engine) as session:
            holders = volume_claims.holders(session, row.id)
            states = dict(
                session.execute(
                    select(InstanceRecord.id, InstanceRecord.state).where(
                        InstanceRecord.id.in_([h.instance_id for h in holders])
                    )
                ).all()
            )
        running = [h for h in holders if states.get(h.instance_id) != InstanceState.STOPPED.value]
        if running:
            where = ", ".join(f"{h.instance_name} ({h.instance_id})" for h in running[:5])
            raise Conflict(
                f"volume {label} is attached to running instance {where}: restoring would change "
                "files under it",
                hint=f"detach it first (stratus volume detach {label} {running[0].instance_id})",
            )
        connector = self._connector(row.cloud)
        try:
            connector.restore_volume_snapshot(row.backend_name, snapshot)
        except NotFound as exc:
            raise NotFound(
                f"volume {label} has no snapshot called {snapshot!r}",
                hint=f"see `stratus volume snapshot list {label}`",
            ) from exc
        except Conflict as exc:
            raise Conflict(f"restoring volume {label}: {exc}") from exc
        return self.get(row.id)

    def delete_snapshot(self, ref: str, snapshot: str) -> None:
        """Delete volume ``ref``'s snapshot ``snapshot``; deleting one that is gone succeeds."""
        check_snapshot_name(snapshot)
        row = self._changing(ref, "delete its snapshots")
        self._connector(row.cloud).delete_volume_snapshot(row.backend_name, snapshot)

    def resolve_source(self, source: str, cloud: str) -> Origin:
        """What ``source`` names to clone on ``cloud``: ``owner/vol/snapshot``, ``owner/vol``
        (or, when the caller reaches no such volume, ``vol/snapshot`` of their own), or
        ``vol``. Own volumes and public ones may be cloned; ``NotFound`` as anywhere else."""
        parts = source.split("/")
        if len(parts) > 3 or len(source) > 200:
            raise Invalid(f"source {source[:80]!r}: write VOLUME, OWNER/VOLUME or .../SNAPSHOT")
        choices: list[tuple[str, str | None]]
        if len(parts) == 1:
            choices = [(source, None)]
        elif len(parts) == 3:
            choices = [("/".join(parts[:2]), parts[2])]
        else:
            choices = [(source, None), (parts[0], parts[1])]
        row: VolumeRecord | None = None
        snapshot: str | None = None
        with session_scope(self.engine) as session:
            for ref, wanted in choices:
                try:
                    row = self._find(session, ref)
                except NotFound:
                    continue
                snapshot = wanted
                break
        if row is None:
            raise not_found(source)
        label = f"{row.owner}/{row.name}"
        if row.state != READY:
            raise Conflict(f"volume {label} is {row.state}: only a ready volume is cloned")
        if row.cloud != cloud:
            raise Invalid(
                f"volume {label} is on cloud {row.cloud}: a clone is made on its source's cloud",
                hint=f"give --cloud {row.cloud}",
            )
        if snapshot is None:
            return Origin(row.id, label, row.backend_name, row.size_bytes)
        held = self._connector(row.cloud).list_volume_snapshots(row.backend_name)
        if snapshot not in {s.name for s in held}:
            raise NotFound(
                f"volume {label} has no snapshot called {snapshot[:80]!r}",
                hint=f"see `stratus volume snapshot list {label}`",
            )
        return Origin(
            row.id, f"{label}/{snapshot}", f"{row.backend_name}/{snapshot}", row.size_bytes
        )

    def _changing(self, ref: str, what: str) -> VolumeRecord:
        """Volume ``ref``, which the caller may change, and which is ready."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
            self._may_change(row, what)
        if row.state != READY:
            raise Conflict(f"volume {row.owner}/{row.name} is {row.state}: it must be ready")
        return row
