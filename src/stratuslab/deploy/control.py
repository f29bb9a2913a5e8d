"""The run state machine applied to the store: barriers, aborts, termination, node outcomes.

Every change happens in one transaction that locks the run, so two node instances completing
the last barrier together advance the run once. What a change sets in motion (a teardown) is
asked of the work queue after the commit.

A barrier waits for the node instances that take part (not removed, not lost; once the run is
aborted, only those that have a machine or one on its way) until each has completed the state
*and* has its machine recorded as running: a node whose agent is faster than the server's
record of its machine (a server restarted mid-provisioning) is counted once the record catches
up. The run keeps the number still waited for (``runs.waiting``): a completion costs one
decrement, not a count over every node instance, and the count is taken again whenever
something rarer changes who takes part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Protocol, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.engine import Engine

from stratuslab.db.models import NodeInstanceRecord, RunRecord, utcnow
from stratuslab.db.session import reading
from stratuslab.deploy import access, bulk, events
from stratuslab.deploy.batches import GroupCommit
from stratuslab.deploy.bulk import HAS_MACHINE, READY, Completion, Provisioned
from stratuslab.deploy.params import ParameterValues
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
from stratuslab.deploy.work import Work, WorkQueue
from stratuslab.errors import Conflict, Forbidden, NotFound, StratusError
from stratuslab.hub import Hub
from stratuslab.principal import Principal

# After an abort, how long SendingReports waits for nodes that may never answer (a killed one).
REPORT_GRACE = 90.0


UNREACHABLE_RETRY = 60.0  # seconds at most between teardowns of a run whose cloud is silent


class RunControl:
    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        *,
        values: ParameterValues,
        work: WorkQueue,
        report_grace: float = REPORT_GRACE,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.values = values
        self.work = work
        self.report_grace = timedelta(seconds=report_grace)
        self._completions: GroupCommit[Completion, None] = GroupCommit(self._complete_many)
        self._provisionings: GroupCommit[Provisioned, None] = GroupCommit(self._provisioned_many)

    # -- what nodes and users do ----------------------------------------------------------

    def complete(
        self, run_id: str, node_instance: str, *, caller: Principal, state: str | None = None
    ) -> None:
        """``node_instance`` finished the run's current state (or ``state``, when it says).
        Completions arriving together are applied together (see ``batches``)."""
        self.completion(run_id, node_instance, caller=caller, state=state).result()

    def completion(
        self, run_id: str, node_instance: str, *, caller: Principal, state: str | None = None
    ) -> Future[None]:
        """:meth:`complete`, for a coroutine: the future is done once it is (or holds why it
        was refused)."""
        if caller.is_node and (caller.run_id, caller.node_instance) != (run_id, node_instance):
            raise Forbidden(f"{caller} may not complete for {node_instance}")
        # A person's run must be theirs: checked with the batch, off the caller's event loop
        # (an administrator reaches every run, and needs no read at all).
        person = None if caller.is_node or caller.sees_all else caller
        return self._completions.submit(Completion(run_id, node_instance, state, person))

    def _complete_many(self, items: Sequence[Completion]) -> Answers:
        refused = self._unreachable(items)
        if not refused:
            return self._per_run(items, bulk.complete, self._complete_in)
        allowed = [item for index, item in enumerate(items) if index not in refused]
        done = iter(self._per_run(allowed, bulk.complete, self._complete_in))
        return [refused[i] if i in refused else next(done) for i in range(len(items))]

    def _unreachable(self, items: Sequence[Completion]) -> dict[int, StratusError]:
        """The items a person sent for a run that is not theirs: as if there were no run."""
        asked = [(i, item) for i, item in enumerate(items) if item.person is not None]
        if not asked:
            return {}
        refused: dict[int, StratusError] = {}
        with reading(self.engine) as conn:
            owners = {
                run_id: bulk.read_run(conn, run_id) for run_id in {i.run_id for _, i in asked}
            }
        for index, item in asked:
            run = owners[item.run_id]
            assert item.person is not None
            if run is None or not access.may_reach(
                item.person, run_id=item.run_id, owner=run.owner
            ):
                refused[index] = access.no_run(item.run_id)
        return refused

    def _complete_in(
        self, tx: Tx, run: RunRecord, node: NodeInstanceRecord | None, item: Completion
    ) -> StratusError | None:
        current = RunState(run.state)
        if item.state is not None and item.state != current.value:
            return Conflict(
                f"{item.node_instance} completed {item.state}, but the run is in {current.value}"
            )
        if current not in BARRIERS:
            return Conflict(f"the run is in {current.value}: there is nothing to complete")
        if node is None:
            return NotFound(f"no node instance {item.node_instance!r} in run {run.id}")
        if node.removed:
            return Conflict(f"{item.node_instance} was removed from the run")
        if node.completed == current.value:
            return None
        was_waited_for = _waited_for(run, node)
        node.completed = current.value
        tx.event(run.id, events.completed(node.name, current.value))
        if was_waited_for and not _waited_for(run, node):
            run.waiting -= 1
            self._check_barrier(tx, run)
        return None

    def abort(
        self, run_id: str, reason: str, *, node_instance: str | None = None, timed_out: bool = False
    ) -> bool:
        """Raise the abort flag; the first reason wins. True when this reason was the first."""
        with transaction(self.engine, self.hub) as tx:
            return self.abort_in(
                tx, tx.run(run_id), reason, node_instance=node_instance, timed_out=timed_out
            )

    def terminate(self, run_id: str, *, caller: Principal, force: bool = False) -> None:
        """Cancel a run before Ready; finalize it after. Finalizing tears the instances down.

        On a run in Finalizing: asks for the teardown again (a teardown that gave up starts
        over); with ``force``, ends the run without tearing down what is left, which stays
        listed among its owner's instances."""
        access.users_only(caller, "terminate the run")
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id, caller=caller)
            state = RunState(run.state)
            if state is RunState.FINALIZING:
                if force:
                    tx.event(run_id, events.terminated(state.value))
                    self._end(tx, run)
                    return
                run.teardown_attempts, run.retry_at = 0, None
                tx.later(lambda: self.work.ask(run_id, Work.TEARDOWN))
                return
            if force:
                raise Conflict(
                    f"the run is in {state.value}: --force ends a run whose teardown cannot finish",
                    hint="terminate it without --force first",
                )
            target = on_terminate(state)
            if cancels(state):
                run.cancelled = True
            tx.event(run_id, events.terminated(state.value))
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
            tx.event(run_id, events.provisioning_failed(node_instance, reason))
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
            else:
                node.removed, node.token_hash = True, ""
                self.renumber(tx, run, node.node)
            self.recount(tx, run)

    def creating(self, run_id: str, instances: dict[str, str]) -> None:
        """The instances (node instance -> instance id) are recorded and about to be
        created: teardown finds them from now on."""
        with transaction(self.engine, self.hub) as tx:
            bulk.creating(tx, run_id, instances)

    def provisioned(
        self, run_id: str, node_instance: str, *, instance_id: str, address: str
    ) -> None:
        """The node instance's machine runs at ``address``: the server states its facts, and
        from now on the barriers count it. Machines that come up together are recorded
        together."""
        self.provisioning(run_id, node_instance, instance_id=instance_id, address=address).result()

    def provisioning(
        self, run_id: str, node_instance: str, *, instance_id: str, address: str
    ) -> Future[None]:
        """:meth:`provisioned`, without waiting: the future is done once it is recorded."""
        return self._provisionings.submit(Provisioned(run_id, node_instance, instance_id, address))

    def _provisioned_many(self, items: Sequence[Provisioned]) -> Answers:
        return self._per_run(
            items,
            lambda tx, run_id, batch: bulk.provision(
                tx, run_id, batch, self.values.sources(run_id)
            ),
            self._provisioned_in,
        )

    def _provisioned_in(
        self, tx: Tx, run: RunRecord, node: NodeInstanceRecord | None, item: Provisioned
    ) -> StratusError | None:
        if node is None:
            return NotFound(f"no node instance {item.node_instance!r} in run {run.id}")
        if node.provisioning == READY and node.instance_id == item.instance_id:
            return None
        was_waited_for = _waited_for(run, node)
        node.provisioning, node.instance_id = READY, item.instance_id
        for name, value in bulk.facts(item).items():
            self.values.put(tx, run, f"{node.name}:{name}", value)
        tx.event(run.id, events.provisioned(node.name, item.address, item.instance_id))
        if run.abort_reason is not None:
            self.recount(tx, run)  # after an abort, who takes part is counted again
        elif was_waited_for and not _waited_for(run, node):
            run.waiting -= 1
            self._check_barrier(tx, run)
        return None

    def _per_run(
        self,
        items: Sequence[_Item],
        fast: Callable[[Tx, str, list[_Item]], Answers | None],
        general: Callable[[Tx, RunRecord, NodeInstanceRecord | None, _Item], StratusError | None],
    ) -> Answers:
        """Apply a batch in one transaction, run by run: the common case in a few statements
        (``fast``, see ``bulk``), else each item the general way."""
        answers: Answers = [None] * len(items)
        with transaction(self.engine, self.hub) as tx:
            for run_id, indexes in _by_run(items).items():
                batch = [items[i] for i in indexes]
                done = fast(tx, run_id, batch)
                if done is None:
                    try:
                        run = tx.run(run_id)
                    except NotFound as exc:
                        done = [exc] * len(batch)
                    else:
                        nodes = _nodes_named(tx, run_id, [item.node_instance for item in batch])
                        done = [general(tx, run, nodes.get(i.node_instance), i) for i in batch]
                for index, answer in zip(indexes, done, strict=True):
                    answers[index] = answer
        return answers

    def lost(self, run_id: str, node_instance: str, reason: str) -> None:
        """A node instance's machine is gone or stopped: it can no longer take part."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            node = self.node_in(tx, run_id, node_instance)
            if node.lost or RunState(run.state) in FINAL:
                return
            node.lost, node.token_hash = True, ""  # should its agent live on, it no longer counts
            tx.event(run_id, events.lost(node_instance, reason))
            self.abort_in(tx, run, f"{node_instance}: {reason}", node_instance=node_instance)
            self.recount(tx, run)

    def give_up_waiting(self, run_id: str) -> None:
        """The bounded wait of a barrier is over: nodes that did not complete are left behind."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            state = RunState(run.state)
            if state not in BARRIERS:
                return
            for node in tx.session.scalars(select(NodeInstanceRecord).where(*waiting_for(run))):
                node.lost = True
                tx.event(run_id, events.lost(node.name, f"did not complete {state.value} in time"))
            self.recount(tx, run)

    def begin_round(self, run_id: str) -> None:
        """A removal's machines are gone: the remaining instances now run on-vm-remove."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state == RunState.READY and run.scaling is not None:
                self.move(tx, run, RunState.PROVISIONING)

    def teardown_failed(
        self,
        run_id: str,
        reason: str,
        *,
        attempts: int,
        backoff: float,
        unreachable: bool = False,
    ) -> float | None:
        """A teardown attempt failed: recorded, then retried after a pause that doubles from
        ``backoff`` seconds, ``attempts`` times at most. Returns the pause, None when it gave
        up (the run stays in Finalizing with the reason, until terminated again). A cloud that
        did not answer (``unreachable``) may come back: that teardown never gives up, its
        pause doubling to ``UNREACHABLE_RETRY`` at most, so it ends once the cloud answers."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state != RunState.FINALIZING:
                return None
            run.teardown_attempts += 1
            # A silent cloud's teardown goes on for as long as it is silent: its event is
            # written when the reason changes and at attempts 1, 2, 4, 8, ... (a bounded
            # number a day), the record keeps the count and the last reason.
            told = (
                not unreachable
                or reason != run.teardown_error
                or run.teardown_attempts & (run.teardown_attempts - 1) == 0
            )
            run.teardown_error = reason
            pause = backoff * 2 ** min(run.teardown_attempts - 1, 16)
            if unreachable:
                pause = min(pause, UNREACHABLE_RETRY)
            retry_in = pause if unreachable or run.teardown_attempts < attempts else None
            run.retry_at = utcnow() + timedelta(seconds=pause) if retry_in is not None else None
            if told:
                tx.event(run_id, events.teardown_failed(run.teardown_attempts, reason, retry_in))
            return retry_in

    def finish(self, run_id: str, *, destroyed: int, kept: bool = False) -> None:
        """Finalizing is over (the instances are gone, or kept): the run ends."""
        with transaction(self.engine, self.hub) as tx:
            run = tx.run(run_id)
            if run.state == RunState.FINALIZING:
                tx.event(run_id, events.torn_down(destroyed, kept=kept))
                self._end(tx, run)

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
            self.values.put(tx, run, f"{node_instance}:abort", reason)
        if run.abort_reason is not None or state in FINAL:
            return False
        run.abort_reason = reason
        run.timed_out = timed_out
        self.values.put(tx, run, "ss:abort", reason)
        tx.event(run.id, events.aborted(reason, node_instance))
        tx.announce(abort_topic(run.id), {"reason": reason})
        target = on_abort(state)
        if target is not state:
            self.move(tx, run, target)
        else:
            self.recount(tx, run)  # nodes without a machine no longer take part
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
        tx.event(run.id, events.state_changed(previous, target.value))
        tx.announce(param_topic(run.id, "ss:state"), {"value": target.value})
        if target is RunState.FINALIZING:
            run.teardown_attempts, run.retry_at, run.teardown_error = 0, None, None
            run_id = run.id
            tx.later(lambda: self.work.ask(run_id, Work.TEARDOWN))
        if target in BARRIERS:
            self.recount(tx, run)

    def recount(self, tx: Tx, run: RunRecord) -> None:
        """Count again who the barrier waits for, and move on if nobody."""
        tx.session.flush()
        run.waiting = tx.session.scalar(select(func.count()).where(*waiting_for(run))) or 0
        self._check_barrier(tx, run)

    def check_barrier(self, run_id: str) -> None:
        with transaction(self.engine, self.hub) as tx:
            self.recount(tx, tx.run(run_id))

    def _check_barrier(self, tx: Tx, run: RunRecord) -> None:
        state = RunState(run.state)
        if state not in BARRIERS or run.waiting > 0:
            return
        tx.session.flush()
        # The count is a hint kept by decrements; before moving on, the store confirms it.
        run.waiting = tx.session.scalar(select(func.count()).where(*waiting_for(run))) or 0
        if run.waiting:
            return
        aborted = run.abort_reason is not None
        keep = keeps(KeepRunning(run.keep_running), aborted=aborted, mutable=run.mutable)
        target = after_barrier(state, aborted=aborted, keep=keep)
        if target is not state:
            self.move(tx, run, target)

    def _end(self, tx: Tx, run: RunRecord) -> None:
        self.move(
            tx, run, final_state(aborted=run.abort_reason is not None, cancelled=run.cancelled)
        )

    @staticmethod
    def node_in(tx: Tx, run_id: str, node_instance: str) -> NodeInstanceRecord:
        node = tx.session.get(NodeInstanceRecord, (run_id, node_instance))
        if node is None:
            raise NotFound(f"no node instance {node_instance!r} in run {run_id}")
        return node

    def renumber(self, tx: Tx, run: RunRecord, node: str) -> None:
        """``<node>:ids`` and ``<node>:multiplicity`` after instances were added or removed."""
        tx.session.flush()
        ids = tx.session.scalars(
            select(NodeInstanceRecord.idx)
            .where(NodeInstanceRecord.run_id == run.id, NodeInstanceRecord.node == node)
            .where(NodeInstanceRecord.removed.is_(False))
            .order_by(NodeInstanceRecord.idx)
        ).all()
        self.values.put(tx, run, f"{node}:ids", ",".join(str(i) for i in ids))
        self.values.put(tx, run, f"{node}:multiplicity", str(len(ids)))


