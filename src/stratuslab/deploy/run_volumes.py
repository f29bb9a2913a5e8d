"""The volumes of a run: bound ones checked when the run is created, fresh ones made before
their node instance's machine and deleted at teardown.

A node's plan lists the volumes its instances are created with (``deploy/plan_volumes.py``).
When the run is created, each bound volume is looked up as the run's owner reaches it, through
the volume service: one that does not exist, another user's private one (the same words), one
on another cloud than the node's, one not ready, or a public one bound read-write refuses the
run, naming the node, before anything is recorded; the plan then keeps its owner/name and id.

When a node instance is provisioned, its fresh volumes are made first, by the volume service,
which records each (with the run's id) before the backend has it, so that a server killed
mid-provisioning leaves none that teardown cannot find; one made by an earlier attempt is
taken up again. Then every volume of the instance is claimed for it in its ``RunRequest``
(the claim itself is made by the instance service, in the transaction that records the
instance: a bound volume attached read-write elsewhere fails that node instance's
provisioning, with the conflict's words). Teardown deletes the run's fresh volumes once its
instances are gone; bound ones stay, detached with the instances that held them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from stratuslab.cloud.volume_claims import VolumeClaim
from stratuslab.cloud.volumes import VolumeService, VolumeView
from stratuslab.db.models import NodeInstanceRecord, RunRecord
from stratuslab.db.volume_models import VolumeRecord
from stratuslab.deploy.plan import NodePlan, Plan
from stratuslab.deploy.plan_volumes import NodeVolume
from stratuslab.errors import Conflict, StratusError

log = logging.getLogger(__name__)
_REMADE = ("error", "gone", "deleting")  # a fresh volume in these states is made again


@dataclass(frozen=True)
class Member:
    """A node instance whose volumes are wanted: its name (``db.1``), node and index."""

    name: str
    node: str
    index: int


class RunVolumes:
    """The engine's side of a run's volumes, acting for the run's owner."""

    def __init__(self, volumes_for: Callable[[str], VolumeService], *, parallel: int = 8) -> None:
        self.volumes_for = volumes_for
        self.parallel = parallel

    # -- when the run is created --------------------------------------------------------

    def bind(self, plan: Plan, owner: str) -> Plan:
        """``plan`` with each bound volume resolved as ``owner`` reaches it (owner/name and id);
        raises the refusal naming the node when one cannot be attached as the plan says."""
        if not any(not v.fresh for node in plan.nodes.values() for v in node.volumes):
            return plan
        service = self.volumes_for(owner)
        nodes = {name: self._bound(service, node) for name, node in plan.nodes.items()}
        return replace(plan, nodes=nodes)

    def _bound(self, service: VolumeService, node: NodePlan) -> NodePlan:
        resolved = []
        for volume in node.volumes:
            if volume.fresh:
                resolved.append(volume)
                continue
            try:
                found = service.get(volume.bound or "")  # asks the backend whether it is there
                # The checks an instance's start makes: own volumes either way, another user's
                # public one read-only only; ready, and on the node's cloud.
                service.claim_for(
                    found.id, path=volume.path, read_only=volume.read_only, cloud=node.cloud
                )
            except StratusError as exc:
                raise _naming(exc, f"node {node.name}: volume {volume.name}") from None
            resolved.append(replace(volume, bound=found.ref, volume_id=found.id))
        return replace(node, volumes=tuple(resolved))

    # -- provisioning -------------------------------------------------------------------

    def claims(
        self,
        run_id: str,
        owner: str,
        plan: Plan,
        members: Sequence[Member],
        *,
        proceed: Callable[[], bool],
    ) -> dict[str, tuple[VolumeClaim, ...] | StratusError]:
        """For each of ``members`` whose node has volumes: the claims its machine is created
        with, its fresh volumes made first; or the error that fails its provisioning. Members
        left out were not reached because the run stopped provisioning (``proceed``)."""
        wanted = [m for m in members if plan.nodes[m.node].volumes]
        if not wanted:
            return {}
        service = self.volumes_for(owner)
        made = {view.name: view for view in service.for_run(run_id)}

        def one(member: Member) -> tuple[str, tuple[VolumeClaim, ...] | StratusError] | None:
            if not proceed():
                return None
            node = plan.nodes[member.node]
            try:
                return member.name, tuple(
                    self._claim(service, run_id, node, member, volume, made)
                    for volume in node.volumes
                )
            except StratusError as exc:
                return member.name, exc

        with ThreadPoolExecutor(max_workers=min(self.parallel, len(wanted))) as pool:
            outcomes = list(pool.map(one, wanted))
        return dict(outcome for outcome in outcomes if outcome is not None)

    def _claim(
        self,
        service: VolumeService,
        run_id: str,
        node: NodePlan,
        member: Member,
        volume: NodeVolume,
        made: Mapping[str, VolumeView],
    ) -> VolumeClaim:
        if not volume.fresh:
            try:
                return service.claim_for(
                    volume.volume_id or volume.bound or "",
                    path=volume.path,
                    read_only=volume.read_only,
                    cloud=node.cloud,
                )
            except StratusError as exc:
                raise _naming(exc, f"volume {volume.name} ({volume.bound})") from None
        name = volume.fresh_name(run_id, member.node, member.index)
        try:
            view = made.get(name)
            if view is not None and view.state in _REMADE:
                service.delete(view.id)  # left broken by an earlier attempt: made again
                view = None
            if view is None:
                view = service.create(
                    name,
                    size_bytes=volume.size_bytes,
                    cloud=node.cloud,
                    description=volume.description or f"{volume.name} of {member.name}",
                    run_id=run_id,
                )
            return service.claim_for(
                view.id, path=volume.path, read_only=volume.read_only, cloud=node.cloud
            )
        except StratusError as exc:
            raise _naming(exc, f"volume {volume.name} (fresh, {name})") from None

    # -- scaling down and teardown ------------------------------------------------------

    def delete_removed(
        self, run_id: str, owner: str, plan: Plan, removed: Iterable[Member]
    ) -> None:
        """Delete the fresh volumes of node instances removed from a scalable run (their
        machines are gone). A failure is only logged: the run's teardown deletes them."""
        names = {
            volume.fresh_name(run_id, member.node, member.index)
            for member in removed
            for volume in plan.nodes[member.node].volumes
            if volume.fresh
        }
        if not names:
            return
        service = self.volumes_for(owner)
        for view in service.for_run(run_id):
            if view.name in names and view.state != "gone":
                try:
                    service.delete(view.id)
                except StratusError as exc:
                    log.warning("run %s: volume %s is left to teardown: %s", run_id, view.ref, exc)

    def delete_for_run(self, run_id: str, owner: str) -> list[str]:
        """Delete every fresh volume of the run (idempotent); raises the first failure after
        trying each, for the teardown to retry."""
        return self.volumes_for(owner).delete_for_run(run_id)


