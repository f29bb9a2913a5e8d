"""Scale actions of scalable (mutable) runs: adding and removing node instances while the
application runs, one action at a time, from Ready.

Adding sends the run back to Provisioning: the new instances are made and run their recipes
like any, while the instances already there run their ``on-vm-add`` recipes. Removing first
destroys the removed instances' machines (their tokens are revoked at once, so that nothing
their agents still send counts), then has the others run ``on-vm-remove``. Either way the run
goes through the barriers again and comes back to Ready.
"""

from __future__ import annotations

from sqlalchemy import func, select

from stratuslab.cloud.holdings import Amount
from stratuslab.cloud.quotas import Quotas
from stratuslab.db.models import NodeInstanceRecord, RunRecord, RuntimeParameterRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy import access, events, placing, reservations
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.keys import instance_rows
from stratuslab.deploy.params import Parameters
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.plan_volumes import writable_bound
from stratuslab.deploy.secrets import of_plan, secret_keys
from stratuslab.deploy.states import RunState
from stratuslab.deploy.tx import Tx, transaction
from stratuslab.deploy.work import Work
from stratuslab.errors import Conflict, Invalid, NotFound
from stratuslab.principal import Principal

MAX_ADD = 1000  # instances added by one action


class Scaling:
    def __init__(
        self,
        control: RunControl,
        params: Parameters,
        *,
        max_instances: int,
        quotas: Quotas | None = None,
        place: placing.Place | None = None,
    ) -> None:
        self.control = control
        self.params = params
        self.max_instances = max_instances
        self.quotas = quotas
        self.place = place  # where new node instances go (deploy/placing.py)

    def add_instances(self, run_id: str, node: str, count: int, *, caller: Principal) -> list[str]:
        """Add ``count`` instances of ``node`` to a scalable run in Ready. The run goes back to
        Provisioning: the new instances are made and run their recipes, the others run
        on-vm-add. Returns the new node instances' names. Over the run owner's quota, nothing
        is added (``CapacityExceeded``); nor to a node that mounts a volume bound read-write,
        which one instance holds (``Conflict``)."""
        if not 1 <= count <= MAX_ADD:
            raise Invalid(f"add between 1 and {MAX_ADD} instances at a time, not {count}")
        where = self._placed(run_id, node, count, caller)  # before: it asks the backends
        with transaction(self.control.engine, self.control.hub) as tx:
            run = self._scalable(tx, run_id, node, caller)
            plan = Plan.from_dict(run.plan)
            total = tx.session.scalar(
                select(func.count()).where(
                    NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.removed.is_(False)
                )
            )
            bound = writable_bound(plan.nodes[node].volumes)
            if bound is not None:
                here = tx.session.scalar(
                    select(func.count()).where(
                        NodeInstanceRecord.run_id == run_id,
                        NodeInstanceRecord.node == node,
                        NodeInstanceRecord.removed.is_(False),
                    )
                )
                if (here or 0) + count > 1:
                    raise Conflict(
                        f"node {node} mounts volume {bound.bound} read-write: a volume attached "
                        "read-write goes to one instance",
                        hint="bind it with read_only: true to scale the node, or leave it to the "
                        "run (a fresh volume for each instance)",
                    )
            if (total or 0) + count > self.max_instances:
                raise Invalid(
                    f"the run has {total} node instances: this site allows at most "
                    f"{self.max_instances} in one run"
                )
            if self.quotas is not None:
                spec = plan.nodes[node]
                demand: dict[str, Amount] = {}
                for placed in where:
                    demand[placed.cloud] = (
                        demand.get(placed.cloud, Amount())
                        + reservations.charge_of_node(spec, 1)
                        + reservations.storage_of_node(spec, 1)
                    )
                self.quotas.enforce(tx.session, run.owner, demand)
            last = tx.session.scalar(
                select(func.max(NodeInstanceRecord.idx)).where(
                    NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.node == node
                )
            )
            indexes = range((last or 0) + 1, (last or 0) + 1 + count)
            known = self.params.known(tx, run_id)  # new inputs take what their sources hold now
            hidden = of_plan(plan) | secret_keys(tx.session.connection(), run_id)
            now = utcnow()
            placed_as = dict(zip((f"{node}.{i}" for i in indexes), where, strict=True))
            facts = placing.facts(placed_as)
            for index in indexes:
                name = f"{node}.{index}"
                tx.session.add(
                    NodeInstanceRecord(
                        run_id=run_id,
                        name=name,
                        node=node,
                        idx=index,
                        token_hash="",
                        cloud=placed_as[name].cloud,
                        placement=placed_as[name].reason,
                    )
                )
                tx.session.add_all(
                    RuntimeParameterRecord(
                        run_id=run_id,
                        key=row.key,
                        value=facts.get(row.key, row.value),
                        kind=row.kind,
                        description=row.description,
                        set_at=now if facts.get(row.key, row.value) is not None else None,
                        secret=row.secret,
                    )
                    for row in instance_rows(
                        plan, node, index, given=run.given, known=known.get, secrets=hidden
                    )
                )
            names = [f"{node}.{index}" for index in indexes]
            self.control.renumber(tx, run, node)
            run.scaling = {"action": "vm_add", "node": node, "vms": ",".join(names)}
            tx.event(run_id, events.scaled("vm_add", node, names))
            for event in placing.announced(placed_as):
                tx.event(run_id, event)
            self.control.move(tx, run, RunState.PROVISIONING)
            tx.later(lambda: self.control.work.ask(run_id, Work.PROVISION))
            return names

    def remove_instances(
        self, run_id: str, node: str, indexes: list[int], *, caller: Principal
    ) -> list[str]:
        """Remove instances of ``node`` from a scalable run in Ready: their machines are
        destroyed, the remaining instances run on-vm-remove. Returns their names."""
        if not indexes:
            raise Invalid("name the instances to remove (ids=1,3)")
        if len(indexes) > self.max_instances:
            raise Invalid(f"at most {self.max_instances} instances, not {len(indexes)}")
        with transaction(self.control.engine, self.control.hub) as tx:
            run = self._scalable(tx, run_id, node, caller)
            names = [f"{node}.{index}" for index in dict.fromkeys(indexes)]
            for name in names:
                member = self.control.node_in(tx, run_id, name)
                if member.removed:
                    raise Conflict(f"{name} was removed already")
                member.removed = True
                member.token_hash = ""  # its agent may still run: nothing it sends counts now
            self.control.renumber(tx, run, node)
            run.scaling = {"action": "vm_remove", "node": node, "vms": ",".join(names)}
            tx.event(run_id, events.scaled("vm_remove", node, names))
            # Their machines go first; then the round in which the others run on-vm-remove.
            tx.later(lambda: self.control.work.ask(run_id, Work.SHRINK))
            return names

    def _placed(
        self, run_id: str, node: str, count: int, caller: Principal
    ) -> list[placing.Placed]:
        """Where ``count`` new instances of ``node`` go, in order. A run the caller does not
        reach, or a node it lacks, is left to the transaction to refuse (placed nowhere)."""
        with session_scope(self.control.engine) as session:
            run = session.get(RunRecord, run_id)
            if run is None or not access.may_reach(caller, run_id=run_id, owner=run.owner):
                return [placing.Placed("", "", "")] * count
            owner, plan = run.owner, Plan.from_dict(run.plan)
        if node not in plan.nodes:
            return [placing.Placed("", "", "")] * count
        members = [placing.Member(node, i) for i in range(1, count + 1)]
        found = placing.place(self.place, owner, plan, members)
        return [found[m.name] for m in members]

    def _scalable(self, tx: Tx, run_id: str, node: str, caller: Principal) -> RunRecord:
        access.users_only(caller, "scale the run")
        run = tx.run(run_id, caller=caller)
        if not run.mutable:
            raise Conflict("the run is not scalable", hint="deploy it with --mutable (mutable=on)")
        if run.state != RunState.READY or run.scaling is not None:
            raise Conflict(f"the run is in {run.state}: one scale action at a time, from Ready")
        if node not in run.plan["nodes"]:
            raise NotFound(
                f"no node {node!r} in this run", hint=f"nodes: {', '.join(run.plan['nodes'])}"
            )
        return run