class _ForRun(Protocol):
    @property
    def run_id(self) -> str: ...

    @property
    def node_instance(self) -> str: ...


_Item = TypeVar("_Item", Completion, Provisioned)
Answers = list[StratusError | None]


def _by_run(items: Sequence[_ForRun]) -> dict[str, list[int]]:
    """The items' positions, by run, in the order they came."""
    found: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        found.setdefault(item.run_id, []).append(index)
    return found


def _nodes_named(tx: Tx, run_id: str, names: list[str]) -> dict[str, NodeInstanceRecord]:
    return {
        node.name: node
        for node in tx.session.scalars(
            select(NodeInstanceRecord).where(
                NodeInstanceRecord.run_id == run_id, NodeInstanceRecord.name.in_(names)
            )
        )
    }


def waiting_for(run: RunRecord) -> tuple[ColumnElement[bool], ...]:
    """The node instances a barrier of ``run`` still waits for (see the module docstring)."""
    conditions = [
        NodeInstanceRecord.run_id == run.id,
        NodeInstanceRecord.removed.is_(False),
        NodeInstanceRecord.lost.is_(False),
        (NodeInstanceRecord.completed.is_(None))
        | (NodeInstanceRecord.completed != run.state)
        | (NodeInstanceRecord.provisioning != READY),
    ]
    if run.abort_reason is not None:
        conditions.append(NodeInstanceRecord.provisioning.in_(HAS_MACHINE))
    return tuple(conditions)


def _waited_for(run: RunRecord, node: NodeInstanceRecord) -> bool:
    """The same as :func:`waiting_for`, for one node instance already in memory."""
    if node.removed or node.lost:
        return False
    if run.abort_reason is not None and node.provisioning not in HAS_MACHINE:
        return False
    return node.completed != run.state or node.provisioning != READY
