"""The run state machine applied to the store: barriers, aborts, termination, node outcomes.

Every change happens in one transaction that locks the run, so two node instances completing
the last barrier together advance the run once. What a change sets in motion (a teardown) is
handed to ``schedule`` after the commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from stratuslab.db.models import NodeInstanceRecord, RunRecord, RuntimeParameterRecord, utcnow
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.propagation import propagation
from stratuslab.deploy.states import (
    BARRIERS,
    FINAL,
    KeepRunning,
    RunState,
    after_barrier,
    cancels,
    final_state,
    keeps,
    on_abort,
    on_terminate,
)
from stratuslab.deploy.tx import Tx, abort_topic, param_topic, transaction
from stratuslab.errors import Conflict, NotFound
from stratuslab.hub import Hub

# After an abort, how long SendingReports waits for nodes that may never answer (a killed one).
REPORT_GRACE = 90.0
Schedule = Callable[[str, str], None]  # (run id, "provision" | "shrink" | "teardown")


class RunControl:
    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        *,
        schedule: Schedule | None = None,
        report_grace: float = REPORT_GRACE,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.report_grace = timedelta(seconds=report_grace)
        self.schedule: Schedule = schedule or (lambda _run, _work: None)
        self._propagation: dict[str, dict[str, list[tuple[str, str]]]] = {}
        self._lock = threading.Lock()

    # -- what nodes and users do ----------------------------------------------------------

    def complete(self, run_id: str, node_instance: str, *, state: str | None = None) -> None:
        """``node_instance`` finished the run's current state (or ``state``, when it says)."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            current = RunState(run.state)
            if state is not None and state != current.value:
                raise Conflict(
                    f"{node_instance} completed {state}, but the run is in {current.value}"
                )
            if current not in BARRIERS:
                raise Conflict(f"the run is in {current.value}: there is nothing to complete")
            node = self.node_in(tx, run_id, node_instance)
            if node.removed:
                raise Conflict(f"{node_instance} was removed from the run")
            if node.completed == current.value:
                return
            node.completed = current.value
            tx.event(
                run_id,
                "complete",
                f"completed {current.value}",
                node_instance=node_instance,
            )
            self._check_barrier(tx, run)

    def abort(
        self, run_id: str, reason: str, *, node_instance: str | None = None, timed_out: bool = False
    ) -> bool:
        """Raise the abort flag; the first reason wins. True when this reason was the first."""
        with transaction(self.engine, self.hub) as tx:
            return self.abort_in(
                tx, tx.run(run_id), reason, node_instance=node_instance, timed_out=timed_out
            )

    def terminate(self, run_id: str) -> None:
        """Cancel a run before Ready; finalize it after. Finalizing tears the instances down."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            state = RunState(run.state)
            if state is RunState.FINALIZING:
                return
            target = on_terminate(state)
            if cancels(state):
                run.cancelled = True
            tx.event(run_id, "terminate", f"terminated by its owner in {state.value}")
            self.move(tx, run, target)

    # -- what the orchestrator reports ----------------------------------------------------

    def start_provisioning(self, run_id: str) -> bool:
        """Initializing -> Provisioning. False when the run has moved on already."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state == RunState.INITIALIZING:
                self.move(tx, run, RunState.PROVISIONING)
            return run.state == RunState.PROVISIONING

    def provisioning_failed(self, run_id: str, node_instance: str, reason: str) -> None:
        """An instance could not be started. Within the node's allowance of failures it is
        removed from the run; beyond it, the run aborts."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            node = self.node_in(tx, run_id, node_instance)
            node.provisioning = "failed"
            tx.event(
                run_id,
                "provisioning-failed",
                f"{node_instance}: {reason}",
                node_instance=node_instance,
            )
            allowed = int(run.plan["nodes"][node.node]["max_provisioning_failures"])
            failed = tx.session.scalar(
                select(func.count()).where(
                    NodeInstanceRecord.run_id == run_id,
                    NodeInstanceRecord.node == node.node,
                    NodeInstanceRecord.provisioning == "failed",
                )
            )
            if (failed or 0) > allowed:
                self.abort_in(
                    tx,
                    run,
                    f"node {node.node}: {failed} instance(s) failed to start "
                    f"({allowed} allowed): {reason}",
                )
                return
            node.removed, node.token_hash = True, ""
            self.renumber(tx, run_id, node.node)
            self._check_barrier(tx, run)

    def creating(self, run_id: str, node_instance: str, instance_id: str) -> None:
        """The instance is recorded and about to be created: teardown can find it from now on."""
        with transaction(self.engine, self.hub) as tx:
            node = self.node_in(tx, run_id, node_instance)
            node.provisioning, node.instance_id = "creating", instance_id

    def provisioned(
        self, run_id: str, node_instance: str, *, instance_id: str, address: str
    ) -> None:
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            node = self.node_in(tx, run_id, node_instance)
            node.provisioning, node.instance_id = "ready", instance_id
            values = {
                "hostname": address,
                "instanceid": instance_id,
                "vmstate": "running",
                "url.ssh": f"ssh://root@{address}",
            }
            for name, value in values.items():
                self.set_in(tx, run, f"{node_instance}:{name}", value)
            tx.event(
                run_id,
                "provisioned",
                f"running at {address} ({instance_id})",
                node_instance=node_instance,
            )

    def lost(self, run_id: str, node_instance: str, reason: str) -> None:
        """A node instance's machine is gone or stopped: it can no longer take part."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            node = self.node_in(tx, run_id, node_instance)
            if node.lost or RunState(run.state) in FINAL:
                return
            node.lost, node.token_hash = True, ""  # should its agent live on, it no longer counts
            tx.event(run_id, "lost", reason, node_instance=node_instance)
            self.abort_in(tx, run, f"{node_instance}: {reason}", node_instance=node_instance)
            self._check_barrier(tx, run)

    def give_up_waiting(self, run_id: str) -> None:
        """The bounded wait of a barrier is over: nodes that did not complete are left behind."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            state = RunState(run.state)
            if state not in BARRIERS:
                return
            for node in self._waiting_for(tx, run):
                node.lost = True
                tx.event(
                    run_id,
                    "lost",
                    f"did not complete {state.value} in time",
                    node_instance=node.name,
                )
            self._check_barrier(tx, run)

    def begin_round(self, run_id: str) -> None:
        """A removal's machines are gone: the remaining instances now run on-vm-remove."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state == RunState.READY and run.scaling is not None:
                self.move(tx, run, RunState.PROVISIONING)

    def finish(self, run_id: str) -> None:
        """Finalizing is over (the instances are gone, or kept): the run ends."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state == RunState.FINALIZING:
                self.move(
                    tx,
                    run,
                    final_state(aborted=run.abort_reason is not None, cancelled=run.cancelled),
                )

    # -- the machinery --------------------------------------------------------------------

    def abort_in(
        self,
        tx: Tx,
        run: RunRecord,
        reason: str,
        *,
        node_instance: str | None = None,
        timed_out: bool = False,
    ) -> bool:
        state = RunState(run.state)
        if node_instance is not None:
            self._set(tx, run.id, f"{node_instance}:abort", reason)
        if run.abort_reason is not None or state in FINAL:
            return False
        run.abort_reason = reason
        run.timed_out = timed_out
        self._set(tx, run.id, "ss:abort", reason)
        tx.event(run.id, "abort", reason)  # the reason names the node instance already
        tx.announce(abort_topic(run.id), {"reason": reason})
        target = on_abort(state)
        if target is not state:
            self.move(tx, run, target)
        return True

    def move(self, tx: Tx, run: RunRecord, target: RunState) -> None:
        previous = run.state
        now = utcnow()
        run.state, run.last_state_change = target.value, now
        aborted_to_reports = target is RunState.SENDING_REPORTS and run.abort_reason is not None
        run.state_deadline = now + self.report_grace if aborted_to_reports else None
        if target in FINAL:
            run.ended_at = now
        if target is RunState.READY:
            run.deadline = None  # the run timeout bounds the way to Ready, not what follows
            run.scaling = None
        tx.event(run.id, "state", f"{previous} -> {target.value}")
        tx.announce(param_topic(run.id, "ss:state"), {"value": target.value})
        if target is RunState.FINALIZING:
            run_id = run.id
            tx.later(lambda: self.schedule(run_id, "teardown"))

    def check_barrier(self, run_id: str) -> None:
        with transaction(self.engine, self.hub) as tx:
            self._check_barrier(tx, tx.run(run_id))

    def _check_barrier(self, tx: Tx, run: RunRecord) -> None:
        state = RunState(run.state)
        if state not in BARRIERS or tx.session.scalar(
            select(func.count()).where(*waiting_for(run))
        ):
            return
        aborted = run.abort_reason is not None
        keep = keeps(KeepRunning(run.keep_running), aborted=aborted, mutable=run.mutable)
        target = after_barrier(state, aborted=aborted, keep=keep)
        if target is not state:
            self.move(tx, run, target)

    @staticmethod
    def _waiting_for(tx: Tx, run: RunRecord) -> list[NodeInstanceRecord]:
        return list(tx.session.scalars(select(NodeInstanceRecord).where(*waiting_for(run))))

    @staticmethod
    def node_in(tx: Tx, run_id: str, node_instance: str) -> NodeInstanceRecord:
        node = tx.session.get(NodeInstanceRecord, (run_id, node_instance))
        if node is None:
            raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
        return node

    def set_in(self, tx: Tx, run: RunRecord, key: str, value: str | None) -> bool:
        """Set a parameter that exists, and every input mapped to it. False when it does not."""
        row = tx.session.get(RuntimeParameterRecord, (run.id, key))
        if row is None:
            return False
        row.value, row.set_at = value, utcnow()
        tx.announce(param_topic(run.id, key), {"value": value})
        for node, name in self._targets(run).get(key, []):
            for index in tx.session.scalars(
                select(NodeInstanceRecord.idx).where(
                    NodeInstanceRecord.run_id == run.id, NodeInstanceRecord.node == node
                )
            ):
                self._set(tx, run.id, f"{node}.{index}:{name}", value)
        return True

    def _targets(self, run: RunRecord) -> dict[str, list[tuple[str, str]]]:
        with self._lock:
            if run.id not in self._propagation:
                self._propagation[run.id] = propagation(Plan.from_dict(run.plan))
            return self._propagation[run.id]

    @staticmethod
    def _set(tx: Tx, run_id: str, key: str, value: str | None) -> None:
        tx.session.execute(
            update(RuntimeParameterRecord)
            .where(RuntimeParameterRecord.run_id == run_id, RuntimeParameterRecord.key == key)
            .values(value=value, set_at=utcnow())
        )
        tx.announce(param_topic(run_id, key), {"value": value})

    def renumber(self, tx: Tx, run_id: str, node: str) -> None:
        ids = tx.session.scalars(
            select(NodeInstanceRecord.idx)
            .where(NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.node == node)
            .where(NodeInstanceRecord.removed.is_(False))
            .order_by(NodeInstanceRecord.idx)
        ).all()
        self._set(tx, run_id, f"{node}:ids", ",".join(str(i) for i in ids))
        self._set(tx, run_id, f"{node}:multiplicity", str(len(ids)))


def waiting_for(run: RunRecord) -> tuple[ColumnElement[bool], ...]:
    """The node instances a barrier still waits for: taking part, not done with its state."""
    return (
        NodeInstanceRecord.run_id == run.id,
        NodeInstanceRecord.removed.is_(False),
        NodeInstanceRecord.lost.is_(False),
        (NodeInstanceRecord.completed.is_(None)) | (NodeInstanceRecord.completed != run.state),
    )
