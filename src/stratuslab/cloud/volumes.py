"""The volume service: persistent volumes users (and runs) create, attach, detach and delete,
recorded before the backend is asked and reconciled with it.

Every volume is recorded (``pending``) before the backend is asked to create it, under a name
derived from its id (``stratus-vol-<hex>``, never the user's name) and with tags naming its id,
owner, name and run, so that whatever a crash leaves is resolved by :meth:`reconcile`. A
backend that fails leaves nothing behind: what it made is deleted and the record is ``gone``
with the reason. Attachments are claimed in the store before the backend attaches anything
(:mod:`stratuslab.cloud.volume_claims`: one writer or many readers, decided under the
volume's row lock), so two attaches racing for one volume cannot both win.

Who may do what is decided here, not in routes (:mod:`stratuslab.cloud.volume_records`):
another user's private volume is not found, with the words of a volume that does not exist;
another user's public volume is read (shown, listed, its snapshots listed, cloned) and attached
read-only, and anything else asked of it is ``Forbidden``. Sizes are charged against the
owner's storage quota (``storage_gib``) in the transaction that records them.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stratuslab.cloud import volume_claims
from stratuslab.cloud.base import Connector, VolumeSpec
from stratuslab.cloud.clouds import DEFAULT_CLOUD, all_clouds
from stratuslab.cloud.holdings import Amount
from stratuslab.cloud.quotas import Quotas, bindings, lock, subject_of
from stratuslab.cloud.types import Capability
from stratuslab.cloud.volume_attachments import VolumeAttachments
from stratuslab.cloud.volume_reconcile import VolumeReconcileReport, reconcile_cloud
from stratuslab.cloud.volume_records import (
    DELETING,
    ERROR,
    GONE,
    PENDING,
    READY,
    VolumeView,
    backend_name_of,
    mark_gone,
    new_id,
    views_of,
)
from stratuslab.cloud.volume_snapshots import VolumeSnapshots
from stratuslab.cloud.volume_values import check_name, gib_of, parse_size
from stratuslab.db.session import session_scope
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.errors import (
    CapacityExceeded,
    Conflict,
    Invalid,
    NotFound,
    NotSupported,
    StratusError,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from stratuslab.cloud.instances import InstanceService

__all__ = [
    "MAX_DESCRIPTION",
    "MAX_VOLUMES",
    "VolumeReconcileReport",
    "VolumeService",
    "VolumeView",
]

log = logging.getLogger(__name__)
MAX_VOLUMES = 100  # live volumes one user holds on all clouds: each is a filesystem on the pool
MAX_DESCRIPTION = 1000  # characters


class VolumeService(VolumeAttachments, VolumeSnapshots):
    """Volumes of one owner (``owner``), and everybody's public ones; every volume for an
    administrator (``sees_all``). ``instances`` is the instance service acting for the same
    caller: an instance it does not reach is not found here either."""

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str,
        connectors: Callable[[str], Connector],
        instances: InstanceService,
        quotas: Quotas | None = None,
        sees_all: bool = False,
        max_volumes: int = MAX_VOLUMES,
        max_snapshots: int = 32,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.instances = instances
        self.quotas = quotas
        self.sees_all = sees_all
        self.max_volumes = max_volumes
        self.max_snapshots = max_snapshots
        self._connector = connectors

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        size_bytes: int | None = None,
        cloud: str = DEFAULT_CLOUD,
        public: bool = False,
        description: str = "",
        source: str | None = None,
        run_id: str | None = None,
    ) -> VolumeView:
        """Create volume ``name`` of ``size_bytes`` on ``cloud``, empty or, with ``source``
        (``"owner/vol"``, ``"vol"``, or ``".../snapshot"``), a copy of that volume or snapshot
        at least as large as it (its size when ``size_bytes`` is None).

        Raises ``Invalid`` (name, size, description), ``NotFound`` (cloud, source),
        ``NotSupported`` (a cloud without volumes), ``Conflict`` (a live volume of that name),
        ``CapacityExceeded`` (storage quota, volumes per user) before anything is recorded;
        the backend's error after, with the record gone and nothing left on the backend.
        """
        check_name(name)
        if len(description) > MAX_DESCRIPTION:
            raise Invalid(f"description: at most {MAX_DESCRIPTION} characters")
        if run_id is not None and not 0 < len(run_id) <= 36:
            raise Invalid("run id: 1 to 36 characters")
        connector = self._connector(cloud)
        if Capability.VOLUMES not in connector.capabilities:
            raise NotSupported(
                f"cloud {cloud} ({connector.kind} connector) has no volumes",
                hint="create the volume on a cloud whose connector has volumes (LXD)",
            )
        origin = self.resolve_source(source, cloud) if source is not None else None
        if size_bytes is None and origin is None:
            raise Invalid("size: give a size, such as 2GiB, for a volume made from nothing")
        size = parse_size(size_bytes) if size_bytes is not None else 0
        if origin is not None:
            size = max(size, origin.size_bytes)
        volume_id = new_id()
        backend = backend_name_of(volume_id)
        try:
            with session_scope(self.engine) as session:
                self._lock_subjects(session, self.owner)
                self._charge(session, self.owner, cloud, gib_of(size))
                self._check_room(session, name)
                session.add(
                    VolumeRecord(
                        id=volume_id,
                        owner=self.owner,
                        name=name,
                        live_name=name,
                        cloud=cloud,
                        backend_name=backend,
                        size_bytes=size,
                        public=public,
                        description=description,
                        state=PENDING,
                        source=origin.label if origin is not None else None,
                        run_id=run_id,
                    )
                )
        except IntegrityError as exc:  # a racing create of the same name won
            raise _name_taken(name) from exc
        tags = {"id": volume_id, "owner": self.owner, "name": name}
        if run_id is not None:
            tags["run"] = run_id
        if public:
            tags["public"] = "true"
        spec = VolumeSpec(
            backend, size, tags, source=origin.backend_source if origin is not None else None
        )
        try:
            made = connector.create_volume(spec)
        except Exception as exc:
            self._undo_create(connector, volume_id, backend, exc)
            raise
        with session_scope(self.engine) as session:
            row = session.get_one(VolumeRecord, volume_id)
            if row.state == PENDING:
                row.state, row.size_bytes = READY, made.size_bytes
            return views_of(session, [row])[0]

    # -- queries --------------------------------------------------------------------------

    def get(self, ref: str) -> VolumeView:
        """Volume ``ref`` (an id, ``name``, or ``owner/name``); a ready one is checked on the
        backend (one deleted behind our back is recorded gone)."""
        with session_scope(self.engine) as session:
            row = self._find(session, ref)
            view = views_of(session, [row])[0]
        if view.state != READY:
            return view
        try:
            found = self._connector(view.cloud).get_volume(row.backend_name)
        except NotFound:
            return self._vanished(view.id)
        except StratusError as exc:  # the backend does not answer: what the store says stands
            log.warning("checking volume %s on %s: %s", view.id, view.cloud, exc)
            return view
        if found.size_bytes != view.size_bytes:
            with session_scope(self.engine) as session:
                row = session.get_one(VolumeRecord, view.id)
                row.size_bytes = found.size_bytes
                return views_of(session, [row])[0]
        return view

    def list(
        self, *, public: bool = False, all_owners: bool = False, reconcile: bool = True
    ) -> list[VolumeView]:
        """The owner's volumes that are not gone; with ``public`` everybody's public ones as
        well; with ``all_owners`` (administrators) every owner's. Each cloud with volumes is
        reconciled first (one that cannot be listed is left as the store has it)."""
        if reconcile:
            for cloud in all_clouds(self.engine):
                try:
                    self.reconcile(cloud.name)
                except StratusError as exc:
                    log.warning("reconciling the volumes of %s: %s", cloud.name, exc)
        with session_scope(self.engine) as session:
            query = select(VolumeRecord).where(VolumeRecord.state != GONE)
            if not (all_owners and self.sees_all):
                mine = VolumeRecord.owner == self.owner
                query = query.where(or_(mine, VolumeRecord.public) if public else mine)
            rows = session.scalars(query.order_by(VolumeRecord.owner, VolumeRecord.name)).all()
            return views_of(session, rows)

    def for_run(self, run_id: str) -> builtins.list[VolumeView]:
        """The volumes run ``run_id`` made, gone ones too."""
        with session_scope(self.engine) as session:
            query = select(VolumeRecord).where(VolumeRecord.run_id == run_id)
            if not self.sees_all:
                query = query.where(VolumeRecord.owner == self.owner)
            return views_of(session, session.scalars(query.order_by(VolumeRecord.name)).all())

    # -- change ---------------------------------------------------------------------------

    def delete(self, ref: str) -> VolumeView:
        """Delete volume ``ref`` and its snapshots; deleting one that is gone changes nothing.
        ``Conflict`` naming the instances while it is attached to any (nothing is deleted)."""
        with session_scope(self.engine) as session:
            found = self._find(session, ref)
            self._may_change(found, "delete it")
            if found.state == GONE:
                return views_of(session, [found])[0]
            row = volume_claims.lock(session, found.id)
            label = f"{row.owner}/{row.name}"
            if row.state == PENDING:
                raise Conflict(f"volume {label} is being created", hint="try again in a moment")
            holders = volume_claims.holders(session, row.id)
            if holders:
                where = "; ".join(
                    f"instance {h.instance_name} ({h.instance_id}) at {h.path}" for h in holders[:5]
                )
                raise Conflict(
                    f"volume {label} is attached to {where}: detach it before deleting it",
                    hint=f"stratus volume detach {label} {holders[0].instance_id}",
                )
            row.state = DELETING
        try:
            self._connector(row.cloud).delete_volume(row.backend_name)
        except StratusError as exc:
            with session_scope(self.engine) as session:
                failed = session.get_one(VolumeRecord, row.id)
                failed.state, failed.error = ERROR, f"not deleted: {exc}"
            raise
        with session_scope(self.engine) as session:
            gone = session.get_one(VolumeRecord, row.id)
            gone.error = None
            mark_gone(gone)
            return views_of(session, [gone])[0]

    def delete_for_run(self, run_id: str) -> builtins.list[str]:
        """Delete every volume run ``run_id`` made (its teardown): the ids deleted now. Those
        gone already are skipped; when one cannot be deleted the others still are and the
        first failure is raised at the end, so that the teardown tries again."""
        deleted: builtins.list[str] = []
        failures: builtins.list[StratusError] = []
        for view in self.for_run(run_id):
            if view.state == GONE:
                continue
            try:
                self.delete(view.id)
            except StratusError as exc:
                failures.append(exc)
                continue
            deleted.append(view.id)
        if failures:
            raise failures[0]
        return deleted

    def resize(self, ref: str, *, size_bytes: int) -> VolumeView:
        """Set volume ``ref``'s size, attached or not. A larger size is charged against the
        owner's storage quota first (``CapacityExceeded``, nothing changed); shrinking below
        what its files take is the backend's ``Conflict``."""
        size = parse_size(size_bytes)
        with session_scope(self.engine) as session:
            found = self._find(session, ref)
            self._may_change(found, "resize it")
            self._lock_subjects(session, found.owner)
            row = volume_claims.lock(session, found.id)
            label = f"{row.owner}/{row.name}"
            if row.state != READY:
                raise Conflict(f"volume {label} is {row.state}: only a ready volume is resized")
            old = row.size_bytes
            self._charge(session, row.owner, row.cloud, gib_of(size) - gib_of(old))
            row.size_bytes = size  # recorded first, so that what races with it counts it
        try:
            made = self._connector(row.cloud).resize_volume(row.backend_name, size)
        except Exception as exc:
            with session_scope(self.engine) as session:
                back = session.get_one(VolumeRecord, row.id)
                if back.size_bytes == size:
                    back.size_bytes = old
            if isinstance(exc, Conflict):
                raise Conflict(f"resizing volume {label}: {exc}") from exc
            raise
        with session_scope(self.engine) as session:
            resized = session.get_one(VolumeRecord, row.id)
            resized.size_bytes = made.size_bytes
            return views_of(session, [resized])[0]

    # -- reconciliation -------------------------------------------------------------------

    def reconcile(self, cloud: str) -> VolumeReconcileReport:
        """Bring the store's volumes of ``cloud`` in line with the backend's (see
        :mod:`stratuslab.cloud.volume_reconcile`); nothing for a cloud without volumes."""
        connector = self._connector(cloud)
        if Capability.VOLUMES not in connector.capabilities:
            return VolumeReconcileReport()
        return reconcile_cloud(self.engine, cloud, connector)

    # -- helpers --------------------------------------------------------------------------

    def _lock_subjects(self, session: Session, owner: str) -> None:
        """Hold, until the transaction ends, the locks of every quota subject that binds
        ``owner`` (the owner's own always: it guards the count of their volumes too), taken
        in one order as the quota check takes them."""
        subjects = {subject_of(user=owner)}
        if self.quotas is not None:
            subjects |= {b.lock_subject for b in bindings(session, owner)}
        lock(session, subjects)

    def _charge(self, session: Session, owner: str, cloud: str, gib: int) -> None:
        if self.quotas is not None and gib > 0:
            self.quotas.enforce(session, owner, {cloud: Amount(storage_gib=gib)})

    def _check_room(self, session: Session, name: str) -> None:
        live = select(func.count()).where(
            VolumeRecord.owner == self.owner, VolumeRecord.state != GONE
        )
        held = int(session.scalar(live) or 0)
        if held >= self.max_volumes:
            raise CapacityExceeded(
                f"{self.owner} holds {held} volumes, the most a user may hold",
                hint="delete one you no longer need (stratus volume list)",
            )
        taken = select(VolumeRecord.id).where(
            VolumeRecord.owner == self.owner, VolumeRecord.live_name == name
        )
        if session.scalar(taken) is not None:
            raise _name_taken(name)

    def _undo_create(
        self, connector: Connector, volume_id: str, backend: str, exc: BaseException
    ) -> None:
        """What a failed create leaves: nothing on the backend (what it made is deleted),
        and the record gone with the reason (in error, while a remnant could not be deleted).
        A Conflict means another volume has the backend name: not ours to delete."""
        remnant = None
        if not isinstance(exc, Conflict):
            try:
                connector.delete_volume(backend)
            except StratusError as failure:
                remnant = failure
        with session_scope(self.engine) as session:
            row = session.get_one(VolumeRecord, volume_id)
            if remnant is None:
                mark_gone(row, error=f"not created: {exc}")
            else:
                row.state = ERROR
                row.error = f"not created: {exc}; what was made is left: {remnant}"

    def _vanished(self, volume_id: str) -> VolumeView:
        with session_scope(self.engine) as session:
            row = session.get_one(VolumeRecord, volume_id)
            if row.state != GONE:
                mark_gone(row, error="deleted outside StratusLab")
            return views_of(session, [row])[0]


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"you have a volume called {name!r} already",
        hint="choose another name, or delete that one (stratus volume delete)",
    )
