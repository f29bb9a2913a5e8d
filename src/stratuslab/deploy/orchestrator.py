"""The orchestrator: provisions a run's instances, tears them down, and watches over runs.

It works in the server process. Provisioning asks the cloud layer for instances (never a
connector directly), each recorded before it is created and tagged with its run and node
instance, with the bootstrap as user-data. Teardown destroys every instance recorded for the
run, then sweeps the backend for anything carrying the run's tag, so that nothing outlives its
run. The supervisor enforces run timeouts and bounded barriers, notices node instances whose
machine died, and picks up the work of a server that was killed: runs left Initializing or half
provisioned are provisioned, runs left Finalizing are torn down.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from stratuslab.cloud.instances import InstanceService, RunRequest
from stratuslab.cloud.types import InstanceState
from stratuslab.db.models import NodeInstanceRecord, RunRecord, utcnow
from stratuslab.db.session import session_scope
from stratuslab.deploy import bootstrap
from stratuslab.deploy.control import RunControl
from stratuslab.deploy.plan import Plan
from stratuslab.deploy.runs import RunService
from stratuslab.deploy.states import ACTIVE, FINAL, RunState
from stratuslab.errors import NotFound, StratusError

log = logging.getLogger(__name__)
CLAIM = timedelta(seconds=60)  # how long a claim on a run's work lasts unless renewed
LIVENESS_EVERY = 2.0  # seconds between checks that node instances' machines still run


@dataclass(frozen=True)
class OrchestratorConfig:
    agent_url: str  # where nodes reach the server
    name_prefix: str = "inst"
    parallel: int = 16  # instances created at once per run


class Orchestrator:
    def __init__(
        self,
        engine: Engine,
        *,
        runs: RunService,
        control: RunControl,
        instances_for: Callable[[str], InstanceService],
        submit: Callable[..., object],
        config: OrchestratorConfig,
    ) -> None:
        self.engine = engine
        self.runs = runs
        self.control = control
        self.instances_for = instances_for
        self.submit = submit
        self.config = config
        self.me = f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns()}"
        self._in_flight: set[str] = set()  # runs with a job under way in this process
        self._lock = threading.Lock()
        self._last_liveness = 0.0

    # -- scheduling -----------------------------------------------------------------------

    def schedule(self, run_id: str, work: str) -> None:
        """Start ``work`` ("provision", "shrink" or "teardown") for a run, unless a job of that
        run is under way here: one job per run at a time, so that a teardown never runs beside
        the provisioning still creating instances it would miss. Work refused meanwhile is not
        lost: each supervision round asks again for whatever a run still needs."""
        with self._lock:
            if run_id in self._in_flight:
                return
            self._in_flight.add(run_id)
        job = {"provision": self._provision, "shrink": self._shrink, "teardown": self._teardown}[
            work
        ]
        self.submit(self._guarded, run_id, work, job)

    def _guarded(self, run_id: str, work: str, job: Callable[[str], None]) -> None:
        try:
            with self._claimed(run_id) as claimed:
                if claimed:
                    job(run_id)
        except Exception:
            log.exception("%s of run %s failed", work, run_id)
        finally:
            with self._lock:
                self._in_flight.discard(run_id)

    # -- provisioning ---------------------------------------------------------------------

    def _provision(self, run_id: str) -> None:
        if not self.control.start_provisioning(run_id):
            return
        plan = self.runs.plan(run_id)
        service = self.instances_for(self.runs.owner(run_id))
        pending = self._nodes(run_id, provisioning=("pending", "creating"))
        if not pending:
            return
        with ThreadPoolExecutor(max_workers=min(self.config.parallel, len(pending))) as pool:
            list(pool.map(lambda node: self._provision_one(run_id, plan, service, node), pending))

    def _provision_one(
        self, run_id: str, plan: Plan, service: InstanceService, node: NodeInstanceRecord
    ) -> None:
        if (
            node.provisioning == "creating"
            and node.instance_id
            and self._recovered(run_id, service, node)
        ):
            return
        if self.runs.summary(run_id)["state"] != RunState.PROVISIONING:
            return  # aborted or terminated meanwhile: start nothing more
        spec = plan.nodes[node.node]
        token = self.runs.issue_token(run_id, node.name)
        request = RunRequest(
            image=spec.image,
            name=f"{self.config.name_prefix}-{run_id[:8]}-{node.node.replace('_', '-')}-{node.idx}",
            cloud=spec.cloud,
            user_data=bootstrap.user_data(
                server=self.config.agent_url, run_id=run_id, node_instance=node.name, token=token
            ),
            run_id=run_id,
            node_instance=node.name,
        )
        try:
            prepared = service.prepare(request)
            self.control.creating(run_id, node.name, prepared.views[0].id)
            (view,) = service.provision(prepared)
        except StratusError as exc:
            self.control.provisioning_failed(run_id, node.name, str(exc))
            return
        if view.state == InstanceState.RUNNING and view.address:
            self.control.provisioned(run_id, node.name, instance_id=view.id, address=view.address)
        else:
            self.control.provisioning_failed(
                run_id, node.name, view.error or f"instance is {view.state}"
            )

    def _recovered(self, run_id: str, service: InstanceService, node: NodeInstanceRecord) -> bool:
        """After a crash mid-creation: adopt the instance if it came up, else start over."""
        try:
            view = service.get(node.instance_id or "")
        except NotFound:
            return False
        if view.state == InstanceState.RUNNING and view.address:
            self.control.provisioned(run_id, node.name, instance_id=view.id, address=view.address)
            return True
        if view.state != InstanceState.GONE:
            service.kill(view.id)
        return False

    # -- teardown -------------------------------------------------------------------------

    def _shrink(self, run_id: str) -> None:
        """Destroy the machines of node instances removed from a scalable run."""
        service = self.instances_for(self.runs.owner(run_id))
        with session_scope(self.engine) as session:
            removed = session.scalars(
                select(NodeInstanceRecord.instance_id).where(
                    NodeInstanceRecord.run_id == run_id,
                    NodeInstanceRecord.removed.is_(True),
                    NodeInstanceRecord.instance_id.is_not(None),
                )
            ).all()
        for instance_id in removed:
            if instance_id and service.get(instance_id).state != InstanceState.GONE:
                service.kill(instance_id)
        self.control.begin_round(run_id)

    def _teardown(self, run_id: str) -> None:
        run = self.runs.summary(run_id)
        if run["state"] != RunState.FINALIZING:
            return
        service = self.instances_for(run["owner"])
        live = [v for v in service.for_run(run_id) if v.state != InstanceState.GONE]
        if live:
            with ThreadPoolExecutor(max_workers=min(self.config.parallel, len(live))) as pool:
                list(pool.map(lambda view: service.kill(view.id), live))
        for cloud in {spec.cloud for spec in self.runs.plan(run_id).nodes.values()}:
            connector = service.connector(cloud)
            for leftover in connector.list_instances(tags={"run": run_id}):
                log.warning("run %s: destroying %s, found by its tag", run_id, leftover.name)
                connector.destroy(leftover.name)
            service.reconcile(cloud)
        self.control.finish(run_id)

    # -- supervision ----------------------------------------------------------------------

    def supervise(self) -> None:
        """One round: timeouts, bounded barriers, dead machines, work left by a dead server."""
        now = utcnow()
        with session_scope(self.engine) as session:
            runs = session.scalars(
                select(RunRecord).where(RunRecord.state.not_in([s.value for s in FINAL]))
            ).all()
            due = [
                (r.id, RunState(r.state), r.deadline, r.state_deadline, r.abort_reason, r.timeout_s)
                for r in runs
            ]
            shrinking = {  # a removal whose machines a previous server did not destroy
                r.id
                for r in runs
                if r.state == RunState.READY and (r.scaling or {}).get("action") == "vm_remove"
            }
        check_liveness = time.monotonic() - self._last_liveness > LIVENESS_EVERY
        if check_liveness:
            self._last_liveness = time.monotonic()
        for run_id, state, deadline, state_deadline, aborted, timeout_s in due:
            try:
                if state is RunState.INITIALIZING or (
                    state is RunState.PROVISIONING and self._nodes(run_id, ("pending", "creating"))
                ):
                    self.schedule(run_id, "provision")
                elif state is RunState.FINALIZING:
                    self.schedule(run_id, "teardown")
                elif run_id in shrinking:
                    self.schedule(run_id, "shrink")
                if deadline is not None and now > deadline and state in ACTIVE and aborted is None:
                    self.control.abort(
                        run_id,
                        f"the run timed out after {timeout_s} s in {state.value}",
                        timed_out=True,
                    )
                elif state_deadline is not None and now > state_deadline:
                    self.control.give_up_waiting(run_id)
                if check_liveness and state in ACTIVE:
                    self._check_liveness(run_id)
            except StratusError as exc:
                log.warning("supervising run %s: %s", run_id, exc)

    def _check_liveness(self, run_id: str) -> None:
        ready = self._nodes(run_id, provisioning=("ready",))
        if not ready:
            return
        service = self.instances_for(self.runs.owner(run_id))
        alive = {
            i.tags.get("node-instance"): i
            for cloud in {v.cloud for v in service.for_run(run_id)}
            for i in service.connector(cloud).list_instances(tags={"run": run_id})
        }
        for node in ready:
            if node.lost:
                continue
            instance = alive.get(node.name)
            if instance is None:
                self.control.lost(
                    run_id, node.name, f"its machine {node.instance_id} is gone (deleted or killed)"
                )
            elif instance.state != InstanceState.RUNNING:
                self.control.lost(
                    run_id, node.name, f"its machine {node.instance_id} is {instance.state.value}"
                )

    def _nodes(self, run_id: str, provisioning: tuple[str, ...]) -> list[NodeInstanceRecord]:
        with session_scope(self.engine) as session:
            return list(
                session.scalars(
                    select(NodeInstanceRecord).where(
                        NodeInstanceRecord.run_id == run_id,
                        NodeInstanceRecord.removed.is_(False),
                        NodeInstanceRecord.provisioning.in_(provisioning),
                    )
                )
            )

    # -- claims: one server works on a run at a time --------------------------------------

    @contextmanager
    def _claimed(self, run_id: str) -> Iterator[bool]:
        if not self._claim(run_id):
            yield False
            return
        stop = threading.Event()
        renew = threading.Thread(target=self._renew, args=(run_id, stop), daemon=True)
        renew.start()
        try:
            yield True
        finally:
            stop.set()
            with session_scope(self.engine) as session:
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                    .values(claimed_by=None, claimed_until=None)
                )

    def _claim(self, run_id: str) -> bool:
        now = utcnow()
        with session_scope(self.engine) as session:
            run = session.get(RunRecord, run_id, with_for_update=True)
            if run is None:
                return False
            free = (
                run.claimed_by in (None, self.me)
                or run.claimed_until is None
                or run.claimed_until < now
            )
            if not free and not _alive(run.claimed_by or ""):
                free = True  # its server died: no need to wait for the claim to lapse
            if free:
                run.claimed_by, run.claimed_until = self.me, now + CLAIM
            return free

    def _renew(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(CLAIM.total_seconds() / 3):
            with session_scope(self.engine) as session:
                session.execute(
                    update(RunRecord)
                    .where(RunRecord.id == run_id, RunRecord.claimed_by == self.me)
                    .values(claimed_until=utcnow() + CLAIM)
                )


def _alive(claimant: str) -> bool:
    """Whether the server that made a claim (host:pid:start) still runs. Unknown hosts count as
    alive: only a claim's expiry frees their work."""
    host, _, rest = claimant.partition(":")
    if host != socket.gethostname():
        return True
    pid = rest.partition(":")[0]
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()  # our pid in another's claim: a previous process, now gone