def states(session: Session, run_id: str, plan: Mapping[str, Any]) -> dict[str, str]:
    """The state of each volume a run's nodes mount, as the store has it: its fresh volumes
    by name, its bound ones by id. One query."""
    bound = {
        v["volume_id"]
        for node in (plan.get("nodes") or {}).values()
        for v in node.get("volumes") or ()
        if v.get("volume_id")
    }
    if not bound and not any(node.get("volumes") for node in (plan.get("nodes") or {}).values()):
        return {}
    rows = session.execute(
        select(VolumeRecord.id, VolumeRecord.name, VolumeRecord.run_id, VolumeRecord.state).where(
            or_(VolumeRecord.run_id == run_id, VolumeRecord.id.in_(sorted(bound)))
        )
    ).all()
    found: dict[str, str] = {}
    for volume_id, name, made_by, state in rows:
        if made_by == run_id:
            found[name] = state
        if volume_id in bound:
            found[volume_id] = state
    return found


def shown(
    plan: Mapping[str, Any],
    run: RunRecord,
    member: NodeInstanceRecord,
    states: Mapping[str, str],
) -> list[dict[str, Any]]:
    """A node instance's volumes as ``run show`` lists them: ``name`` (the component's),
    ``ref``, ``path``, ``read_only``, ``fresh``, and ``state`` (from :func:`states`; None for a
    fresh volume not made yet)."""
    spec = (plan.get("nodes") or {}).get(member.node) or {}
    found = []
    for data in spec.get("volumes") or ():
        volume = NodeVolume.from_dict(data)
        if volume.fresh:
            name = volume.fresh_name(run.id, member.node, member.idx)
            ref, state = f"{run.owner}/{name}", states.get(name)
        else:
            ref, state = volume.bound or "", states.get(volume.volume_id or "")
        found.append(
            {
                "name": volume.name,
                "ref": ref,
                "path": volume.path,
                "read_only": volume.read_only,
                "fresh": volume.fresh,
                "state": state,
            }
        )
    return found


def _naming(exc: StratusError, prefix: str) -> StratusError:
    """``exc`` with ``prefix`` before its message, of the same kind (status and exit code)."""
    try:
        return type(exc)(f"{prefix}: {exc.message}", hint=exc.hint)
    except TypeError:  # a kind whose constructor asks more (a failed command)
        return Conflict(f"{prefix}: {exc.message}", hint=exc.hint)
