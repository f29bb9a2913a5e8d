"""What runs reserve against their owners' quotas.

A run holds its node instances from the moment it is recorded, not only once their machines
exist: fifty runs started at once would otherwise all pass the check before any of them had a
machine. A node instance counts through its machine once that is recorded (an instance that is
not gone); before that, and while it is being made again after a crash, it counts here, at the
size its plan asks. A removed node instance, or one whose provisioning failed, holds nothing;
nor does a run that is finalizing or over, which makes no more machines.

The plan carries no size per node yet: every node instance is asked without one, so it is
charged (and, under a vCPU or memory quota, given) the default size of
:mod:`stratuslab.cloud.holdings`.

The fresh volumes a run makes for its node instances are checked against the storage quota
when the run is created (or scaled), with its instances, but not held: each is charged when
the volume service makes it, and one over the quota by then fails its node instance with the
quota's words.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from stratuslab.cloud.holdings import Amount, Holding, charge_of
from stratuslab.cloud.types import InstanceState
from stratuslab.cloud.volume_values import gib_of
from stratuslab.db.models import InstanceRecord, NodeInstanceRecord, RunRecord
from stratuslab.deploy.plan import NodePlan, Plan
from stratuslab.deploy.states import FINAL, RunState

_MAKING = ("pending", "creating")  # node_instances.provisioning before the machine runs
_NO_MORE = [s.value for s in FINAL | {RunState.FINALIZING}]


def charge_of_node(spec: NodePlan, count: int) -> Amount:
    """What ``count`` instances of a node hold: the plan asks no size, so the default."""
    return charge_of(None, None, count)


def storage_of_node(spec: NodePlan, count: int) -> Amount:
    """The storage the fresh volumes of ``count`` instances of a node take (a bound volume is
    its owner's already). It is checked when a run is created or scaled, not held: each volume
    is charged when it is made, and one over the quota then fails its node instance."""
    return Amount(
        storage_gib=count * sum(gib_of(v.size_bytes or 0) for v in spec.volumes if v.fresh)
    )


def demand_of(plan: Plan, placed: Mapping[str, str] | None = None) -> dict[str, Amount]:
    """What a run of ``plan`` asks, per cloud: its instances and their fresh volumes, each
    node instance on the cloud ``placed`` gives it (node instance name -> cloud), else on its
    node's."""
    demand: dict[str, Amount] = {}
    for spec in plan.nodes.values():
        for index in range(1, spec.multiplicity + 1):
            cloud = (placed or {}).get(f"{spec.name}.{index}", spec.cloud)
            demand[cloud] = (
                demand.get(cloud, Amount()) + charge_of_node(spec, 1) + storage_of_node(spec, 1)
            )
    return demand


def _without_machine() -> Any:
    """Node instances whose machine is not recorded (or is gone) while they are being made."""
    machine = exists().where(
        and_(
            InstanceRecord.run_id == NodeInstanceRecord.run_id,
            InstanceRecord.node_instance == NodeInstanceRecord.name,
            InstanceRecord.state != InstanceState.GONE.value,
        )
    )
    return and_(
        RunRecord.state.not_in(_NO_MORE),
        NodeInstanceRecord.removed.is_(False),
        NodeInstanceRecord.provisioning.in_(_MAKING),
        ~machine,
    )


def pending_by_cloud(session: Session) -> dict[str, int]:
    """Node instances placed on each cloud whose machine is not made yet, every owner's: what
    a cloud's cap counts beside the instances recorded there (cloud/placement.py)."""
    rows = session.execute(
        select(NodeInstanceRecord.cloud, func.count())
        .join(RunRecord, RunRecord.id == NodeInstanceRecord.run_id)
        .where(NodeInstanceRecord.cloud.is_not(None), _without_machine())
        .group_by(NodeInstanceRecord.cloud)
    )
    return {cloud: int(count) for cloud, count in rows if cloud}


def held_by_runs(session: Session, owners: Collection[str]) -> list[Holding]:
    """What ``owners``' runs reserve beyond their recorded machines (see the module's
    docstring), per run's node and the cloud each node instance was placed on. One grouped
    query, then each such run's plan."""
    if not owners:
        return []
    rows = session.execute(
        select(
            RunRecord.id,
            RunRecord.owner,
            NodeInstanceRecord.node,
            NodeInstanceRecord.cloud,
            func.count(),
        )
        .join(NodeInstanceRecord, NodeInstanceRecord.run_id == RunRecord.id)
        .where(RunRecord.owner.in_(sorted(owners)), _without_machine())
        .group_by(RunRecord.id, RunRecord.owner, NodeInstanceRecord.node, NodeInstanceRecord.cloud)
    ).all()
    if not rows:
        return []
    plans: dict[str, dict[str, Any]] = {
        run_id: plan
        for run_id, plan in session.execute(
            select(RunRecord.id, RunRecord.plan).where(RunRecord.id.in_({r[0] for r in rows}))
        )
    }
    found = []
    for run_id, owner, node, cloud, count in rows:
        spec = NodePlan.from_dict(plans[run_id]["nodes"][node])
        found.append(Holding(owner, cloud or spec.cloud, charge_of_node(spec, int(count))))
    return found
