"""Attaching volumes to instances and detaching them: the part of the volume service that
claims attachments in the store before the backend is asked, and says what is where.

Only a running instance the caller reaches is attached to (a stopped one is to be started
first, a gone one is no more; another user's is not found). The claim is made under the
volume's row lock (:mod:`stratuslab.cloud.volume_claims`: one writer or many readers), then
the backend attaches, then the claim is settled; a backend that fails releases the claim.
Detaching asks the backend first and forgets the attachment after. An instance that is gone
holds no volume: its attachments no longer count, wherever they are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from stratuslab.cloud import records, volume_claims
from stratuslab.cloud.base import Mount
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.cloud.volume_records import (
    READY,
    AttachmentOfInstance,
    VolumeReach,
    VolumeView,
)
from stratuslab.cloud.volume_values import DEFAULT_PATH, check_path
from stratuslab.db.models import InstanceRecord
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeAttachmentRecord, VolumeRecord
from stratuslab.errors import Conflict, NotFound

if TYPE_CHECKING:
    from stratuslab.cloud.instances import InstanceView


class VolumeAttachments(VolumeReach):
    """The attachment operations of :class:`~stratuslab.cloud.volumes.VolumeService`."""

    def attach(
        self, ref: str, instance: str, *, path: str | None = None, read_only: bool = False
    ) -> VolumeView:
        """Attach volume ``ref`` to running instance ``instance`` at ``path`` (default
        ``/mnt/<name>``); mounted when this returns. Attaching it again where it is, the same
        way, changes nothing.

        Raises ``NotFound`` for a volume or instance the caller does not reach, ``Forbidden``
        for another user's public volume asked read-write, ``Conflict`` for an instance that
        is not running, a volume on another cloud or not ready, or one attached read-write
        elsewhere (naming where); the backend's error (the claim released).
        """
        # One transaction finds both and claims: the instance's state is the record's (what
        # the backend says is not read again: an instance deleted behind our back fails the
        # backend's attach, which releases the claim), so the only backend calls are the
        # attach's own.
        reach = None if self.instances.sees_all else self.instances.owner
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
            if not read_only:
                self._may_change(row, "attach it read-write", hint="attach it with --read-only")
            label = f"{row.owner}/{row.name}"
            mount = Mount(
                row.backend_name, check_path(path or DEFAULT_PATH.format(name=row.name)), read_only
            )
            target = self._running(records.view_of(records.find(session, instance, owner=reach)))
            if target.cloud != row.cloud:
                raise Conflict(
                    f"volume {label} is on cloud {row.cloud} and instance {target.id} on cloud "
                    f"{target.cloud}: a volume is attached to instances of its own cloud"
                )
            locked = volume_claims.lock(session, row.id)
            claimed = volume_claims.claim(
                session,
                locked,
                instance_id=target.id,
                path=mount.path,
                read_only=read_only,
                label=label,
                viewer=None if self.sees_all else self.owner,
            )
        try:
            self._connector(row.cloud).attach_volume(target.name, mount)
        except Exception as exc:
            if claimed:
                with session_scope(self.engine) as session:
                    volume_claims.release(session, row.id, target.id)
            if isinstance(exc, Conflict):
                raise Conflict(
                    f"attaching volume {label} to instance {target.id} at {mount.path}: {exc}"
                ) from exc
            raise
        with session_scope(self.engine) as session:
            volume_claims.settle(session, row.id, [target.id])
            return self._views(session, [locked])[0]  # its fields are as the claim left them

    def detach(self, ref: str, instance: str) -> VolumeView:
        """Detach volume ``ref`` from ``instance`` (unmounted when this returns); the volume
        and its files are kept. From an instance that is gone it only forgets the attachment.
        ``Conflict`` when it is not attached to that (live) instance."""
        with session_scope(self.engine) as session:
            row = volume_claims.lock(session, self._find(session, ref).id)
            target = records.view_of(self._holder(session, row, instance))
            attachment = session.get(VolumeAttachmentRecord, (row.id, target.id))
            if target.state == InstanceState.GONE.value:
                volume_claims.release(session, row.id, target.id)
                return self._views(session, [row])[0]
            if attachment is None:
                raise Conflict(
                    f"volume {row.owner}/{row.name} is not attached to instance {target.id}"
                )
            was = attachment.state
            attachment.state = volume_claims.DETACHING
        try:
            self._connector(row.cloud).detach_volume(target.name, row.backend_name)
        except Exception:
            with session_scope(self.engine) as session:
                attachment = session.get(VolumeAttachmentRecord, (row.id, target.id))
                if attachment is not None:
                    attachment.state = was
            raise
        with session_scope(self.engine) as session:
            volume_claims.release(session, row.id, target.id)
            return self._views(session, [row])[0]

    def claim_for(
        self, ref: str, *, path: str | None = None, read_only: bool, cloud: str | None = None
    ) -> VolumeClaim:
        """What an instance to be created with volume ``ref`` at ``path`` (default
        ``/mnt/<name>``) carries in its
        ``RunRequest.volumes``: the rights are checked here (own volumes either way, another
        user's public ones read-only: ``Forbidden`` else; private ones ``NotFound``), the
        claim itself is made when the instance service records the instance. With ``cloud``,
        a volume on another cloud is a ``Conflict``."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
            if not read_only:
                self._may_change(row, "attach it read-write", hint="mount it read-only")
        path = check_path(path or DEFAULT_PATH.format(name=row.name))
        label = f"{row.owner}/{row.name}"
        if row.state != READY:
            raise Conflict(f"volume {label} is {row.state}: only a ready volume can be attached")
        if cloud is not None and cloud != row.cloud:
            raise Conflict(
                f"volume {label} is on cloud {row.cloud}, not {cloud}: a volume is attached to "
                "instances of its own cloud"
            )
        return VolumeClaim(row.id, Mount(row.backend_name, path, read_only), label)

    def of_instances(self, instance_ids: Sequence[str]) -> dict[str, list[AttachmentOfInstance]]:
        """Per instance of ``instance_ids`` that the caller reaches and that is not gone (a gone
        one holds no volume), the volumes attached to it, by path. One query for them all."""
        if not instance_ids:
            return {}
        query = (
            select(VolumeAttachmentRecord, VolumeRecord.owner, VolumeRecord.name)
            .join(VolumeRecord, VolumeRecord.id == VolumeAttachmentRecord.volume_id)
            .join(InstanceRecord, InstanceRecord.id == VolumeAttachmentRecord.instance_id)
            .where(
                VolumeAttachmentRecord.instance_id.in_(sorted(set(instance_ids))),
                InstanceRecord.state != InstanceState.GONE.value,
            )
            .order_by(VolumeAttachmentRecord.instance_id, VolumeAttachmentRecord.path)
        )
        if not self.sees_all:
            query = query.where(InstanceRecord.owner == self.owner)
        with session_scope(self.engine) as session:
            rows = session.execute(query).all()
        found: dict[str, list[AttachmentOfInstance]] = {}
        for attachment, owner, name in rows:
            found.setdefault(attachment.instance_id, []).append(
                AttachmentOfInstance(
                    f"{owner}/{name}",
                    attachment.volume_id,
                    attachment.path,
                    attachment.read_only,
                    attachment.state,
                )
            )
        return found

    def _holder(self, session: Session, volume: VolumeRecord, ref: str) -> InstanceRecord:
        """The instance ``ref`` a volume is detached from: one the caller reaches, or, for the
        volume's owner (and administrators), any instance the volume is attached to (another
        user attaching her public volume must not keep her from detaching and deleting it).
        Any other instance is not found, as everywhere."""
        reach = None if self.instances.sees_all else self.instances.owner
        try:
            return records.find(session, ref, owner=reach)
        except NotFound as hidden:
            if volume.owner != self.owner:
                raise
            found = records.find(session, ref, owner=None)
            if session.get(VolumeAttachmentRecord, (volume.id, found.id)) is None:
                raise hidden from None
            return found

    @staticmethod
    def _running(view: InstanceView) -> InstanceView:
        if view.state == InstanceState.RUNNING.value:
            return view
        if view.state == InstanceState.STOPPED.value:
            raise Conflict(
                f"instance {view.id} is stopped: start it",
                hint=f"stratus instance start {view.id}",
            )
        if view.state == InstanceState.GONE.value:
            raise Conflict(
                f"instance {view.id} is gone: volumes are attached to running instances",
                hint="start a new one with `stratus instance run`",
            )
        raise Conflict(f"instance {view.id} is {view.state}: volumes are attached to running ones")
