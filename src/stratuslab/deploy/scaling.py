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

from stratuslab.db.models import NodeInstanceRecord, RunRecord, RuntimeParameterRecord, utcnow
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.keys import instance_rows
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.states import RunState
from stratuslab.deploy.tx import Tx, transaction
from stratuslab.errors import Conflict, Invalid, NotFound


class Scaling:
    def __init__(self, control: RunControl) -> None:
        self.control = control

    def add_instances(self, run_id: str, node: str, count: int) -> list[str]:
        """Add ``count`` instances of ``node`` to a scalable run in Ready. The run goes back to
        Provisioning: the new instances are made and run their recipes, the others run
        on-vm-add. Returns the new node instances' names."""
        if count < 1:
            raise Invalid(f"add at least one instance, not {count}")
        with transaction(self.control.engine, self.control.hub) as tx:
            run = self._scalable(tx, run_id, node)
            plan = Plan.from_dict(run.plan)
            last = tx.session.scalar(
                select(func.max(NodeInstanceRecord.idx)).where(
                    NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.node == node
                )
            )
            indexes = range((last or 0) + 1, (last or 0) + 1 + count)
            globals_ = self._globals(tx, run_id)
            for index in indexes:
                tx.session.add(
                    NodeInstanceRecord(
                        run_id=run_id, name=f"{node}.{index}", node=node, idx=index, token_hash=""
                    )
                )
                for row in instance_rows(plan, node, index, run.given, globals_):
                    value = row.value
                    source = plan.nodes[node].mappings.get(row.key.split(":", 1)[1])
                    if row.kind == "input" and source is not None and source.kind == "parameter":
                        known = tx.session.get(RuntimeParameterRecord, (run_id, source.key()))
                        value = known.value if known is not None else value
                    tx.session.add(
                        RuntimeParameterRecord(
                            run_id=run_id,
                            key=row.key,
                            value=value,
                            kind=row.kind,
                            description=row.description,
                            set_at=utcnow() if value else None,
                        )
                    )
            tx.session.flush()
            names = [f"{node}.{index}" for index in indexes]
            self.control.renumber(tx, run_id, node)
            run.scaling = {"action": "vm_add", "node": node, "vms": ",".join(names)}
            tx.event(run_id, "scale", f"adding {', '.join(names)}")
            self.control.move(tx, run, RunState.PROVISIONING)
            tx.later(lambda: self.control.schedule(run_id, "provision"))
            return names

    def remove_instances(self, run_id: str, node: str, indexes: list[int]) -> list[str]:
        """Remove instances of ``node`` from a scalable run in Ready: their machines are
        destroyed, the remaining instances run on-vm-remove. Returns their names."""
        with transaction(self.control.engine, self.control.hub) as tx:
            run = self._scalable(tx, run_id, node)
            names = [f"{node}.{index}" for index in indexes]
            removed = []
            for name in names:
                member = self.control.node_in(tx, run_id, name)
                if member.removed:
                    raise Conflict(f"{name} was removed already")
                member.removed = True
                member.token_hash = ""  # its agent may still run: nothing it sends counts now
                removed.append(member)
            if not removed:
                raise Invalid("name the instances to remove (ids=1,3)")
            self.control.renumber(tx, run_id, node)
            run.scaling = {"action": "vm_remove", "node": node, "vms": ",".join(names)}
            tx.event(run_id, "scale", f"removing {', '.join(names)}")
            # Their machines go first; then the round in which the others run on-vm-remove.
            tx.later(lambda: self.control.schedule(run_id, "shrink"))
            return names

    def _scalable(self, tx: Tx, run_id: str, node: str) -> RunRecord:
        run = tx.run(run_id)
        if not run.mutable:
            raise Conflict("the run is not scalable", hint="deploy it with --mutable (mutable=on)")
        if run.state != RunState.READY or run.scaling is not None:
            raise Conflict(f"the run is in {run.state}: one scale action at a time, from Ready")
        if node not in run.plan["nodes"]:
            raise NotFound(
                f"no node {node!r} in this run", hint=f"nodes: {', '.join(run.plan['nodes'])}"
            )
        return run

    @staticmethod
    def _globals(tx: Tx, run_id: str) -> dict[str, str]:
        """The run globals that have a value, by bare name."""
        rows = tx.session.execute(
            select(RuntimeParameterRecord.key, RuntimeParameterRecord.value).where(
                RuntimeParameterRecord.run_id == run_id,
                RuntimeParameterRecord.key.startswith("ss:"),
            )
        ).all()
        return {key.removeprefix("ss:"): value for key, value in rows if value is not None}
